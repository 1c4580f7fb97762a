"""Reliable consumption: commit after the effect, bounded retries, then the dead-letter topic.

Offsets are committed only after the handler's effect is stored (FastStream's
``NACK_ON_ERROR``, never the default ``ACK_FIRST``). A message that cannot be decoded goes
straight to ``<topic>.dlq``; one whose handler keeps failing goes there after
``max_attempts`` tries. Either way the dead letter is recorded and staged in the outbox in
one transaction, and only then is the offset committed, so the partition moves on and
nothing is lost. If even that fails (the database is down), the message is not committed
and is delivered again. A handler that fails because the database cannot be reached is
retried until it can, without using up its tries: an outage is not the message's fault, and
dead-lettering it would take it out of the stream for nothing.

Records arrive in batches of up to ``batch_size`` (one poll). A topic with a batch handler
has its part of the poll handled at once, in one transaction, with bulk writes: the
database is the bottleneck, and one bulk write costs about what one single write does. If
the batch fails for any reason other than an outage, its messages are handled again one at
a time, so a poison message is dead-lettered alone and the rest go through; the failed
batch's transaction left nothing behind. Offsets are committed once the whole poll is done.

Every delivery is counted by outcome and timed (``shared.metrics``), and logged under the
event's correlation id (``shared.logs``). The group membership is watched so that ``/ready``
can say whether this replica has joined its consumer group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage as InjectedMessage
from faststream.kafka.message import KafkaMessage
from pymongo.errors import ConnectionFailure, PyMongoError

from shared.events import UndecodableEvent, read_envelope
from shared.logs import correlated
from shared.metrics import DEAD_LETTERED, DUPLICATE, FAILED_ATTEMPT, PROCESSED, Metrics
from shared.mongo import Database, MongoClient, Session, in_transaction
from shared.outbox import Outbox, OutgoingMessage
from shared.topics import dead_letter_topic

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
DEAD_LETTER_KEEP_BYTES = 256 * 1024
OUTAGE_BACKOFF_MAX_S = 5.0
"""Longest pause between two tries while the database is unreachable."""


@dataclass(frozen=True)
class IncomingMessage:
    """A Kafka record as a handler sees it: the raw bytes and where they came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


Handler = Callable[[IncomingMessage], Awaitable[None]]
BatchHandler = Callable[[list[IncomingMessage]], Awaitable[int]]
"""Handles several messages of one topic at once, all or nothing; returns how many of them
changed something (the rest were duplicates)."""


@dataclass
class Delivery:
    """What a handler call found out about its message, for the consumer to count."""

    duplicate: bool = False


_delivery: ContextVar[Delivery | None] = ContextVar("delivery", default=None)


def mark_duplicate() -> None:
    """The message being handled was processed before and changed nothing this time."""
    if (delivery := _delivery.get()) is not None:
        delivery.duplicate = True


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

    def __init__(self, subscriber: Any, membership: GroupMembership) -> None:
        self._subscriber = subscriber
        self.membership = membership

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


