"""MongoDB client factory and the transaction every state change goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
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
