"""The districts' queues on the real database: places as ``QueuePlace`` orders them, whatever
order cases arrive in, across transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation.queues import QueueBook, districts_waiting
from shared.mongo import Database, MongoClient, create_mongo_client, in_transaction
from tests.conftest import Infra, Namespace

pytestmark = pytest.mark.infra

START = datetime(2026, 11, 2, 9, tzinfo=UTC)


def case(case_id: str, priority: int, need_rank: int, minutes: int) -> dict[str, Any]:
    return {
        "_id": case_id,
        "district": "eastmere",
        "priority": priority,
        "need_rank": need_rank,
        "referral_received_at": START + timedelta(minutes=minutes, microseconds=123_456),
    }


@pytest.fixture
async def mongo(infra: Infra) -> AsyncIterator[MongoClient]:
    client = create_mongo_client(infra.mongodb_uri, app_name="queue-tests")
    yield client
    await client.close()


async def test_places_follow_priority_need_and_age_whatever_the_arrival_order(
    mongo: MongoClient, namespace: Namespace
) -> None:
    db: Database = mongo[f"{namespace.databases}allocation"]
    arrivals = [
        case("c-new-low", 2, -2, 30),
        case("c-step-down", 0, -2, 40),  # step-downs first, whenever they come
        case("c-high-need", 2, -3, 50),
        case("c-old-low", 2, -2, 10),  # older than c-new-low, arrives after it
        case("c-newest-low", 2, -2, 60),
    ]
    expected = ["c-step-down", "c-high-need", "c-old-low", "c-new-low", "c-newest-low"]

    async def enqueue_in_turn(index: int) -> int:
        async def enqueue(session: Any) -> int:
            book = QueueBook(db, session)
            place = await book.enqueue(arrivals[index])
            await book.save()
            return place

        return await in_transaction(mongo, enqueue)

    places = [await enqueue_in_turn(index) for index in range(len(arrivals))]
    # Each place as the queue stood when the case arrived.
    assert places == [1, 1, 2, 3, 5]

    async def read(session: Any) -> tuple[list[int], str | None]:
        book = QueueBook(db, session)
        now = [await book.place_of(arrival) for arrival in arrivals]
        return now, await book.head("eastmere")

    now, head = await in_transaction(mongo, read)
    assert now == [expected.index(arrival["_id"]) + 1 for arrival in arrivals]
    assert head == "c-step-down"

    async def take_two(session: Any) -> list[str | None]:
        book = QueueBook(db, session)
        taken = []
        for _ in range(2):
            head = await book.head("eastmere")
            taken.append(head)
            await book.remove(next(arrival for arrival in arrivals if arrival["_id"] == head))
        await book.save()
        return taken

    assert await in_transaction(mongo, take_two) == expected[:2]

    async def after(session: Any) -> tuple[int, str | None, int]:
        book = QueueBook(db, session)
        return (
            await book.waiting("eastmere"),
            await book.head("eastmere"),
            await book.place_of(arrivals[4]),
        )

    assert await in_transaction(mongo, after) == (3, "c-old-low", 3)
    assert await districts_waiting(db) == ["eastmere"]
