"""What operators rely on, over the real broker and database: a poison message on every
internal topic is dead-lettered by every service that reads it while the partition moves on;
a dead letter is replayed after a fix; the outboxes are republished after the broker lost its
data, and the repeats change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from services.allocation.app import create_app as allocation_app
from services.allocation.settings import AllocationSettings
from services.audit.app import create_app as audit_app
from services.audit.settings import AuditSettings
from services.referral.app import create_app as referral_app
from services.referral.settings import ReferralSettings
from services.reporting import domain as reporting_domain
from services.reporting.app import create_app as reporting_app
from services.reporting.handlers import PROJECTED
from services.reporting.settings import ReportingSettings
from services.reporting.store import FACTS as REPORTING_FACTS
from shared.consumer import Delivered
from shared.dead_letters import DeadLetterNotice, UnknownDeadLetter
from shared.embedded import embedded_kafka, free_port, kafka_bootstrap
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    FamilyErased,
    LevelOfNeed,
    OfstedGrade,
    ReferralRejected,
    RejectionReason,
    StandardScore,
    TeamCapacityChanged,
)
from shared.idempotency import PROCESSED_EVENTS
from shared.mongo import Session, create_mongo_client, in_transaction
from shared.operations import Operations
from shared.operations import main as operations_command
from shared.runtime import Runtime, build_runtime
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic
from tests.auth import TEST_DEAD_LETTER_KEY
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import eventually, produce, read_topic, service_event

pytestmark = pytest.mark.infra

AT = datetime(2026, 11, 3, 9, tzinfo=UTC)
GOOD_EVENTS: list[EventData] = [
    referral_received(referral_id="ref-ops", family_id="fam-ops"),
    CaseAllocated(
        case_id="case-ops",
        family_id="fam-ops",
        referral_id="ref-ops",
        district="northvale",
        team_id="northvale-north",
        worker_id="w-1",
        status=AllocationStatus.ALLOCATED,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        referral_received_at=AT,
        allocated_at=AT,
    ),
    CaseClosed(
        case_id="case-ops",
        family_id="fam-ops",
        district="northvale",
        team_id="northvale-north",
        worker_id="w-1",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=AT,
    ),
    ReferralRejected(
        rejection_id="rej-ops",
        partner_id="p",
        submission_id="s",
        reasons=[RejectionReason(field="consent", code="no_consent", message="none")],
        received_at=AT,
    ),
    AuditAssigned(
        audit_id="aud-ops",
        case_id="case-ops",
        family_id="fam-ops",
        district="northvale",
        auditor_id="tm-1",
        month="2026-11",
        assigned_at=AT,
        due_by=datetime(2026, 12, 1, tzinfo=UTC),
    ),
    AuditCompleted(
        audit_id="aud-ops",
        case_id="case-ops",
        family_id="fam-ops",
        district="northvale",
        auditor_id="tm-1",
        month="2026-11",
        scores=[StandardScore(standard="plan_quality", grade=OfstedGrade.GOOD)],
        overall_grade=OfstedGrade.GOOD,
        completed_at=AT,
    ),
    TeamCapacityChanged(
        team_id="northvale-north",
        team_name="Northvale North",
        district="northvale",
        workers=1,
        fte=1.0,
        capacity=18,
        changed_at=AT,
    ),
    FamilyErased(family_id="fam-erased", erased_at=AT),
]
GOOD_BY_TYPE = {data.event_type: data for data in GOOD_EVENTS}
PROJECTED_TYPES = {model.event_type for model in PROJECTED}


@pytest.fixture
async def platform(infra: Infra, namespace: Namespace) -> AsyncIterator[dict[str, FastAPI]]:
    """The four services in this process, on one namespace."""
    apps = {
        "referral": referral_app(namespace.settings(ReferralSettings, infra)),
        "allocation": allocation_app(
            namespace.settings(AllocationSettings, infra, sample_data=False)
        ),
        "audit": audit_app(namespace.settings(AuditSettings, infra, sample_data=False)),
        "reporting": reporting_app(namespace.settings(ReportingSettings, infra)),
    }
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield apps


async def test_a_poison_message_on_every_internal_topic_is_dead_lettered_by_every_reader(
    infra: Infra, namespace: Namespace, platform: dict[str, FastAPI]
) -> None:
    readers: dict[str, list[Runtime]] = {}
    for app in platform.values():
        runtime: Runtime = app.state.runtime
        for topic in runtime.subscriptions:
            event_type = topic.removeprefix(namespace.topics)
            if event_type != "referral-submitted":  # the partners' topic has its own tests
                readers.setdefault(event_type, []).append(runtime)
    assert set(readers) == {data.event_type for data in GOOD_EVENTS}
    poison = b'{"specversion": "1.0", "type": "nonsense", \xff'
    # The front door keeps no processed-event records (its case notes are idempotent by
    # nature), so its effect is looked for on a family it knows.
    referral_db = platform["referral"].state.runtime.db
    await referral_db["families"].insert_one({"_id": "fam-ops", "open_cases": []})

    for data in GOOD_EVENTS:
        good = service_event(data, service="tests", event_id=f"good-{data.event_type}")
        # Same key, so the good event waits behind the poison on one partition.
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic(data.event_type),
            [poison, good],
            key=b"same-partition",
        )

    for event_type, runtimes in readers.items():
        topic = namespace.topic(event_type)
        letters = await read_topic(
            infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=len(runtimes)
        )
        notices = [DeadLetterNotice.model_validate_json(letter.value) for letter in letters]
        groups = sorted(notice.service for notice in notices)
        assert groups == sorted(runtime.settings.consumer_group for runtime in runtimes), topic
        for notice in notices:
            assert notice.sha256 == hashlib.sha256(poison).hexdigest()
        for runtime in runtimes:
            [stored] = [
                letter
                for letter in (await runtime.dead_letters.recent(100))[0]
                if letter["topic"] == topic
            ]
            _, original = await runtime.dead_letters.original(stored["dead_letter_id"])
            assert original.value == poison
        for runtime in runtimes:
            if runtime.settings.service_name == "referral" and event_type.startswith("case-"):
                # A closure read first wins over the allocation, so either list will do.
                noted: dict[str, Any] = (
                    {"closed_cases": "case-ops"}
                    if event_type == "case-closed"
                    else {"$or": [{"open_cases": "case-ops"}, {"closed_cases": "case-ops"}]}
                )
                families = runtime.db["families"]
                await eventually(
                    partial(families.count_documents, {"_id": "fam-ops", **noted}),
                    lambda n: n == 1,
                    timeout_s=30,
                )
                continue
            if runtime.settings.service_name == "reporting" and event_type in PROJECTED_TYPES:
                # Reporting keeps no processed-event records either (an event applied again
                # changes no fact): the good event's fact is looked for.
                [(kind, fact_id), *_] = reporting_domain.fact_keys(GOOD_BY_TYPE[event_type])
                facts = runtime.db[REPORTING_FACTS[kind]]
                await eventually(
                    partial(facts.count_documents, {"_id": fact_id}),
                    lambda n: n == 1,
                    timeout_s=30,
                )
                continue
            key = f"{runtime.settings.consumer_group}|/earlyhelp/tests|good-{event_type}"
            processed = runtime.db[PROCESSED_EVENTS]
            await eventually(
                partial(processed.count_documents, {"_id": key}), lambda n: n == 1, timeout_s=30
            )


async def test_a_dead_letter_is_listed_and_replayed_after_the_fix_once(
    infra: Infra,
    namespace: Namespace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = True
    # A stand-in for the allocation service, with a bug the test can fix.
    settings = namespace.settings(
        ServiceSettings, infra, service_name="allocation", consumer_max_attempts=2
    )
    runtime = build_runtime(settings)

    async def on_case_closed(batch: Sequence[Delivered[CaseClosed]]) -> int:
        if broken:
            raise RuntimeError("bug in the closure rules")
        return await count_closures(runtime, batch)

    runtime.subscribe(CaseClosed, on_case_closed)
    await runtime.start()
    mongo = create_mongo_client(infra.mongodb_uri, app_name="operations-tests")
    operations = Operations(settings, mongo)
    try:
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic("case-closed"),
            [service_event(GOOD_EVENTS[2], service="allocation", event_id="closure-1")],
        )
        [letter] = await eventually(
            lambda: operations.dead_letters(["allocation"], 10), bool, timeout_s=30
        )
        assert (letter["error_type"], letter["error_code"]) == ("RuntimeError", "handler_failed")
        assert letter["attempts"] == 2
        closures = runtime.db["closures"]

        async def effects() -> list[tuple[str, int]]:
            return [(doc["_id"], doc["times"]) async for doc in closures.find().sort("_id")]

        assert await effects() == []

        for name, value in {
            "MONGODB_URI": infra.mongodb_uri,
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
            "EARLYHELP_DATABASE_PREFIX": namespace.databases,
            "EARLYHELP_DEAD_LETTER_KEY": TEST_DEAD_LETTER_KEY,
        }.items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(operations_command, ["dead-letters"]) == 0
        listing = capsys.readouterr().out
        assert letter["dead_letter_id"] in listing
        assert "RuntimeError: handler_failed" in listing
        assert "bug in the closure rules" not in listing, "the listing shows no original"

        broken = False  # the fix is deployed
        [replayed] = await operations.replay([letter["dead_letter_id"]], ["allocation"])
        assert replayed.topic == namespace.topic("case-closed")
        await eventually(effects, lambda seen: seen == [("case-ops", 1)])

        await operations.replay([letter["dead_letter_id"]], ["allocation"])
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic("case-closed"),
            [service_event(GOOD_EVENTS[2].model_copy(update={"case_id": "case-2"}), service="x")],
        )
        done = await eventually(effects, lambda seen: ("case-2", 1) in seen)
        assert done == [("case-2", 1), ("case-ops", 1)], "a second replay took effect again"
        [listed] = await operations.dead_letters(["allocation"], 10)
        assert len(listed["replayed_at"]) == 2
        with pytest.raises(UnknownDeadLetter, match="no dead letter 'nope'"):
            await operations.replay(["nope"], ["allocation"])
        assert await operations.purge([letter["dead_letter_id"]], ["allocation"]) == 1
        assert await operations.dead_letters(["allocation"], 10) == []
    finally:
        await runtime.stop()
        await mongo.close()


async def test_after_the_broker_loses_its_data_republishing_the_outbox_catches_consumers_up(
    infra: Infra, namespace: Namespace, tmp_path: Path
) -> None:
    broker = embedded_kafka(free_port(), tmp_path)
    broker.start()
    bootstrap = kafka_bootstrap(broker.port)
    deliveries: list[str] = []
    mongo = create_mongo_client(infra.mongodb_uri, app_name="operations-tests")
    producer_settings = namespace.settings(
        ServiceSettings, infra, service_name="producing", KAFKA_BOOTSTRAP_SERVERS=bootstrap
    )
    consumer_settings = namespace.settings(
        ServiceSettings, infra, service_name="consuming", KAFKA_BOOTSTRAP_SERVERS=bootstrap
    )

    def consumer() -> Runtime:
        runtime = build_runtime(consumer_settings)

        async def on_case_closed(batch: Sequence[Delivered[CaseClosed]]) -> int:
            deliveries.extend(item.event.case_id for item in batch)
            return await count_closures(runtime, batch)

        runtime.subscribe(CaseClosed, on_case_closed)
        return runtime

    async def stage(runtime: Runtime, case_ids: list[str]) -> None:
        async def work(session: Session) -> None:
            for case_id in case_ids:
                closure = GOOD_EVENTS[2].model_copy(update={"case_id": case_id})
                await runtime.outbox.stage_event(
                    closure, session=session, correlation_id="c", event_id=f"closed-{case_id}"
                )

        await in_transaction(runtime.client, work)

    try:
        producing, consuming = (
            build_runtime(producer_settings, produces=["case-closed"]),
            consumer(),
        )
        await producing.start()
        await consuming.start()
        await stage(producing, ["case-1", "case-2", "case-3"])
        closures = mongo[f"{namespace.databases}consuming"]["closures"]

        async def effects() -> list[tuple[str, int]]:
            return [(doc["_id"], doc["times"]) async for doc in closures.find().sort("_id")]

        await eventually(effects, lambda seen: len(seen) == 3, timeout_s=30)
        await consuming.stop()
        await producing.stop()

        broker.stop()
        shutil.rmtree(broker.data_dir)  # a broker rebuilt without its disks
        broker.start()  # the same address, no topics, no offsets
        deliveries.clear()
        counts = await Operations(producer_settings, mongo).republish(["producing"], since=None)
        assert counts == {"producing": 3}

        producing, consuming = (
            build_runtime(producer_settings, produces=["case-closed"]),
            consumer(),
        )
        await producing.start()
        await consuming.start()
        await stage(producing, ["case-4"])
        await eventually(
            lambda: _now(sorted(deliveries)),
            lambda seen: seen == ["case-1", "case-2", "case-3", "case-4"],
            timeout_s=60,
        )
        # Each delivered once more, and each took effect once: the repeats changed nothing.
        done = await eventually(effects, lambda seen: len(seen) == 4, timeout_s=30)
        assert done == [("case-1", 1), ("case-2", 1), ("case-3", 1), ("case-4", 1)]
        await consuming.stop()
        await producing.stop()
    finally:
        broker.stop()
        await mongo.close()


async def _now(value: Any) -> Any:
    return value


async def count_closures(runtime: Runtime, batch: Sequence[Delivered[CaseClosed]]) -> int:
    """Count each closure once in ``closures``, however often it is delivered."""

    async def count(session: Session, fresh: list[int]) -> None:
        for index in fresh:
            await runtime.db["closures"].update_one(
                {"_id": batch[index].event.case_id},
                {"$inc": {"times": 1}},
                upsert=True,
                session=session,
            )

    return await runtime.processed.process_many([item.envelope for item in batch], count)
