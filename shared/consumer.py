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

Every delivery is counted by outcome and timed (``shared.metrics``), and logged under the
event's correlation id (``shared.logs``). The group membership is watched so that ``/ready``
can say whether this replica has joined its consumer group.
"""

from __future__ import annotations

import asyncio
import base64
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
    max_attempts: int = 3,
    retry_backoff_s: float = 0.2,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 1_000,
    metrics: Metrics | None = None,
) -> Consumption:
    """Consume every topic in ``handlers`` with one consumer in ``group_id``.

    One consumer per service replica, not one per topic: each consumer joining a group
    rebalances the whole group, so fewer consumers start and scale faster.
    """
    counted = metrics or Metrics()

    async def passthrough(message: KafkaMessage) -> bytes:
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

    async def on_message(message: InjectedMessage) -> None:
        incoming = _incoming(message)
        with correlated(_correlation_id(incoming.value)):
            await handle(incoming)

    on_message.__name__ = f"on_{group_id.replace('-', '_')}_events"
    membership = GroupMembership()
    subscriber = broker.subscriber(
        *sorted(handlers),
        group_id=group_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=passthrough,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        listener=membership,
    )
    subscriber(on_message)
    return Consumption(subscriber, membership)


def _incoming(message: KafkaMessage) -> IncomingMessage:
    record: Any = message.raw_message
    return IncomingMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=message.body,
        headers={name: str(value) for name, value in message.headers.items()},
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
