"""Lists a page at a time on the real database: positions, buckets, gaps and filters, and
the same over HTTP, following each page's ``Link`` to the next."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.allocation.app import create_app as allocation_app
from services.allocation.settings import AllocationSettings
from services.referral.app import create_app as referral_app
from services.referral.settings import ReferralSettings
from shared.auth import Role
from shared.listing import LIST_POSITIONS, LISTING_CLAIM, POSITION, BucketedList
from shared.mongo import Database, create_mongo_client
from tests.auth import ADMIN, as_role
from tests.conftest import Infra, Namespace
from tests.support import followed

pytestmark = pytest.mark.infra

NOTES = "notes"


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[Database]:
    mongo = create_mongo_client(infra.mongodb_uri, app_name="listing-tests")
    try:
        yield mongo[f"listing_{uuid.uuid4().hex[:8]}"]
    finally:
        await mongo.close()


async def write(db: Database, notes: BucketedList, count: int) -> None:
    for number in range(count):
        await db[NOTES].insert_one(await notes.listed(db, {"_id": f"n{number}", "n": number}))


async def every_page(
    db: Database, notes: BucketedList, limit: int, **options: Any
) -> list[list[int]]:
    pages, before = [], None
    while True:
        page, before = await notes.page(db, NOTES, limit, before=before, **options)
        pages.append([record["n"] for record in page])
        if before is None:
            return pages


async def test_a_list_comes_newest_first_a_page_at_a_time_across_its_buckets(
    db: Database,
) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await notes.ensure_index(db, NOTES)
    await write(db, notes, 47)

    pages = await every_page(db, notes, 20)

    assert pages == [list(range(46, 26, -1)), list(range(26, 6, -1)), list(range(6, -1, -1))]
    buckets = await db[NOTES].distinct(notes.bucket_field)
    assert sorted(buckets) == sorted(f"notes|{number}" for number in range(5))


async def test_a_page_steps_over_the_gaps_rolled_back_writes_leave(db: Database) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await write(db, notes, 30)
    # Positions taken by writes that never landed: a whole bucket and a few either side.
    gone = {*range(10, 20), 5, 24}
    await db[NOTES].delete_many({"n": {"$in": sorted(gone)}})

    pages = await every_page(db, notes, 7)

    kept = [number for number in range(29, -1, -1) if number not in gone]
    assert [number for page in pages for number in page] == kept
    assert all(len(page) == 7 for page in pages[:-1])


async def test_a_filtered_page_keeps_only_what_it_asks_for_and_goes_on_past_it(
    db: Database,
) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await write(db, notes, 60)

    pages = await every_page(db, notes, 4, keep=lambda record: record["n"] % 7 == 0)

    assert [number for page in pages for number in page] == [56, 49, 42, 35, 28, 21, 14, 7, 0]
    assert [len(page) for page in pages] == [4, 4, 1]


async def test_a_cursor_past_the_head_starts_at_the_head(db: Database) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await write(db, notes, 12)

    page, following = await notes.page(db, NOTES, 5, before=10**12)

    assert ([record["n"] for record in page], following) == ([11, 10, 9, 8, 7], 6)


async def test_records_kept_before_the_list_are_listed_oldest_first_once(db: Database) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await db[NOTES].insert_many(
        [
            {"_id": f"old{number}", "n": number, "at": f"2026-01-{number + 1:02}"}
            for number in (3, 0, 2, 1)
        ]
    )

    assert await notes.list_existing(db, NOTES, "at") == 4
    assert await notes.list_existing(db, NOTES, "at") == 0
    await db[NOTES].insert_one(await notes.listed(db, {"_id": "new", "n": 4}))

    assert await every_page(db, notes, 10) == [[4, 3, 2, 1, 0]]
    positions = {record["n"]: record[POSITION] async for record in db[NOTES].find()}
    assert positions == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}


async def test_records_an_older_replica_stores_unlisted_are_listed_at_the_next_start(
    db: Database,
) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await notes.ensure_index(db, NOTES)
    await write(db, notes, 3)
    # During a rolling upgrade a replica of the version before writes without a place.
    await db[NOTES].insert_one({"_id": "from-old", "n": 3, "at": "2026-01-01"})

    assert await every_page(db, notes, 10) == [[2, 1, 0]]
    assert await notes.list_existing(db, NOTES, "at") == 1
    assert await every_page(db, notes, 10) == [[3, 2, 1, 0]]
    assert await notes.list_existing(db, NOTES, "at") == 0


async def test_one_replica_lists_at_a_time_and_a_dead_one_s_claim_lapses(db: Database) -> None:
    notes = BucketedList("notes", per_bucket=10)
    await db[NOTES].insert_many([{"_id": f"old{n}", "n": n, "at": f"t{n}"} for n in range(3)])
    now = datetime(2026, 12, 2, 9, tzinfo=UTC)
    # Another replica is listing them, and then dies.
    await db[LIST_POSITIONS].insert_one(
        {"_id": "notes|listing", "until": now + timedelta(minutes=1)}
    )

    while_held = await notes.list_existing(db, NOTES, "at", now=now)
    after_lapse = await notes.list_existing(db, NOTES, "at", now=now + LISTING_CLAIM)

    assert (while_held, after_lapse) == (0, 3)
    assert await every_page(db, notes, 10) == [[2, 1, 0]]
    assert await db[LIST_POSITIONS].find_one({"_id": "notes|listing"}) is None


# ---------------------------------------------------------------------------------------------
# Over HTTP


@contextlib.asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        yield http


async def test_refusals_are_listed_a_page_at_a_time_following_each_link(
    infra: Infra, namespace: Namespace
) -> None:
    settings = namespace.settings(AllocationSettings, infra, sample_data=False)
    async with started(allocation_app(settings)) as http:
        callers = [f"worker-{number}" for number in range(7)]
        for sub in callers:
            refused = await http.get("/refusals", headers=as_role(Role.PRACTITIONER, sub=sub))
            assert refused.status_code == 403

        pages = await followed(http, "/refusals?limit=3", ADMIN)
        one = await followed(http, "/refusals?limit=1&sub=worker-4", ADMIN)
        bad = await http.get("/refusals?cursor=-1", headers=ADMIN)

    assert [[refusal["sub"] for refusal in page] for page in pages] == [
        ["worker-6", "worker-5", "worker-4"],
        ["worker-3", "worker-2", "worker-1"],
        ["worker-0"],
    ]
    assert [refusal["sub"] for page in one for refusal in page] == ["worker-4"]
    assert bad.status_code == 422


async def test_partner_keys_are_listed_newest_issued_first_following_each_link(
    infra: Infra, namespace: Namespace
) -> None:
    settings = namespace.settings(ReferralSettings, infra, sample_data=False)
    async with started(referral_app(settings)) as http:
        partners = [f"partner-{number}" for number in range(5)]
        for partner in partners:
            issued = await http.post(
                "/partner-keys", json={"partner_id": partner, "routes": ["school"]}, headers=ADMIN
            )
            assert issued.status_code == 201, issued.text

        pages = await followed(http, "/partner-keys?limit=2", ADMIN)

    assert [[key["partner_id"] for key in page] for page in pages] == [
        ["partner-4", "partner-3"],
        ["partner-2", "partner-1"],
        ["partner-0"],
    ]
    assert all("key" not in key for page in pages for key in page)
