"""The embedded broker with authentication on (``EARLYHELP_EMBEDDED_KAFKA_AUTH=scram``):
``make run``'s four services each connect as their own SCRAM user, and a partner's user may
publish requests for support and do nothing else.

One platform for the module: a JVM and four services take a while to start.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from shared.auth import Role
from tests.auth import TEST_SECRET, as_role
from tests.e2e.test_run_command import ROOT, alive, descendants, embedded_env, start_platform
from tests.support import partner_submission

pytestmark = pytest.mark.infra

PARTNER = "northvale-primary"
REFERRAL = json.loads((ROOT / "tests" / "fixtures" / "referral.json").read_text())


@dataclass
class SecuredPlatform:
    env: dict[str, str]
    bootstrap: str
    partner_password: str
    output: list[str]

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.env[f'EARLYHELP_{service.upper()}_PORT']}{path}"

    def as_user(self, user: str, password: str) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": password,
        }

    def as_partner(self) -> dict[str, Any]:
        return self.as_user(PARTNER, self.partner_password)


def partner_command(env: dict[str, str], action: str) -> str:
    """``python -m shared.kafka_access partner <action> northvale-primary``, its output."""
    done = subprocess.run(
        [sys.executable, "-m", "shared.kafka_access", "partner", action, PARTNER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPlatform]:
    tmp_path = tmp_path_factory.mktemp("secured")
    env = embedded_env(
        tmp_path, EARLYHELP_EMBEDDED_KAFKA_AUTH="scram", EARLYHELP_AUTH_SECRET=TEST_SECRET
    )
    process = start_platform(env)
    output: list[str] = []

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.decode(errors="replace"))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 150
        while not any("is running" in line for line in output):
            assert process.poll() is None, "".join(output[-40:])
            assert time.monotonic() < deadline, "".join(output[-40:])
            time.sleep(0.5)
        started = descendants(process.pid)
        added = partner_command(env, "add")
        found = re.search(r"password \(shown once\): (\S+)", added)
        assert found is not None, added
        yield SecuredPlatform(
            env, f"127.0.0.1:{env['EARLYHELP_KAFKA_PORT']}", found.group(1), output
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
    assert process.returncode == 0, "".join(output[-40:])
    assert not [pid for pid in started if alive(pid)]


def consumed(metrics: str, topic: str) -> float:
    pattern = rf'earlyhelp_messages_consumed_total\{{outcome="processed",topic="{topic}"\}} (\S+)'
    return sum(float(value) for value in re.findall(pattern, metrics))


async def test_a_partners_request_runs_through_all_four_services_with_authentication_on(
    platform: SecuredPlatform,
) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **platform.as_partner())
    await producer.start()
    try:
        await producer.send_and_wait(
            "referral-submitted",
            partner_submission(REFERRAL, partner_id=PARTNER),
            key=REFERRAL["submission_id"].encode(),
        )
    finally:
        await producer.stop()

    reads = {
        "referral": "referral-submitted",
        "allocation": "referral-received",
        "audit": "case-allocated",
        "reporting": "case-allocated",
    }
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=5) as http:
        waiting = dict(reads)
        while waiting:
            for service, topic in list(waiting.items()):
                metrics = (await http.get(platform.url(service, "/metrics"))).text
                if consumed(metrics, topic) >= 1:
                    del waiting[service]
            assert time.monotonic() < deadline, f"nothing consumed by {sorted(waiting)}"
            await asyncio.sleep(0.5)
        cases = await http.get(
            platform.url("allocation", "/cases"), headers=as_role(Role.PRACTITIONER)
        )
    assert cases.status_code == 200
    [case] = cases.json()
    assert case["district"] == "northvale"
    assert case["allocation"] in {"allocated", "queued"}
    assert not any("TopicAuthorizationFailed" in line for line in platform.output)


async def test_a_partner_cannot_publish_to_case_allocated(platform: SecuredPlatform) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **platform.as_partner())
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait("case-allocated", b"{}"), 30)
    finally:
        await producer.stop()


async def first_poll(consumer: AIOKafkaConsumer) -> None:
    await consumer.start()
    await consumer.getmany(timeout_ms=5000)


async def test_a_partner_cannot_read_referral_received(platform: SecuredPlatform) -> None:
    consumer = AIOKafkaConsumer(
        "referral-received",
        group_id=PARTNER,
        auto_offset_reset="earliest",
        **platform.as_partner(),
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(first_poll(consumer), 30)
    finally:
        await consumer.stop()


async def test_a_service_cannot_publish_another_services_events(
    platform: SecuredPlatform,
) -> None:
    users = Path(platform.env["EARLYHELP_DATA_DIR"]) / "kafka" / "users"
    allocation = platform.as_user("allocation", (users / "allocation").read_text())
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **allocation)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait("referral-received", b"{}"), 30)
    finally:
        await producer.stop()


async def test_a_wrong_password_is_refused(platform: SecuredPlatform) -> None:
    producer = AIOKafkaProducer(**platform.as_user(PARTNER, "not-the-password"))
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


async def test_a_removed_partner_can_no_longer_connect(platform: SecuredPlatform) -> None:
    removed = partner_command(platform.env, "remove")
    assert f"removed {PARTNER}" in removed
    assert f"removed {PARTNER}" in partner_command(platform.env, "remove"), "not idempotent"
    producer = AIOKafkaProducer(**platform.as_partner())
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()
