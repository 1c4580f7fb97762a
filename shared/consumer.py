"""Reliable, typed consumption: each record decoded once at the edge, handled in batches,
committed after the effect, and what cannot be handled dead-lettered (``shared.dead_letters``).

A service subscribes an event type to a handler (``Subscription``). Each record of a poll is
read once here: strict JSON, the CloudEvents envelope, the event's data as its model,
upcast from older schema versions by the registry the runtime was given. Handlers receive
typed batches (``Delivered``); one record is a batch of one, so every topic has one path.
A record that is not an event of its topic's type (``Refused``) is answered by the
subscription when it says how (the front door answers every submission), and otherwise goes
straight to ``<topic>.dlq``.

Offsets are committed only after the handler's effect is stored (FastStream's
``NACK_ON_ERROR``, never the default ``ACK_FIRST``). A batch that fails for a reason of its
own is handled again one record at a time, so a poison record is dead-lettered alone after
``max_attempts`` tries and the rest go through; the failed batch's transaction left nothing
behind. The dead letter is recorded and staged in the outbox in one transaction, and only
then is the offset committed, so the partition moves on and nothing is lost. If even that
fails (the database is down), the record is not committed and is delivered again. A handler
that fails because the database cannot be reached, or that is still overtaken by another
transaction after its own tries, is retried until it can go through, without using up
its tries: an outage is not the record's fault.

A handler returns how many of its records changed something; the rest count as duplicates.
Every delivery is counted by outcome and timed (``shared.metrics``), and a batch of one is
logged under its correlation id (``shared.logs``). The group membership is watched so that
``/ready`` can say whether this replica has joined its consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage as InjectedMessage
from faststream.kafka.message import KafkaMessage
from pymongo.errors import ConnectionFailure, PyMongoError

from shared.dead_letters import DeadLetters, Failure
from shared.events import EventData, EventRegistry, RawEvent, UndecodableEvent, read_envelope
from shared.logs import correlated
from shared.metrics import DEAD_LETTERED, DUPLICATE, FAILED_ATTEMPT, PROCESSED, Metrics
from shared.strict_json import MAX_RECORD_BYTES
from shared.unit_of_work import ConcurrentUpdate

log = logging.getLogger(__name__)

OUTAGE_BACKOFF_MAX_S = 5.0
"""Longest pause between two tries while the database is unreachable."""

EventT = TypeVar("EventT", bound=EventData)
EventT_co = TypeVar("EventT_co", bound=EventData, covariant=True)


@dataclass(frozen=True)
class Record:
    """A Kafka record as it came: its bytes and where they came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Delivered(Generic[EventT_co]):
    """A record read as its topic's event: the envelope (its identity, correlation id and
    the data as sent) and the event, validated and upcast."""

    record: Record
    envelope: RawEvent
    event: EventT_co


@dataclass(frozen=True)
class Refused:
    """A record that is not an event of its topic's type, and why; ``envelope`` is there
    when the bytes were an envelope but its data could not be read."""

    record: Record
    error: UndecodableEvent
    envelope: RawEvent | None


Handle = Callable[[Sequence[Delivered[EventT]]], Awaitable[int]]
"""Handles a batch of one topic all or nothing; returns how many changed something."""

Answer = Callable[[Sequence[Refused]], Awaitable[int]]
"""Answers records that are not events (a rejection, say); returns how many were new."""


@dataclass(frozen=True)
class Subscription(Generic[EventT]):
    """What a service does with one topic: its event type, its handler and, optionally,
    how it answers records that are not that event (otherwise they are dead-lettered)."""

    topic: str
    model: type[EventT]
    handle: Handle[EventT]
    answer_refused: Answer | None = None
    max_bytes: int = MAX_RECORD_BYTES

    def read(self, record: Record, registry: EventRegistry) -> Delivered[EventT] | Refused:
        return read_record(record, self.model, registry, max_bytes=self.max_bytes)


def read_record(
    record: Record,
    model: type[EventT],
    registry: EventRegistry,
    *,
    max_bytes: int = MAX_RECORD_BYTES,
) -> Delivered[EventT] | Refused:
    """The record decoded, once: strict JSON and the envelope, then the data as ``model``."""
    try:
        raw_event = read_envelope(record.value, max_bytes=max_bytes)
    except UndecodableEvent as error:
        return Refused(record, error, None)
    try:
        return Delivered(record, raw_event, registry.read_data(raw_event, model))
    except UndecodableEvent as error:
        return Refused(record, error, raw_event)


