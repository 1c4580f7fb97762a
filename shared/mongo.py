"""MongoDB client factory and the transaction every state change goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]
MongoClient = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]
Session = AsyncClientSession

T = TypeVar("T")


def create_mongo_client(uri: str, *, app_name: str) -> MongoClient:
    """A client for ``uri``; built by a service's ``create_app()``, never at import time."""
    return AsyncMongoClient(uri, appname=app_name, tz_aware=True, serverSelectionTimeoutMS=10_000)


async def in_transaction(client: MongoClient, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run ``work`` in one multi-document transaction, retried on transient conflicts.

    This is what keeps a state change, its outgoing events and the processed-event mark
    together: either all of them are stored or none is.
    """
    async with client.start_session() as session:
        return await session.with_transaction(work)


class BulkWrites:
    """Writes gathered per collection, in order, then sent as one bulk write per collection.

    A handler of a batch of events records its writes here instead of sending them one by
    one: the database is the bottleneck, and a bulk write of hundreds of updates costs about
    what a few single ones do. Order is kept within a collection, so a later write sees an
    earlier one's effect, as it would have one at a time.
    """

    def __init__(self) -> None:
        self._writes: dict[str, list[UpdateOne | ReplaceOne[Document]]] = {}

    def __len__(self) -> int:
        return sum(len(writes) for writes in self._writes.values())

    def update_one(
        self,
        collection: str,
        where: Document,
        update: Document,
        *,
        upsert: bool = False,
    ) -> None:
        self._writes.setdefault(collection, []).append(UpdateOne(where, update, upsert=upsert))

    def replace_one(
        self, collection: str, where: Document, document: Document, *, upsert: bool = False
    ) -> None:
        self._writes.setdefault(collection, []).append(ReplaceOne(where, document, upsert=upsert))

    async def send(self, db: Database, *, session: Session | None) -> None:
        for collection, writes in self._writes.items():
            await db[collection].bulk_write(writes, ordered=True, session=session)
        self._writes.clear()
