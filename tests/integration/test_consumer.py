"""Reliable, typed consumption on the real broker and database: each record decoded once at
the edge, commit after the effect, bounded retries, dead letters with the original bytes,
and idempotent redelivery."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from shared.consumer import Delivered
from shared.dead_letters import DEAD_LETTERS, DeadLetterNotice
from shared.events import PLATFORM_EVENTS, CaseClosed, CaseOutcome, envelope
from shared.mongo import Session
from shared.runtime import Runtime, build_runtime
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic
from tests.conftest import Infra, Namespace
from tests.support import eventually, produce, read_topic

pytestmark = pytest.mark.infra

EVENT_TYPE = CaseClosed.event_type
Closures = Sequence[Delivered[CaseClosed]]


def closed_event(case_id: str, *, event_id: str | None = None) -> bytes:
    data = CaseClosed(
        case_id=case_id,
        family_id="fam-1",
        district="eastmere",
        team_id=None,
        worker_id=None,
        outcome=CaseOutcome.DISENGAGED,
        closed_at=datetime(2026, 11, 5, tzinfo=UTC),
    )
    return envelope(
        data,
        event_id=event_id or str(uuid.uuid4()),
        source="/earlyhelp/tests",
        time=datetime(2026, 11, 5, tzinfo=UTC),
        correlation_id="corr",
    ).to_bytes()


class RuntimeFactory(Protocol):
    def __call__(self, wire: Callable[[Runtime], None], **overrides: Any) -> Awaitable[Runtime]: ...


@pytest.fixture
async def start_runtime(infra: Infra, namespace: Namespace) -> AsyncIterator[RuntimeFactory]:
    """Starts a service runtime wired by the test; stops all of them afterwards."""
    started: list[Runtime] = []

    async def start(wire: Callable[[Runtime], None], **overrides: Any) -> Runtime:
        settings = namespace.settings(
            ServiceSettings, infra, service_name="consumer-tests", **overrides
        )
        runtime = build_runtime(settings)
        wire(runtime)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


async def test_undecodable_message_is_dead_lettered_with_its_bytes_and_the_partition_moves_on(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    handled: list[str] = []

    async def on_case_closed(batch: Closures) -> int:
        handled.extend(item.event.case_id for item in batch)
        return len(batch)

    runtime = await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed))
    topic = namespace.topic(EVENT_TYPE)
    garbage = b"\xff{not an event"
    await produce(infra.kafka_bootstrap_servers, topic, [garbage, closed_event("case-9")], key=b"k")

    await eventually(lambda: _value(handled), lambda seen: seen == ["case-9"])
    [record] = await read_topic(infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=1)
    notice = DeadLetterNotice.model_validate_json(record.value)
    assert (notice.error_type, notice.error_code, notice.attempts) == (
        "UndecodableEvent",
        "unreadable",
        1,
    )
    assert (notice.size, notice.sha256) == (len(garbage), hashlib.sha256(garbage).hexdigest())
    assert garbage not in record.value
    assert record.key == b"k"
    assert await runtime.db[DEAD_LETTERS].count_documents({}) == 1
    [listed], _ = await runtime.dead_letters.recent(10)
    assert (listed["dead_letter_id"], listed["topic"]) == (notice.dead_letter_id, topic)
    stored = await runtime.db[DEAD_LETTERS].find_one({})
    assert stored is not None
    assert garbage not in bytes(stored["sealed"])
    _, original = await runtime.dead_letters.original(notice.dead_letter_id)
    assert (original.value, original.key) == (garbage, b"k")
    assert original.error.startswith("UndecodableEvent: not UTF-8")


async def test_an_oversized_poison_message_is_dead_lettered_without_stalling_the_relay(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    handled: list[str] = []

    async def on_case_closed(batch: Closures) -> int:
        handled.extend(item.event.case_id for item in batch)
        return len(batch)

    runtime = await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed))
    topic = namespace.topic(EVENT_TYPE)
    huge = b"\xff" * 900_000
    await produce(infra.kafka_bootstrap_servers, topic, [huge, closed_event("case-next")], key=b"k")

    await eventually(lambda: _value(handled), lambda seen: seen == ["case-next"])
    [record] = await read_topic(infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=1)
    notice = DeadLetterNotice.model_validate_json(record.value)
    assert notice.size == 900_000
    assert len(record.value) < 2_000
    assert await runtime.relay.pending_count() == 0
    _, original = await runtime.dead_letters.original(notice.dead_letter_id)
    assert original.value == huge, "kept whole, so a replay publishes it exactly"


async def test_a_failing_handler_is_retried_then_dead_lettered_and_the_next_message_processed(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    attempts: dict[str, int] = {}

    async def on_case_closed(batch: Closures) -> int:
        for item in batch:
            case_id = item.event.case_id
            attempts[case_id] = attempts.get(case_id, 0) + 1
            if case_id == "case-poison":
                raise RuntimeError("allocation rules exploded")
        return len(batch)

    runtime = await start_runtime(
        lambda r: r.subscribe(CaseClosed, on_case_closed),
        consumer_max_attempts=3,
        consumer_batch_size=1,
    )
    topic = namespace.topic(EVENT_TYPE)
    await produce(
        infra.kafka_bootstrap_servers,
        topic,
        [closed_event("case-poison"), closed_event("case-after")],
        key=b"fam-1",
    )

    await eventually(lambda: _value(dict(attempts)), lambda seen: "case-after" in seen)
    assert attempts == {"case-poison": 3, "case-after": 1}
    [record] = await read_topic(infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=1)
    notice = DeadLetterNotice.model_validate_json(record.value)
    assert (notice.attempts, notice.error_code) == (3, "handler_failed")
    assert (notice.event_type, notice.family_id) == ("case-closed", "fam-1")
    _, original = await runtime.dead_letters.original(notice.dead_letter_id)
    assert original.error == "RuntimeError: allocation rules exploded"
    assert PLATFORM_EVENTS.decode(original.value, CaseClosed)[1].case_id == "case-poison"


async def test_offsets_are_committed_only_after_the_effect_is_stored(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    """While even dead-lettering fails (the database is down), the message is not
    committed: it is delivered again, and processed once the outage ends."""
    outage = True
    deliveries: list[str] = []
    effects: list[str] = []

    async def on_case_closed(batch: Closures) -> int:
        for item in batch:
            case_id = item.event.case_id
            deliveries.append(case_id)
            if outage and case_id == "case-b":
                raise ConnectionError("database unavailable")
            effects.append(case_id)
        return len(batch)

    def wire(runtime: Runtime) -> None:
        runtime.subscribe(CaseClosed, on_case_closed)
        record = runtime.dead_letters.record

        async def record_unless_outage(*args: Any, **kwargs: Any) -> str:
            if outage:
                raise ConnectionError("database unavailable")
            return await record(*args, **kwargs)

        runtime.dead_letters.record = record_unless_outage  # type: ignore[method-assign]

    runtime = await start_runtime(wire, consumer_max_attempts=2, consumer_batch_size=1)
    topic = namespace.topic(EVENT_TYPE)
    await produce(
        infra.kafka_bootstrap_servers,
        topic,
        [closed_event("case-a"), closed_event("case-b")],
        key=b"fam-1",
    )
    # Two attempts, then a failed dead-letter, then redelivery: more than two tries of b.
    await eventually(lambda: _value(deliveries.count("case-b")), lambda tries: tries > 2)
    assert effects == ["case-a"]
    outage = False
    await eventually(lambda: _value(list(effects)), lambda seen: seen == ["case-a", "case-b"])
    await runtime.stop()

    later: list[str] = []

    async def on_case_closed_later(batch: Closures) -> int:
        later.extend(item.event.case_id for item in batch)
        return len(batch)

    await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed_later))
    await produce(infra.kafka_bootstrap_servers, topic, [closed_event("case-c")], key=b"fam-1")
    await eventually(lambda: _value(list(later)), lambda seen: "case-c" in seen)
    assert later == ["case-c"], "the same group resumed before its committed offset"


async def test_a_redelivered_event_changes_nothing(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    async def on_case_closed(batch: Closures) -> int:
        async def count(session: Session, fresh: list[int]) -> None:
            for index in fresh:
                await runtime.db["closures"].update_one(
                    {"_id": batch[index].event.case_id},
                    {"$inc": {"seen": 1}},
                    upsert=True,
                    session=session,
                )

        return await runtime.processed.process_many([item.envelope for item in batch], count)

    runtime = await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed))
    same = closed_event("case-once", event_id="evt-1")
    await produce(
        infra.kafka_bootstrap_servers,
        namespace.topic(EVENT_TYPE),
        [same, same, closed_event("case-marker")],
        key=b"fam-1",
    )
    closures = runtime.db["closures"]
    await eventually(
        lambda: closures.count_documents({"_id": "case-marker"}), lambda found: found == 1
    )
    assert await closures.find_one({"_id": "case-once"}) == {"_id": "case-once", "seen": 1}


async def test_a_poll_is_handled_as_one_batch_and_a_poison_message_in_it_loses_nothing(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    """Records already waiting arrive in one poll and go to the handler together; one it
    fails on fails the batch, which is then handled one record at a time through the same
    handler: the good ones take effect once, the bad one is dead-lettered."""
    batches: list[list[str]] = []
    effects: list[str] = []

    async def on_case_closed(batch: Closures) -> int:
        cases = [item.event.case_id for item in batch]
        batches.append(cases)
        if "case-poison" in cases:
            raise RuntimeError("no rule for this closure")  # all or nothing
        effects.extend(cases)
        return len(cases)

    topic = namespace.topic(EVENT_TYPE)
    good = [closed_event(f"case-{number}") for number in range(1, 6)]
    await produce(infra.kafka_bootstrap_servers, topic, good, key=b"fam-1")
    runtime = await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed))
    await eventually(lambda: _value(len(effects)), lambda seen: seen >= 5)
    assert effects == [f"case-{number}" for number in range(1, 6)]
    assert max(len(batch) for batch in batches) > 1, "the waiting records were not one batch"
    consumed = runtime.metrics.messages_consumed.labels(topic, "processed")
    assert consumed._value.get() == 5

    await runtime.stop()
    effects.clear()
    batches.clear()
    poisoned = [closed_event("case-6"), closed_event("case-poison"), closed_event("case-7")]
    await produce(infra.kafka_bootstrap_servers, topic, poisoned, key=b"fam-1")
    runtime = await start_runtime(
        lambda r: r.subscribe(CaseClosed, on_case_closed), consumer_max_attempts=2
    )
    await eventually(lambda: _value(list(effects)), lambda seen: "case-7" in seen)
    [record] = await read_topic(infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=1)
    assert effects == ["case-6", "case-7"]
    assert batches == [
        ["case-6", "case-poison", "case-7"],
        ["case-6"],
        ["case-poison"],
        ["case-poison"],
        ["case-7"],
    ]
    notice = DeadLetterNotice.model_validate_json(record.value)
    _, original = await runtime.dead_letters.original(notice.dead_letter_id)
    assert original.error == "RuntimeError: no rule for this closure"


async def test_an_unreadable_record_in_a_poll_is_refused_at_the_edge_and_the_batch_goes_on(
    infra: Infra, namespace: Namespace, start_runtime: RuntimeFactory
) -> None:
    """The handler never sees bytes: the unreadable record goes to the dead letters, and
    the events around it arrive typed, as one batch, and are counted once each."""
    batches: list[list[str]] = []

    async def on_case_closed(batch: Closures) -> int:
        batches.append([item.event.case_id for item in batch])
        return len(batch)

    topic = namespace.topic(EVENT_TYPE)
    records = [closed_event("case-8"), b'{"specversion": "1.0"}', closed_event("case-9")]
    await produce(infra.kafka_bootstrap_servers, topic, records, key=b"fam-1")
    runtime = await start_runtime(lambda r: r.subscribe(CaseClosed, on_case_closed))
    [record] = await read_topic(infra.kafka_bootstrap_servers, dead_letter_topic(topic), count=1)
    await eventually(
        lambda: _value([case for batch in batches for case in batch]), lambda seen: len(seen) >= 2
    )
    assert batches == [["case-8", "case-9"]]
    notice = DeadLetterNotice.model_validate_json(record.value)
    assert (notice.offset, notice.error_code) == (1, "not_an_envelope")
    _, original = await runtime.dead_letters.original(notice.dead_letter_id)
    assert "not a CloudEvents 1.0 envelope" in original.error
    counted = runtime.metrics.messages_consumed
    assert counted.labels(topic, "processed")._value.get() == 2
    assert counted.labels(topic, "dead_lettered")._value.get() == 1


async def _value(value: Any) -> Any:
    return value
