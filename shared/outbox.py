"""Transactional outbox: events are stored with the state change, then relayed to Kafka.

A handler stages its outgoing events inside the same MongoDB transaction as its writes, so
no event is lost between a write and its publication. The relay publishes staged events in
the order they were staged and marks them sent; after a crash it simply publishes what is
still unsent, which may repeat an event (consumers are idempotent by ``source`` + ``id``).
Only one replica at a time relays, under a renewable lease, so replicas do not race.
On shutdown the relay finishes its batch and publishes what is still staged before it stops,
so the effects of the last messages a replica consumed leave with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.events import CONTENT_TYPE, CloudEvent, EventData, envelope
from shared.metrics import Metrics
from shared.mongo import Database, Document, Session
from shared.topics import topic_name

log = logging.getLogger(__name__)

OUTBOX = "outbox"
LEASES = "outbox_leases"
SENT_RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class OutgoingMessage:
    """One Kafka record waiting in the outbox."""

    id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class MessagePublisher(Protocol):
    """Sends records to Kafka and returns once the broker has acknowledged all of them."""

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None: ...


class Outbox:
    """Stages outgoing events and raw records inside the caller's transaction."""

    def __init__(
        self,
        db: Database,
        *,
        source: str,
        topic_namespace: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._collection = db[OUTBOX]
        self._source = source
        self._namespace = topic_namespace
        self._clock = clock
        self._staged = asyncio.Event()

    @property
    def staged(self) -> asyncio.Event:
        """Set whenever something was staged, so the relay in this process wakes at once."""
        return self._staged

    async def ensure_indexes(self) -> None:
        await self._collection.create_index([("sent_at", ASCENDING), ("seq", ASCENDING)])
        await self._collection.create_index(
            "sent_at", expireAfterSeconds=int(SENT_RETENTION.total_seconds()), name="sent_ttl"
        )

    async def stage_event(
        self,
        data: EventData,
        *,
        session: Session,
        correlation_id: str,
        event_id: str | None = None,
    ) -> CloudEvent[EventData]:
        """Wrap ``data`` in its envelope and stage it for its topic, keyed by its subject."""
        event, message = self._wrap(data, correlation_id, event_id)
        await self.stage(message, session=session)
        return event

    async def stage_events(
        self, events: Sequence[tuple[EventData, str, str]], *, session: Session
    ) -> None:
        """``stage_event`` for many new (data, correlation id, event id), in one insert.

        An insert, not an upsert (several times faster here): an event id staged before
        fails the caller's transaction with ``DuplicateKeyError``, and a batch handler's
        messages are then taken one at a time, through ``stage_event``, which keeps the first.
        One event alone is staged so, keeping the first, as nothing is left to fall back to.
        """
        if len(events) == 1:
            [(data, correlation_id, event_id)] = events
            await self.stage_event(
                data, session=session, correlation_id=correlation_id, event_id=event_id
            )
        elif events:
            first = time.time_ns()
            messages = [self._wrap(*event)[1] for event in events]
            await self._collection.insert_many(
                [
                    {"_id": message.id, **self._record(message, seq=first + index)}
                    for index, message in enumerate(messages)
                ],
                session=session,
            )
            self._staged.set()

    async def stage(self, message: OutgoingMessage, *, session: Session) -> None:
        """Stage a raw record; staging the same id twice keeps the first."""
        await self._collection.update_one(
            {"_id": message.id},
            {"$setOnInsert": self._record(message, seq=time.time_ns())},
            upsert=True,
            session=session,
        )
        self._staged.set()

    def _wrap(
        self, data: EventData, correlation_id: str, event_id: str | None
    ) -> tuple[CloudEvent[EventData], OutgoingMessage]:
        event = envelope(
            data,
            event_id=event_id or str(uuid.uuid4()),
            source=self._source,
            time=self._clock(),
            correlation_id=correlation_id,
        )
        message = OutgoingMessage(
            id=f"{event.source}|{event.id}",
            topic=topic_name(event.type, self._namespace),
            key=event.subject.encode() if event.subject else None,
            value=event.to_bytes(),
            headers={"content-type": CONTENT_TYPE, "ce_type": event.type, "ce_id": event.id},
        )
        return event, message

    def _record(self, message: OutgoingMessage, *, seq: int) -> Document:
        return {
            "topic": message.topic,
            "key": message.key,
            "value": message.value,
            "headers": message.headers,
            "staged_at": self._clock(),
            "seq": seq,
            "sent_at": None,
        }


AFTER_WAKE_UP_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
"""Pauses before looking again when a wake-up found nothing: staging wakes the relay before
its transaction commits, so the first look can come too early to see the records."""


class OutboxRelay:
    """Publishes staged records in order and marks them sent; one relaying replica at a time."""

    def __init__(
        self,
        db: Database,
        publisher: MessagePublisher,
        *,
        wake_up: asyncio.Event,
        clock: Callable[[], datetime],
        poll_interval_s: float = 0.5,
        batch_size: int = 500,
        lease: timedelta = timedelta(seconds=10),
        owner: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._outbox = db[OUTBOX]
        self._leases = db[LEASES]
        self._publisher = publisher
        self._wake_up = wake_up
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._lease = lease
        self._owner = owner or str(uuid.uuid4())
        self._lease_until: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._metrics = metrics or Metrics()

    async def relay_pending(self) -> int:
        """Publish one batch of unsent records; returns how many were sent."""
        if not await self._hold_lease():
            return 0
        documents = (
            await self._outbox.find({"sent_at": None})
            .sort("seq", ASCENDING)
            .limit(self._batch_size)
            .to_list()
        )
        if not documents:
            return 0
        messages = [_to_message(document) for document in documents]
        await self._publisher.publish(messages)
        await self._outbox.update_many(
            {"_id": {"$in": [document["_id"] for document in documents]}},
            {"$set": {"sent_at": self._clock()}},
        )
        for topic, count in Counter(message.topic for message in messages).items():
            self._metrics.messages_published.labels(topic).inc(count)
        return len(documents)

    async def _relay_everything(self) -> int:
        sent = batch = await self.relay_pending()
        while batch == self._batch_size:
            batch = await self.relay_pending()
            sent += batch
        return sent

    async def pending_count(self) -> int:
        return await self._outbox.count_documents({"sent_at": None})

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is staged, then stop; cut short after ``timeout_s``.

        Whatever is left unsent stays staged and goes with the next relay to run.
        """
        if self._task is not None:
            self._stopping = True
            self._wake_up.set()
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.warning("outbox relay still busy after %.1fs; stopped", timeout_s)
            self._task = None
        await self._release_lease()

    async def _run(self) -> None:
        while True:
            woken = self._wake_up.is_set()
            self._wake_up.clear()
            try:
                sent = await self._relay_everything()
                for pause_s in AFTER_WAKE_UP_S if woken and not sent else ():
                    await asyncio.sleep(pause_s)
                    if sent := await self._relay_everything():
                        break
            except Exception:  # the relay must outlive a broker or database outage
                self._metrics.errors.labels("outbox_relay").inc()
                log.exception("outbox relay failed; retrying")
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_up.wait(), self._poll_interval_s)

    async def _hold_lease(self) -> bool:
        now = self._clock()
        if self._lease_until is not None and now < self._lease_until - self._lease / 2:
            return True
        try:
            held = await self._leases.find_one_and_update(
                {"_id": "relay", "$or": [{"owner": self._owner}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": self._owner, "expires_at": now + self._lease}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # another replica holds a live lease
            self._lease_until = None
            return False
        self._lease_until = held["expires_at"] if held else None
        return held is not None

    async def _release_lease(self) -> None:
        if self._lease_until is None:
            return
        with contextlib.suppress(PyMongoError):
            await self._leases.delete_one({"_id": "relay", "owner": self._owner})
        self._lease_until = None


def _to_message(document: Document) -> OutgoingMessage:
    return OutgoingMessage(
        id=document["_id"],
        topic=document["topic"],
        key=document["key"],
        value=document["value"],
        headers=document.get("headers") or {},
    )
