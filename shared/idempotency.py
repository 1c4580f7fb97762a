"""Processed-event records: a redelivered event is recognised and changes nothing.

The record is written in the same transaction as the effect, so "processed" and "done" can
never disagree, even when two replicas receive the same event at once (the record's unique
``_id`` lets only one transaction commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from shared.events import RawEvent
from shared.mongo import Database, MongoClient, Session, in_transaction

PROCESSED_EVENTS = "processed_events"


def processed_key(consumer: str, event: RawEvent) -> str:
    return f"{consumer}|{event.source}|{event.id}"


class ProcessedEvents:
    """The record of which events a consumer has processed."""

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

    async def process_many(
        self,
        events: Sequence[RawEvent],
        work: Callable[[Session, list[int]], Awaitable[None]],
    ) -> int:
        """Run ``work`` on the indexes of the events not processed before and record them as
        processed, all in one transaction: throughput is then set by batches, not commits.

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
            await work(session, fresh)
            now = self._clock()
            await self._collection.insert_many(
                [
                    {"_id": keys[index], "type": events[index].type, "processed_at": now}
                    for index in fresh
                ],
                session=session,
            )
            return len(fresh)

        return await in_transaction(self._client, work_and_record)
