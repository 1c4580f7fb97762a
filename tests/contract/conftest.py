"""What every contract suite shares: a fresh database per test, and the outbox read back.

A suite runs each test twice, on the in-memory fake (``in-memory``) and on the Mongo
adapter over the real database (``mongo``, marked ``infra``), and compares what the port
promises, never how either keeps it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from shared.events import PLATFORM_EVENTS, EventData
from shared.events.codec import read_envelope
from shared.mongo import Database, MongoClient, create_mongo_client
from shared.outbox import OUTBOX, Outbox
from tests.fakes.units import InMemoryStore

BACKENDS = ["in-memory", pytest.param("mongo", marks=pytest.mark.infra)]
"""The backends a suite runs on; the ``database`` fixture is parametrised with them."""

Published = Callable[[], Awaitable[list[tuple[str, EventData]]]]
"""(event id, data) of every event a store's commits staged, in staging order."""


@dataclass
class MongoDatabase:
    client: MongoClient
    db: Database
    outbox: Outbox


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> MongoDatabase | None:
    """The database of the ``mongo`` backend; None for the in-memory fake. A suite builds
    its store over it, or its fake, and hands both the same tests."""
    if request.param == "mongo":
        found: MongoDatabase = request.getfixturevalue("mongo_database")
        return found
    return None


def published_by(fake: InMemoryStore[Any]) -> Published:
    async def published() -> list[tuple[str, EventData]]:
        return [(event.event_id, event.data) for event in fake.published.staged]

    return published


def published_from(database: MongoDatabase) -> Published:
    return partial(staged_in_outbox, database.db)


@pytest.fixture
async def mongo_database(
    request: pytest.FixtureRequest, clock: Clock
) -> AsyncIterator[MongoDatabase]:
    """A database of its own for one test (only asked for by the ``mongo`` backend)."""
    uri: str = request.getfixturevalue("mongodb_uri")
    client = create_mongo_client(uri, app_name="contract-tests")
    db = client[f"contract_{uuid.uuid4().hex[:12]}"]
    outbox = Outbox(db, source="contract-tests", topic_namespace="", clock=clock)
    await outbox.ensure_indexes()
    try:
        yield MongoDatabase(client, db, outbox)
    finally:
        await client.close()


async def staged_in_outbox(db: Database) -> list[tuple[str, EventData]]:
    """(event id, data) of every event staged in ``db``'s outbox, in staging order."""
    found = db[OUTBOX].find({}).sort("seq", 1)
    staged = []
    async for record in found:
        envelope = read_envelope(record["value"])
        model = PLATFORM_EVENTS.model(envelope.type)
        staged.append((envelope.id, PLATFORM_EVENTS.read_data(envelope, model)))
    return staged


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    from datetime import UTC

    return Clock(datetime(2026, 3, 14, 9, 30, tzinfo=UTC))