class GroupMembership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether this replica has joined its consumer group, and which partitions it owns.

    Joined stays true through later rebalances: a replica is not unready while the group
    moves partitions, and one with no partition (more replicas than partitions) still
    serves HTTP and takes over when a partition frees.
    """

    def __init__(self) -> None:
        self.joined = False
        self.partitions: frozenset[TopicPartition] = frozenset()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.partitions = frozenset()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions = frozenset(assigned)
        self.joined = True
        log.info("assigned %d partition(s)", len(assigned))


class Consumption:
    """The running consumer of one service replica, as operations endpoints see it."""

    def __init__(
        self,
        subscriber: Any,
        membership: GroupMembership,
        redeliver: Callable[[Record], Awaitable[bool]],
    ) -> None:
        self._subscriber = subscriber
        self.membership = membership
        self.redeliver = redeliver
        """Hand a record to this consumer again, by the same path as a poll's, alone:
        True when it was handled, False when it was dead-lettered again."""

    async def lag(self) -> dict[tuple[str, int], int]:
        """Per owned partition: the broker's high watermark minus our position.

        Partitions not fetched from yet (no high watermark known) are left out.
        """
        consumer = self._subscriber.consumer
        if consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue
            position = await consumer.position(partition)
            lags[(partition.topic, partition.partition)] = max(0, highwater - position)
        return lags


def is_outage(error: BaseException) -> bool:
    """The database could not be reached (down, restarting, failing over), or a transaction
    kept failing transiently: nothing about the message itself."""
    if isinstance(error, ConnectionFailure):  # AutoReconnect, ServerSelectionTimeoutError...
        return True
    if isinstance(error, ConcurrentUpdate) and isinstance(error.__cause__, PyMongoError):
        # Still conflicting after the unit of work's own tries: a transaction left open by a
        # process that was killed holds its documents until the server reaps it.
        error = error.__cause__
    return isinstance(error, PyMongoError) and error.has_error_label("TransientTransactionError")


def subscribe(
    broker: KafkaBroker,
    subscriptions: Sequence[Subscription[Any]],
    *,
    registry: EventRegistry,
    group_id: str,
    dead_letters: DeadLetters,
    batch_size: int = 1,
    batch_wait_ms: int = 200,
    max_attempts: int = 3,
    retry_backoff_s: float = 0.2,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 1_000,
    fetch_max_wait_ms: int = 500,
    metrics: Metrics | None = None,
) -> Consumption:
    """Consume every subscribed topic with one consumer in ``group_id``.

    One consumer per service replica, not one per topic: each consumer joining a group
    rebalances the whole group, so fewer consumers start and scale faster. FastStream's
    batch subscriber hands over each poll of up to ``batch_size`` records as they came;
    decoding is done here rather than by its decoder, which would fail the whole poll on one
    unreadable record.
    """
    counted = metrics or Metrics()
    by_topic = {subscription.topic: subscription for subscription in subscriptions}

    async def passthrough(message: KafkaMessage) -> Any:
        return message.body  # decoded record by record below, so bad bytes reach us too

    async def dead_letter(
        item: Delivered[Any] | Refused, error: BaseException, attempts: int
    ) -> None:
        record = item.record
        event = item.event if isinstance(item, Delivered) else None
        family_id = getattr(event, "family_id", None)
        failure = Failure(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            error=error,
            attempts=attempts,
            envelope=item.envelope,
            family_id=family_id if isinstance(family_id, str) else None,
        )
        try:
            await dead_letters.record(failure)
        except Exception:
            counted.errors.labels("dead_letter").inc()
            raise
        counted.messages_consumed.labels(record.topic, DEAD_LETTERED).inc()
        counted.dead_letters.labels(record.topic).inc()

    async def outage_pause(tries: int) -> None:
        await asyncio.sleep(min(OUTAGE_BACKOFF_MAX_S, retry_backoff_s * 2 ** min(tries, 8)))

    async def timed(topic: str, size: int, work: Callable[[], Awaitable[int]]) -> int:
        """The handler's answer; its time, success or not, observed once per record."""
        started = time.perf_counter()
        try:
            return await work()
        finally:
            each = (time.perf_counter() - started) / size
            for _ in range(size):
                counted.handler_seconds.labels(topic).observe(each)

    def count(topic: str, size: int, fresh: int) -> None:
        counted.messages_consumed.labels(topic, PROCESSED).inc(fresh)
        counted.messages_consumed.labels(topic, DUPLICATE).inc(size - fresh)
        log.debug("%d on %s: %d processed, %d duplicate", size, topic, fresh, size - fresh)

    async def together(topic: str, work: Callable[[], Awaitable[int]], size: int) -> bool:
        """The batch handled at once; False when it failed for a reason of its own."""
        outage_tries = 0
        while True:
            try:
                fresh = await timed(topic, size, work)
            except Exception as failure:
                counted.errors.labels("batch").inc()
                if not is_outage(failure):
                    log.warning(
                        "batch of %d on %s failed (%r); handling them one at a time",
                        size,
                        topic,
                        failure,
                    )
                    return False
                outage_tries += 1
                log.warning("batch on %s waits for the database: %r", topic, failure)
                await outage_pause(outage_tries)
                continue
            count(topic, size, fresh)
            return True

    async def alone(item: Delivered[Any] | Refused, work: Callable[[], Awaitable[int]]) -> bool:
        """A batch of one, tried up to ``max_attempts`` times, then dead-lettered; whether
        it was handled."""
        record = item.record
        error: BaseException | None = None
        attempt = outage_tries = 0
        while attempt < max_attempts:
            try:
                fresh = await timed(record.topic, 1, work)
            except Exception as failure:
                counted.messages_consumed.labels(record.topic, FAILED_ATTEMPT).inc()
                counted.errors.labels("handler").inc()
                if is_outage(failure):
                    # Not a try: the record goes nowhere until the database is back.
                    outage_tries += 1
                    log.warning("%s waits for the database: %r", record.position, failure)
                    await outage_pause(outage_tries)
                    continue
                attempt += 1
                error = failure
                log.warning("%s failed (attempt %d): %r", record.position, attempt, failure)
                if attempt < max_attempts:
                    await asyncio.sleep(retry_backoff_s * 2 ** (attempt - 1))
            else:
                count(record.topic, 1, fresh)
                return True
        assert error is not None
        try:
            await dead_letter(item, error, max_attempts)
        except Exception:
            # Not committed, so delivered again; pause so an outage is not a hot loop.
            await asyncio.sleep(max(retry_backoff_s, 1.0))
            raise
        return False

    async def deliver(
        topic: str,
        items: Sequence[Delivered[Any]] | Sequence[Refused],
        handle: Callable[[Any], Awaitable[int]],
        done: Callable[[Record], None],
    ) -> None:
        """One path for a batch and for one record: the batch first, then, if it failed
        for a reason of its own, each record as a batch of one."""
        if len(items) > 1 and await together(topic, lambda: handle(items), len(items)):
            for item in items:
                done(item.record)
            return
        for item in items:
            with correlated(item.envelope.correlationid if item.envelope else None):
                await alone(item, functools.partial(handle, [item]))
            done(item.record)

    async def on_messages(message: InjectedMessage) -> None:
        records: dict[str, list[Record]] = {}
        for raw in message.raw_message:
            records.setdefault(raw.topic, []).append(record_of(raw))
        unfinished = {record.position: record for group in records.values() for record in group}

        def done(record: Record) -> None:
            del unfinished[record.position]

        try:
            for topic, group in records.items():
                subscription = by_topic[topic]
                read = [subscription.read(record, registry) for record in group]
                delivered = [item for item in read if isinstance(item, Delivered)]
                refused = [item for item in read if isinstance(item, Refused)]
                if refused and subscription.answer_refused is not None:
                    await deliver(topic, refused, subscription.answer_refused, done)
                else:
                    for item in refused:
                        await dead_letter(item, item.error, 1)
                        done(item.record)
                if delivered:
                    await deliver(topic, delivered, subscription.handle, done)
        except Exception as failure:
            # Take up the rest again, not the whole poll: each partition goes back to its
            # first unfinished record, and returning commits everything before it.
            rewind_to: dict[TopicPartition, int] = {}
            for record in unfinished.values():
                partition = TopicPartition(record.topic, record.partition)
                rewind_to[partition] = min(record.offset, rewind_to.get(partition, record.offset))
            for partition, offset in rewind_to.items():
                # A partition revoked meanwhile resumes at its commit, before this record.
                with contextlib.suppress(IllegalStateError):
                    message.consumer.seek(partition, offset)
            log.warning("%d record(s) to be delivered again: %r", len(unfinished), failure)

    async def redeliver(record: Record) -> bool:
        subscription = by_topic[record.topic]
        item = subscription.read(record, registry)
        with correlated(item.envelope.correlationid if item.envelope else None):
            if isinstance(item, Delivered):
                return await alone(item, functools.partial(subscription.handle, [item]))
            if subscription.answer_refused is not None:
                return await alone(item, functools.partial(subscription.answer_refused, [item]))
            await dead_letter(item, item.error, 1)
            return False

    on_messages.__name__ = f"on_{group_id.replace('-', '_')}_events"
    membership = GroupMembership()
    subscriber = broker.subscriber(
        *sorted(by_topic),
        group_id=group_id,
        batch=True,
        max_records=batch_size,
        # FastStream waits this long for a poll, then as long again when it came back empty.
        batch_timeout_ms=batch_wait_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=passthrough,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        fetch_max_wait_ms=fetch_max_wait_ms,
        listener=membership,
    )
    subscriber(on_messages)
    return Consumption(subscriber, membership, redeliver)


def record_of(raw: Any) -> Record:
    """An aiokafka ``ConsumerRecord`` as it came."""
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value or b"",
        headers={name: value.decode(errors="replace") for name, value in raw.headers},
    )
