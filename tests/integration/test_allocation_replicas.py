"""Two allocation processes in one consumer group hold every cap and the one-family rule.

The burst is the hard case on purpose: referrals are keyed by referral rather than family,
so one family's referrals land on different partitions and reach both replicas at once;
some are delivered twice; capacity is far below demand, so most cases queue; then cases
close on both replicas at the same moment and both drain the same queue.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.allocation.access import POLICY
from shared.embedded import free_port
from shared.events import AllocationKind, AllocationStatus, CaseAllocated, LevelOfNeed
from shared.mongo import Database, create_mongo_client
from tests.auth import TEST_DEAD_LETTER_KEY, TEST_MATCH_KEY_SECRET, TEST_SECRET, AllowedRole
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import TopicReader, eventually, service_event

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
DISTRICT = "burstshire"
CAPS = {"w-a": 3, "w-b": 3, "w-c": 2}
SINGLE_FAMILIES = 20
REPEAT_FAMILIES = 10
REFERRALS_PER_REPEAT_FAMILY = 3
FAMILIES = SINGLE_FAMILIES + REPEAT_FAMILIES


@pytest.fixture
async def replicas(
    infra: Infra, namespace: Namespace, tmp_path: Path
) -> AsyncIterator[list[httpx.AsyncClient]]:
    ports = [free_port(), free_port()]
    processes = [
        _start_replica(infra, namespace, port, tmp_path / f"allocation-{index}.log")
        for index, port in enumerate(ports)
    ]
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=AllowedRole(POLICY))
        for port in ports
    ]
    logs = [tmp_path / f"allocation-{index}.log" for index in range(len(ports))]
    try:
        for client, process, log in zip(clients, processes, logs, strict=True):
            await eventually(partial(_healthy, client, process), bool, timeout_s=60)
            # Only once both hold partitions is the burst shared between them.
            await eventually(partial(_has_partitions, log), bool, timeout_s=60)
        yield clients
        for process in processes:
            assert process.poll() is None, "a replica died during the test"
    finally:
        for client in clients:
            await client.aclose()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def _start_replica(
    infra: Infra, namespace: Namespace, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "MONGODB_URI": infra.mongodb_uri,
        "EARLYHELP_TOPIC_NAMESPACE": namespace.topics,
        "EARLYHELP_DATABASE_PREFIX": namespace.databases,
        "EARLYHELP_ALLOCATION_PORT": str(port),
        "EARLYHELP_SAMPLE_DATA": "false",
        "EARLYHELP_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "EARLYHELP_CONSUMER_RETRY_BACKOFF_S": "0.05",
        "EARLYHELP_AUTH_SECRET": TEST_SECRET,
        "EARLYHELP_DEAD_LETTER_KEY": TEST_DEAD_LETTER_KEY,
        "EARLYHELP_MATCH_KEY_SECRET": TEST_MATCH_KEY_SECRET,
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.allocation"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )


async def _has_partitions(log: Path) -> bool:
    text = await asyncio.to_thread(log.read_text, errors="replace")
    return "assigned to partitions: (TopicPartition" in text


async def _healthy(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"replica exited with {process.returncode}")
    try:
        return (await client.get("/health")).status_code == 200
    except httpx.TransportError:
        return False


async def test_two_replicas_keep_caps_one_case_per_family_and_allocate_each_case_once(
    infra: Infra, namespace: Namespace, replicas: list[httpx.AsyncClient]
) -> None:
    first, second = replicas
    team = {"id": "burst-team", "name": "Burst Team", "district": DISTRICT}
    assert (await first.post("/teams", json=team)).status_code == 201
    for worker_id, cap in CAPS.items():
        joined = await second.post(
            "/teams/burst-team/workers",
            json={"id": worker_id, "name": worker_id, "fte": 1, "caseload_cap": cap},
        )
        assert joined.status_code == 201, joined.text

    referrals = []
    for family in range(FAMILIES):
        repeats = REFERRALS_PER_REPEAT_FAMILY if family < REPEAT_FAMILIES else 1
        for repeat in range(repeats):
            referrals.append(
                referral_received(
                    referral_id=f"ref-{family}-{repeat}",
                    family_id=f"fam-{family}",
                    submission_id=f"sub-{family}-{repeat}",
                    district=DISTRICT,
                    level_of_need=LevelOfNeed(2 + family % 2),
                    received_at=datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=family),
                )
            )
    messages = [
        (referral.referral_id.encode(), service_event(referral, service="referral"))
        for referral in referrals
    ]
    redelivered = messages[::7]
    await _publish(infra, namespace.topic("referral-received"), [*messages, *redelivered])

    reader = TopicReader(
        infra.kafka_bootstrap_servers, namespace.topic("case-allocated"), CaseAllocated
    )
    await reader.start()
    mongo = create_mongo_client(infra.mongodb_uri, app_name="replica-tests")
    db = mongo[f"{namespace.databases}allocation"]
    try:
        events = await eventually(
            reader.events,
            lambda seen: len({event.referral_id for event in seen}) == len(referrals),
            timeout_s=120,
        )
        capacity = sum(CAPS.values())
        await _check_invariants(db, events, allocated=capacity, queued=FAMILIES - capacity)
        assert Counter(event.referral_id for event in events).most_common(1)[0][1] == 1

        # Cases close on both replicas at once; both drain the one queue.
        open_cases = await db["cases"].find({"allocation": "allocated", "status": "open"}).to_list()
        closing = [case["_id"] for case in open_cases[:4]]
        answers = await asyncio.gather(
            *(
                replica.post(f"/cases/{case_id}/close", json={"outcome": "needs_met"})
                for replica, case_id in zip([first, second] * 2, closing, strict=True)
            )
        )
        assert [answer.status_code for answer in answers] == [200] * 4

        events = await eventually(
            reader.events,
            lambda seen: len(seen) == len(referrals) + 4,
            timeout_s=60,
        )
        await _check_invariants(db, events, allocated=capacity, queued=FAMILIES - capacity - 4)
        queue = (await first.get("/queue", params={"district": DISTRICT})).json()
        assert [entry["place"] for entry in queue] == list(range(1, FAMILIES - capacity - 4 + 1))
    finally:
        await reader.stop()
        await mongo.close()


async def _check_invariants(
    db: Database, events: list[CaseAllocated], *, allocated: int, queued: int
) -> None:
    cases = await db["cases"].find({"status": "open"}).to_list()
    districts = await db["districts"].find().to_list()
    loads = {worker_id: load for d in districts for worker_id, load in d["workers"].items()}

    # One family, one open case.
    assert len({case["family_id"] for case in cases}) == len(cases)
    assert Counter(case["allocation"] for case in cases) == {
        "allocated": allocated,
        "queued": queued,
    }
    # No worker above cap, and each worker's count is the truth.
    held = Counter(case["worker_id"] for case in cases if case["allocation"] == "allocated")
    assert set(loads) == set(CAPS)
    for worker_id, load in loads.items():
        assert held[worker_id] == load["open_cases"] <= CAPS[worker_id] == load["cap"]
    # The queue's entries are exactly the queued cases, and each district counts them.
    entries = await db["queue_entries"].find().to_list()
    assert sorted(entry["_id"] for entry in entries) == sorted(
        case["_id"] for case in cases if case["allocation"] == "queued"
    )
    assert sum(d["queued"] for d in districts) == queued
    # No case allocated twice: one "allocated" event per case that has a worker.
    given = Counter(
        event.case_id
        for event in events
        if event.status is AllocationStatus.ALLOCATED
        and event.kind is not AllocationKind.EXISTING_CASE
    )
    assert set(given.values()) <= {1}
    every_case = await db["cases"].find().to_list()
    ever_allocated = {case["_id"] for case in every_case if case.get("allocated_at")}
    assert set(given) == ever_allocated


async def _publish(infra: Infra, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