class DeadLetters:
    """Records messages a consumer gave up on and stages them for ``<topic>.dlq``."""

    def __init__(
        self,
        client: MongoClient,
        db: Database,
        outbox: Outbox,
        *,
        consumer_group: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._collection = db[DEAD_LETTERS]
        self._outbox = outbox
        self._group = consumer_group
        self._clock = clock

    async def record(self, message: IncomingMessage, error: BaseException, attempts: int) -> str:
        """Store and stage the dead letter; the same record twice gives one dead letter."""
        dead_letter_id = f"{self._group}|{message.position}"
        document = dead_letter_document(
            message, error, attempts=attempts, consumer_group=self._group, failed_at=self._clock()
        )

        async def store(session: Session) -> None:
            await self._collection.update_one(
                {"_id": dead_letter_id}, {"$setOnInsert": document}, upsert=True, session=session
            )
            await self._outbox.stage(
                OutgoingMessage(
                    id=f"dlq|{dead_letter_id}",
                    topic=dead_letter_topic(message.topic),
                    key=message.key,
                    value=_json_bytes(document),
                    headers={
                        **message.headers,
                        "content-type": "application/json",
                        "x-dead-letter-error": _one_line(error)[:500],
                    },
                ),
                session=session,
            )

        await in_transaction(self._client, store)
        log.warning("dead-lettered %s after %d attempt(s): %s", message.position, attempts, error)
        return dead_letter_id

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest dead letters first, for operators (the traceback stays in the store)."""
        found = self._collection.find({}, {"traceback": 0}).sort("failed_at", -1).limit(limit)
        return [{"id": document.pop("_id"), **document} for document in await found.to_list()]


def dead_letter_document(
    message: IncomingMessage,
    error: BaseException,
    *,
    attempts: int,
    consumer_group: str,
    failed_at: datetime,
) -> dict[str, Any]:
    """What an operator needs to understand and replay a failed message.

    The bytes are kept whole up to ``DEAD_LETTER_KEEP_BYTES``; beyond that the head is kept
    with the size and SHA-256 of the whole, so the ``.dlq`` record stays under the broker's
    1 MB record limit and can never stall the outbox relay behind it.
    """
    kept = message.value[:DEAD_LETTER_KEEP_BYTES]
    truncated = len(kept) < len(message.value)
    try:
        original_text: str | None = None if truncated else message.value.decode()
    except UnicodeDecodeError:
        original_text = None
    return {
        "consumer_group": consumer_group,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key.decode(errors="replace") if message.key else None,
        "headers": message.headers,
        "error_type": type(error).__name__,
        "error": _one_line(error),
        "undecodable": isinstance(error, UndecodableEvent),
        "traceback": "".join(traceback.format_exception(error))[-4000:],
        "attempts": attempts,
        "failed_at": failed_at.isoformat(),
        "original_base64": base64.b64encode(kept).decode(),
        "original_text": original_text,
        "original_size": len(message.value),
        "original_sha256": hashlib.sha256(message.value).hexdigest(),
        "original_truncated": truncated,
    }


def is_outage(error: BaseException) -> bool:
    """The database could not be reached (down, restarting, failing over), or a transaction
    kept failing transiently: nothing about the message itself."""
    if isinstance(error, ConnectionFailure):  # AutoReconnect, ServerSelectionTimeoutError...
        return True
    return isinstance(error, PyMongoError) and error.has_error_label("TransientTransactionError")


def subscribe(
    broker: KafkaBroker,
    handlers: Mapping[str, Handler],
    *,
    group_id: str,
    dead_letters: DeadLetters,
    batch_handlers: Mapping[str, BatchHandler] | None = None,
    batch_size: int = 1,
    batch_wait_ms: int = 200,
    max_attempts: int = 3,
    retry_backoff_s: float = 0.2,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 1_000,
    fetch_max_wait_ms: int = 500,
    metrics: Metrics | None = None,
) -> Consumption:
    """Consume every topic in ``handlers`` with one consumer in ``group_id``.

    One consumer per service replica, not one per topic: each consumer joining a group
    rebalances the whole group, so fewer consumers start and scale faster. A topic in
    ``batch_handlers`` is handled up to ``batch_size`` records at a time; its entry in
    ``handlers`` handles a record alone, and takes over when a batch fails.
    """
    counted = metrics or Metrics()
    batched = dict(batch_handlers or {})

    async def passthrough(message: KafkaMessage) -> Any:
        return message.body  # the handler decodes, so undecodable bytes reach it too

    async def attempt_once(handler: Handler, incoming: IncomingMessage) -> Delivery:
        delivery = Delivery()
        token = _delivery.set(delivery)
        started = time.perf_counter()
        try:
            await handler(incoming)
        finally:
            counted.handler_seconds.labels(incoming.topic).observe(time.perf_counter() - started)
            _delivery.reset(token)
        return delivery

    async def dead_letter(incoming: IncomingMessage, error: BaseException, attempts: int) -> None:
        try:
            await dead_letters.record(incoming, error, attempts=attempts)
        except Exception:
            counted.errors.labels("dead_letter").inc()
            raise
        counted.messages_consumed.labels(incoming.topic, DEAD_LETTERED).inc()
        counted.dead_letters.labels(incoming.topic).inc()

    async def handle(incoming: IncomingMessage) -> None:
        handler = handlers[incoming.topic]
        error: BaseException | None = None
        attempt = outage_tries = 0
        while attempt < max_attempts:
            try:
                delivery = await attempt_once(handler, incoming)
            except UndecodableEvent as undecodable:
                await dead_letter(incoming, undecodable, attempt + 1)
                return
            except Exception as failure:
                counted.messages_consumed.labels(incoming.topic, FAILED_ATTEMPT).inc()
                counted.errors.labels("handler").inc()
                if is_outage(failure):
                    # Not a try: the message goes nowhere until the database is back.
                    outage_tries += 1
                    log.warning("%s waits for the database: %r", incoming.position, failure)
                    await asyncio.sleep(
                        min(OUTAGE_BACKOFF_MAX_S, retry_backoff_s * 2 ** min(outage_tries, 8))
                    )
                    continue
                attempt += 1
                error = failure
                log.warning("%s failed (attempt %d): %r", incoming.position, attempt, failure)
                if attempt < max_attempts:
                    await asyncio.sleep(retry_backoff_s * 2 ** (attempt - 1))
            else:
                outcome = DUPLICATE if delivery.duplicate else PROCESSED
                counted.messages_consumed.labels(incoming.topic, outcome).inc()
                log.debug("%s %s", incoming.position, outcome)
                return
        assert error is not None
        try:
            await dead_letter(incoming, error, max_attempts)
        except Exception:
            # Not committed, so delivered again; pause so an outage is not a hot loop.
            await asyncio.sleep(max(retry_backoff_s, 1.0))
            raise

    async def handle_alone(incoming: IncomingMessage) -> None:
        with correlated(_correlation_id(incoming.value)):
            await handle(incoming)

    async def handle_together(topic: str, incomings: list[IncomingMessage]) -> bool:
        """Handle the messages with the topic's batch handler; False when there is none, or
        the batch failed for reasons of its own, and they must be handled one at a time."""
        batch_handler = batched.get(topic)
        if batch_handler is None or len(incomings) == 1:
            return False
        outage_tries = 0
        while True:
            started = time.perf_counter()
            try:
                fresh = await batch_handler(incomings)
            except Exception as failure:
                counted.errors.labels("batch").inc()
                if not is_outage(failure):
                    log.warning(
                        "batch of %d on %s failed (%r); handling them one at a time",
                        len(incomings),
                        topic,
                        failure,
                    )
                    return False
                outage_tries += 1
                log.warning("batch on %s waits for the database: %r", topic, failure)
                await asyncio.sleep(
                    min(OUTAGE_BACKOFF_MAX_S, retry_backoff_s * 2 ** min(outage_tries, 8))
                )
                continue
            each = (time.perf_counter() - started) / len(incomings)
            for _ in incomings:
                counted.handler_seconds.labels(topic).observe(each)
            counted.messages_consumed.labels(topic, PROCESSED).inc(fresh)
            counted.messages_consumed.labels(topic, DUPLICATE).inc(len(incomings) - fresh)
            return True

    async def on_messages(message: InjectedMessage) -> None:
        by_topic: dict[str, list[IncomingMessage]] = {}
        for record in message.raw_message:
            by_topic.setdefault(record.topic, []).append(_incoming(record))
        unfinished = {
            incoming.position: incoming for group in by_topic.values() for incoming in group
        }
        try:
            for topic, incomings in by_topic.items():
                if await handle_together(topic, incomings):
                    for incoming in incomings:
                        del unfinished[incoming.position]
                    continue
                for incoming in incomings:
                    await handle_alone(incoming)
                    del unfinished[incoming.position]
        except Exception as failure:
            # Take up the rest again, not the whole poll: each partition goes back to its
            # first unfinished record, and returning commits everything before it.
            rewind_to: dict[TopicPartition, int] = {}
            for incoming in unfinished.values():
                partition = TopicPartition(incoming.topic, incoming.partition)
                rewind_to[partition] = min(
                    incoming.offset, rewind_to.get(partition, incoming.offset)
                )
            for partition, offset in rewind_to.items():
                # A partition revoked meanwhile resumes at its commit, before this record.
                with contextlib.suppress(IllegalStateError):
                    message.consumer.seek(partition, offset)
            log.warning("%d message(s) to be delivered again: %r", len(unfinished), failure)

    on_messages.__name__ = f"on_{group_id.replace('-', '_')}_events"
    membership = GroupMembership()
    subscriber = broker.subscriber(
        *sorted(handlers),
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
    return Consumption(subscriber, membership)


def _incoming(record: Any) -> IncomingMessage:
    """An aiokafka ``ConsumerRecord`` as handlers see it."""
    return IncomingMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        headers={name: value.decode(errors="replace") for name, value in record.headers},
    )


def _correlation_id(value: bytes) -> str | None:
    """The envelope's correlation id, for the logs; none when the bytes are no envelope."""
    try:
        return read_envelope(value).correlationid
    except UndecodableEvent:
        return None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, default=str).encode()
