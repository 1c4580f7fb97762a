"""Processed-event records: a redelivered event finds its earlier effect and changes nothing.

The record is written in the same transaction as the effect, so "processed" and "done" can
never disagree, even when two replicas receive the same event at once (the record's unique
``_id`` lets only one transaction commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from shared.events import RawEvent
from shared.mongo import Database, Document, MongoClient, Session, in_transaction

PROCESSED_EVENTS = "processed_events"


class AlreadyProcessed(Exception):
    """The event was processed before; ``effect`` is what that processing recorded."""

    def __init__(self, effect: Document) -> None:
        super().__init__("event already processed")
        self.effect = effect


def processed_key(consumer: str, event: RawEvent) -> str:
    return f"{consumer}|{event.source}|{event.id}"


class ProcessedEvents:
    """The record of which events a consumer has processed, and with what effect."""

    def __init__(
        self,
        client: MongoClient,
        db: Database,
        *,
        consumer: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._collection = db[PROCESSED_EVENTS]
        self._consumer = consumer
        self._clock = clock

    async def effect_of(self, event: RawEvent) -> Document | None:
        """The recorded effect when ``event`` was already processed (a cheap pre-check)."""
        found = await self._collection.find_one({"_id": processed_key(self._consumer, event)})
        return None if found is None else found["effect"]

    async def record(self, event: RawEvent, effect: dict[str, Any], *, session: Session) -> None:
        """Record ``event`` as processed inside the caller's transaction.

        Raises ``AlreadyProcessed`` when another delivery got there first, which aborts the
        caller's transaction and with it the duplicate effect.
        """
        try:
            await self._collection.insert_one(
                {
                    "_id": processed_key(self._consumer, event),
                    "type": event.type,
                    "effect": effect,
                    "processed_at": self._clock(),
                },
                session=session,
            )
        except DuplicateKeyError:
            existing = await self.effect_of(event)
            raise AlreadyProcessed(existing or {}) from None

    async def process_many(
        self,
        events: Sequence[RawEvent],
        work: Callable[[Session, list[int]], Awaitable[list[dict[str, Any]]]],
    ) -> int:
        """Run ``work`` on the indexes of the events not processed before, recording them with
        the effects it returns (one per index), all in one transaction: throughput is then
        set by batches, not by commits.

        Returns how many were new. An event given twice in one batch counts once.
        """

        async def work_and_record(session: Session) -> int:
            keys = [processed_key(self._consumer, event) for event in events]
            found = self._collection.find({"_id": {"$in": keys}}, {"_id": 1}, session=session)
            seen = {document["_id"] async for document in found}
            fresh: list[int] = []
            for index, key in enumerate(keys):
                if key not in seen:
                    seen.add(key)
                    fresh.append(index)
            if not fresh:
                return 0
            effects = await work(session, fresh)
            now = self._clock()
            await self._collection.insert_many(
                [
                    {
                        "_id": keys[index],
                        "type": events[index].type,
                        "effect": effect,
                        "processed_at": now,
                    }
                    for index, effect in zip(fresh, effects, strict=True)
                ],
                session=session,
            )
            return len(fresh)

        return await in_transaction(self._client, work_and_record)

    async def process_once(
        self, event: RawEvent, work: Callable[[Session], Awaitable[dict[str, Any]]]
    ) -> bool:
        """Run ``work`` (which returns its effect) and record ``event`` in one transaction.

        Returns False, having changed nothing, when the event was processed before: the
        record's unique insert aborts the transaction, so no separate look-up is needed.
        """

        async def work_and_record(session: Session) -> None:
            effect = await work(session)
            await self.record(event, effect, session=session)

        try:
            await in_transaction(self._client, work_and_record)
        except AlreadyProcessed:
            return False
        return True
