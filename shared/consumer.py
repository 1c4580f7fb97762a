"""Reliable consumption: commit after the effect, bounded retries, then the dead-letter topic.

Offsets are committed only after the handler's effect is stored (FastStream's
``NACK_ON_ERROR``, never the default ``ACK_FIRST``). A message that cannot be decoded goes
straight to ``<topic>.dlq``; one whose handler keeps failing goes there after
``max_attempts`` tries. Either way the dead letter is recorded and staged in the outbox in
one transaction, and only then is the offset committed, so the partition moves on and
nothing is lost. If even that fails (the database is down), the message is not committed
and is delivered again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage as InjectedMessage
from faststream.kafka.message import KafkaMessage

from shared.events import UndecodableEvent
from shared.mongo import Database, MongoClient, Session, in_transaction
from shared.outbox import Outbox, OutgoingMessage
from shared.topics import dead_letter_topic

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"


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
    """What an operator needs to understand and replay a failed message."""
    try:
        original_text: str | None = message.value.decode()
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
        "original_base64": base64.b64encode(message.value).decode(),
        "original_text": original_text,
    }


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
) -> None:
    """Consume every topic in ``handlers`` with one consumer in ``group_id``.

    One consumer per service replica, not one per topic: each consumer joining a group
    rebalances the whole group, so fewer consumers start and scale faster.
    """

    async def passthrough(message: KafkaMessage) -> bytes:
        return message.body  # the handler decodes, so undecodable bytes reach it too

    async def on_message(message: InjectedMessage) -> None:
        incoming = _incoming(message)
        handler = handlers[incoming.topic]
        error: BaseException | None = None
        for attempt in range(1, max_attempts + 1):
            try:
                await handler(incoming)
                return
            except UndecodableEvent as undecodable:
                await dead_letters.record(incoming, undecodable, attempts=attempt)
                return
            except Exception as failure:
                error = failure
                log.warning("%s failed (attempt %d): %r", incoming.position, attempt, failure)
                if attempt < max_attempts:
                    await asyncio.sleep(retry_backoff_s * 2 ** (attempt - 1))
        assert error is not None
        try:
            await dead_letters.record(incoming, error, attempts=max_attempts)
        except Exception:
            # Not committed, so delivered again; pause so an outage is not a hot loop.
            await asyncio.sleep(max(retry_backoff_s, 1.0))
            raise

    on_message.__name__ = f"on_{group_id.replace('-', '_')}_events"
    broker.subscriber(
        *sorted(handlers),
        group_id=group_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=passthrough,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
    )(on_message)


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


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, default=str).encode()
