"""The outbox on the real database and broker: no event lost between write and publication."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from shared.clock import utc_now
from shared.events import PLATFORM_EVENTS, CaseClosed, CaseOutcome
from shared.kafka import KafkaPublisher, ensure_topics
from shared.mongo import Database, MongoClient, Session, create_mongo_client, in_transaction
from shared.outbox import OUTBOX, Outbox, OutboxRelay
from tests.conftest import Infra, Namespace
from tests.support import read_topic

pytestmark = pytest.mark.infra

CLOSED_AT = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def closure(case_number: int, family_id: str = "fam-1") -> CaseClosed:
    return CaseClosed(
        case_id=f"case-{case_number}",
        family_id=family_id,
        district="northvale",
        team_id="northvale-locality",
        worker_id=None,
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=CLOSED_AT,
    )


@pytest.fixture
async def mongo(infra: Infra) -> AsyncIterator[MongoClient]:
    client = create_mongo_client(infra.mongodb_uri, app_name="tests")
    yield client
    await client.close()


@pytest.fixture
async def publisher(infra: Infra) -> AsyncIterator[KafkaPublisher]:
    publisher = KafkaPublisher(infra.kafka_bootstrap_servers, client_id="tests")
    await publisher.start()
    yield publisher
    await publisher.stop()


def outbox_for(db: Database, namespace: Namespace) -> Outbox:
    return Outbox(db, source="/earlyhelp/tests", topic_namespace=namespace.topics, clock=utc_now)


def relay_for(db: Database, publisher: KafkaPublisher, outbox: Outbox) -> OutboxRelay:
    return OutboxRelay(db, publisher, wake_up=outbox.staged, clock=utc_now)


async def test_staged_events_are_published_in_order_keyed_by_family_and_marked_sent(
    infra: Infra, namespace: Namespace, mongo: MongoClient, publisher: KafkaPublisher
) -> None:
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)
    await outbox.ensure_indexes()
    topic = namespace.topic("case-closed")
    await ensure_topics(infra.kafka_bootstrap_servers, [topic], partitions=4)

    async def close_five(session: Session) -> None:
        for number in range(5):
            await db["cases"].insert_one({"_id": f"case-{number}"}, session=session)
            await outbox.stage_event(closure(number), session=session, correlation_id="corr-1")

    await in_transaction(mongo, close_five)
    relay = relay_for(db, publisher, outbox)
    assert await relay.relay_pending() == 5

    records = await read_topic(infra.kafka_bootstrap_servers, topic, count=5)
    assert {record.key for record in records} == {b"fam-1"}
    assert len({record.partition for record in records}) == 1
    decoded = [PLATFORM_EVENTS.decode(record.value, CaseClosed)[1] for record in records]
    assert [event.case_id for event in decoded] == [f"case-{number}" for number in range(5)]
    assert await relay.pending_count() == 0
    assert await db[OUTBOX].count_documents({"sent_at": {"$ne": None}}) == 5


async def test_a_failed_transaction_stages_nothing_and_writes_nothing(
    namespace: Namespace, mongo: MongoClient
) -> None:
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)

    async def fail_after_writing(session: Session) -> None:
        await db["cases"].insert_one({"_id": "case-1"}, session=session)
        await outbox.stage_event(closure(1), session=session, correlation_id="corr-1")
        raise RuntimeError("the rule refused half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await in_transaction(mongo, fail_after_writing)
    assert await db["cases"].count_documents({}) == 0
    assert await db[OUTBOX].count_documents({}) == 0


async def test_events_left_unsent_by_a_crash_are_published_by_the_next_relay(
    infra: Infra, namespace: Namespace, mongo: MongoClient, publisher: KafkaPublisher
) -> None:
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)

    async def stage(session: Session) -> None:
        await outbox.stage_event(closure(7), session=session, correlation_id="corr-7")

    await in_transaction(mongo, stage)  # written, then the process "dies" before relaying
    restarted = relay_for(db, publisher, outbox_for(db, namespace))
    restarted.start()
    try:
        records = await read_topic(
            infra.kafka_bootstrap_servers, namespace.topic("case-closed"), count=1
        )
    finally:
        await restarted.stop()
    assert PLATFORM_EVENTS.decode(records[0].value, CaseClosed)[1].case_id == "case-7"


async def test_staging_the_same_event_id_twice_publishes_it_once(
    namespace: Namespace, mongo: MongoClient
) -> None:
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)
    for _ in range(2):

        async def stage(session: Session) -> None:
            await outbox.stage_event(
                closure(3), session=session, correlation_id="c", event_id="case-3.closed"
            )

        await in_transaction(mongo, stage)
    assert await db[OUTBOX].count_documents({}) == 1


async def test_only_the_replica_holding_the_lease_relays(
    namespace: Namespace, mongo: MongoClient, publisher: KafkaPublisher
) -> None:
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)
    first = relay_for(db, publisher, outbox)
    second = relay_for(db, publisher, outbox)

    async def stage(event: CaseClosed) -> None:
        async def write(session: Session) -> None:
            await outbox.stage_event(event, session=session, correlation_id="c")

        await in_transaction(mongo, write)

    await stage(closure(1))
    assert await first.relay_pending() == 1
    await stage(closure(2))
    assert await second.relay_pending() == 0, "a second replica relayed while the lease was held"
    assert await second.pending_count() == 1
    await first.stop()  # a replica shutting down hands the lease over
    assert await second.relay_pending() == 1


async def test_a_running_relay_publishes_a_commit_that_lands_after_its_wake_up(
    infra: Infra, namespace: Namespace, mongo: MongoClient, publisher: KafkaPublisher
) -> None:
    """Staging wakes the relay inside the transaction, before the commit: its first look
    sees nothing. It must look again soon, not wait for its next poll (a minute here)."""
    db = mongo[f"{namespace.databases}outbox"]
    outbox = outbox_for(db, namespace)
    await outbox.ensure_indexes()
    topic = namespace.topic("case-closed")
    await ensure_topics(infra.kafka_bootstrap_servers, [topic], partitions=4)
    relay = OutboxRelay(db, publisher, wake_up=outbox.staged, clock=utc_now, poll_interval_s=60)
    relay.start()
    try:
        await asyncio.sleep(0.2)  # the relay's first look is over; it waits to be woken

        async def stage_then_commit_late(session: Session) -> None:
            await outbox.stage_event(closure(1), session=session, correlation_id="corr-late")
            await asyncio.sleep(0.03)  # the relay looks now, before the commit

        started = time.monotonic()
        await in_transaction(mongo, stage_then_commit_late)
        [record] = await read_topic(infra.kafka_bootstrap_servers, topic, count=1, timeout_s=10)
        assert PLATFORM_EVENTS.decode(record.value, CaseClosed)[1].case_id == "case-1"
        assert time.monotonic() - started < 5
    finally:
        await relay.stop()
