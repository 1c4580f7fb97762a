"""What managers read, held alike by ``InMemoryAllocationViews`` and ``MongoAllocationViews``
over the real database: each test writes through the store's units of work and reads
through its views, on both backends.

The county written: Northvale's two teams and Eastmoor's one, a Southby team whose district
was never saved, and cases allocated, queued and closed in Northvale and Eastmoor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation import domain
from services.allocation.domain import Case, District, Team, Worker, WorkerLoad, place_of
from services.allocation.ports import AllocationStore, AllocationViews
from services.allocation.store import MongoAllocationStore, case_document
from shared.events import AllocationKind, AllocationStatus, CaseOutcome, LevelOfNeed
from tests.contract.conftest import MongoDatabase
from tests.fakes.allocation import InMemoryAllocationStore

AT = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NORTHVALE = "northvale"
EASTMOOR = "eastmoor"
SOUTHBY = "southby"


@dataclass
class Backend:
    store: AllocationStore
    views: AllocationViews


@pytest.fixture
def chosen_backend(database: MongoDatabase | None) -> AllocationStore:
    if database is None:
        return InMemoryAllocationStore()
    return MongoAllocationStore(database.client, database.db, database.outbox)


@pytest.fixture
async def backend(chosen_backend: AllocationStore) -> Backend:
    """Views handed out before anything is written: they read what is committed at each
    call, not what was there when they were made."""
    await chosen_backend.ensure_indexes()
    return Backend(chosen_backend, chosen_backend.views())


@pytest.fixture
async def county(backend: Backend) -> Backend:
    await write_county(backend.store)
    return backend


# ---------------------------------------------------------------------------------------------
# The county


def team(team_id: str, district: str, cap_per_fte: int = 18) -> Team:
    return Team(team_id, team_id.replace("-", " ").title(), district, cap_per_fte)


def worker(
    worker_id: str,
    team_id: str,
    district: str,
    fte: float,
    *,
    cap_override: int | None = None,
    active: bool = True,
) -> Worker:
    return Worker(
        worker_id,
        worker_id.title(),
        team_id,
        district,
        fte,
        cap_override,
        active,
        AT - timedelta(days=90),
        None if active else AT - timedelta(days=2),
    )


TEAMS = [
    team("northvale-south", NORTHVALE, cap_per_fte=10),
    team("eastmoor-central", EASTMOOR),
    team("abbey-hub", SOUTHBY),
    team("northvale-north", NORTHVALE),
]
WORKERS = [
    worker("ben", "northvale-north", NORTHVALE, 0.5, cap_override=3),
    worker("amara", "northvale-north", NORTHVALE, 1.0),
    worker("abe", "northvale-north", NORTHVALE, 0.8, active=False),
    worker("dev", "northvale-south", NORTHVALE, 0.6),
    worker("eli", "eastmoor-central", EASTMOOR, 1.0),
    worker("sam", "abbey-hub", SOUTHBY, 1.0),
]
LOADS = {
    NORTHVALE: [
        WorkerLoad("amara", "northvale-north", 18, 2),
        WorkerLoad("ben", "northvale-north", 3, 2),
        WorkerLoad("abe", "northvale-north", 14, 0, active=False),
        WorkerLoad("dev", "northvale-south", 6, 7),
    ],
    EASTMOOR: [WorkerLoad("eli", "eastmoor-central", 18, 1)],
}
"""The districts' loads, which the views show, as the aggregates keep them; Southby has
none. Dev's cap was cut below his caseload."""


def case(
    case_id: str,
    district: str,
    *,
    worker_id: str | None = None,
    team_id: str | None = None,
    family_id: str | None = None,
    kind: AllocationKind = AllocationKind.STANDARD,
    level: LevelOfNeed = LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
    received_minutes: int = 0,
    opened_minutes: int = 0,
) -> Case:
    return Case(
        id=case_id,
        family_id=family_id or f"fam-{case_id}",
        district=district,
        kind=kind,
        level_of_need=level,
        referral_received_at=AT + timedelta(minutes=received_minutes),
        opening_referral_id=f"ref-{case_id}",
        referral_ids=(f"ref-{case_id}",),
        correlation_id=f"corr-{case_id}",
        opened_at=AT + timedelta(minutes=opened_minutes),
        social_care_case_reference="CSC-1" if kind is AllocationKind.STEP_DOWN else None,
        team_id=team_id,
        worker_id=worker_id,
        allocation=AllocationStatus.QUEUED if worker_id is None else AllocationStatus.ALLOCATED,
        allocated_at=None if worker_id is None else AT + timedelta(minutes=opened_minutes),
    )


def held(case_id: str, worker_id: str, team_id: str, district: str, **changes: Any) -> Case:
    return case(case_id, district, worker_id=worker_id, team_id=team_id, **changes)


ALLOCATED = [
    held("case-n1", "amara", "northvale-north", NORTHVALE, opened_minutes=10),
    held("case-n2", "amara", "northvale-north", NORTHVALE, opened_minutes=30),
    held("case-n3", "ben", "northvale-north", NORTHVALE, opened_minutes=20),
    held("case-e1", "eli", "eastmoor-central", EASTMOOR, opened_minutes=25),
]
QUEUED = [
    # Ids run against the queue's order, so neither ids nor writing order can pass for it.
    case("case-q4", NORTHVALE, kind=AllocationKind.STEP_DOWN, received_minutes=-10),
    case("case-q3", NORTHVALE, level=LevelOfNeed.EARLY_HELP_MULTI_AGENCY, received_minutes=-20),
    case("case-q1", NORTHVALE, received_minutes=-60, opened_minutes=40),
    case("case-q2", NORTHVALE, received_minutes=-180, opened_minutes=40),
    case("case-eq", EASTMOOR, received_minutes=-5, opened_minutes=35),
]
NORTHVALE_QUEUE = ["case-q4", "case-q3", "case-q2", "case-q1"]
"""Step-down first, then higher need, then the oldest."""

FIRST = held(
    "case-old", "amara", "northvale-north", NORTHVALE, family_id="fam-back", opened_minutes=-600
)
AGAIN = held(
    "case-back", "ben", "northvale-north", NORTHVALE, family_id="fam-back", opened_minutes=5
)
"""A family whose first case closed came back with a second, held by Ben."""


async def write_county(store: AllocationStore) -> None:
    async with store.unit_of_work() as uow:
        for serving in TEAMS:
            await uow.teams.add(serving)
        for joining in WORKERS:
            await uow.workers.add(joining)
        await uow.commit()
    async with store.unit_of_work() as uow:
        for district_id, loads in LOADS.items():
            district = District(district_id, {load.id: replace(load) for load in loads})
            for queued in QUEUED:
                if queued.district == district_id:
                    district.enqueue(place_of(queued))
            await uow.districts.save(district)
        await uow.cases.add([*QUEUED, *ALLOCATED, FIRST])
        await uow.commit()
    async with store.unit_of_work() as uow:
        closed, _ = domain.close_case(FIRST, CaseOutcome.NEEDS_MET, AT + timedelta(days=1))
        await uow.cases.save([closed])
        await uow.commit()
    async with store.unit_of_work() as uow:
        await uow.cases.add([AGAIN])
        await uow.commit()


def ids(documents: list[dict[str, Any]]) -> list[str]:
    return [document["_id"] for document in documents]


# ---------------------------------------------------------------------------------------------
# Teams and workers


AMARA = {
    "id": "amara",
    "name": "Amara",
    "team_id": "northvale-north",
    "district": NORTHVALE,
    "fte": 1.0,
    "caseload_cap": 18,
    "cap_is_own": False,
    "open_cases": 2,
    "spare": 16,
    "active": True,
}
BEN = {**AMARA, "id": "ben", "name": "Ben", "fte": 0.5, "caseload_cap": 3, "cap_is_own": True}
BEN |= {"open_cases": 2, "spare": 1}
ABE = {**AMARA, "id": "abe", "name": "Abe", "fte": 0.8, "caseload_cap": 14, "open_cases": 0}
ABE |= {"spare": 0, "active": False}
NORTHVALE_NORTH = {
    "id": "northvale-north",
    "name": "Northvale North",
    "district": NORTHVALE,
    "cap_per_fte": 18,
    "fte": 1.5,
    "capacity": 21,
    "open_cases": 4,
    "workers": [AMARA, BEN, ABE],
}
"""Current workers first, by id, then the leaver, whose cap and cases count for nothing."""


async def test_a_team_is_its_current_workers_capacity_and_loads_then_its_leavers(
    county: Backend,
) -> None:
    assert await county.views.get_team("northvale-north") == NORTHVALE_NORTH


async def test_a_worker_over_a_cut_cap_has_no_spare_place(county: Backend) -> None:
    dev = await county.views.get_team("northvale-south")

    assert dev is not None
    assert (dev["fte"], dev["capacity"], dev["open_cases"]) == (0.6, 6, 7)
    assert [(w["id"], w["caseload_cap"], w["open_cases"], w["spare"]) for w in dev["workers"]] == [
        ("dev", 6, 7, 0)
    ]


async def test_a_worker_their_district_never_counted_holds_nothing(county: Backend) -> None:
    southby = await county.views.get_team("abbey-hub")

    assert southby is not None
    assert (southby["capacity"], southby["open_cases"]) == (0, 0)
    assert [(w["id"], w["caseload_cap"], w["open_cases"]) for w in southby["workers"]] == [
        ("sam", 0, 0)
    ]


async def test_teams_list_by_district_then_id_and_filter_by_district(county: Backend) -> None:
    everyone = await county.views.list_teams()
    northvale = await county.views.list_teams(NORTHVALE)

    # Abbey Hub serves Southby: first by id, last by district.
    assert [each["id"] for each in everyone] == [
        "eastmoor-central",
        "northvale-north",
        "northvale-south",
        "abbey-hub",
    ]
    assert everyone[1] == NORTHVALE_NORTH
    assert [each["id"] for each in northvale] == ["northvale-north", "northvale-south"]
    assert northvale == everyone[1:3]
    assert await county.views.list_teams("nowhere") == []


async def test_a_worker_shows_their_load_and_only_their_open_cases(county: Backend) -> None:
    amara = await county.views.get_worker("amara")
    ben = await county.views.get_worker("ben")

    assert amara == {**AMARA, "case_ids": ["case-n1", "case-n2"]}
    assert ben == {**BEN, "case_ids": ["case-back", "case-n3"]}
    assert await county.views.get_worker("abe") == {**ABE, "case_ids": []}


async def test_teams_and_workers_never_added_are_not_found(county: Backend) -> None:
    assert await county.views.get_team("nowhere-team") is None
    assert await county.views.get_worker("nobody") is None


async def test_teams_are_counted_once_committed(backend: Backend) -> None:
    assert await backend.views.count_teams() == 0
    assert await backend.views.list_teams() == []
    async with backend.store.unit_of_work() as uow:
        await uow.teams.add(team("westfield-hub", "westfield"))
    assert await backend.views.count_teams() == 0

    await write_county(backend.store)

    assert await backend.views.count_teams() == len(TEAMS)


# ---------------------------------------------------------------------------------------------
# The queue


async def test_the_queue_is_each_districts_cases_in_allocation_order_numbered_per_district(
    county: Backend,
) -> None:
    queue = await queued(county.views)

    assert [(each["_id"], each["district"], each["place"]) for each in queue] == [
        ("case-eq", EASTMOOR, 1),
        ("case-q4", NORTHVALE, 1),
        ("case-q3", NORTHVALE, 2),
        ("case-q2", NORTHVALE, 3),
        ("case-q1", NORTHVALE, 4),
    ]


async def queued(views: AllocationViews, district: str | None = None) -> list[dict[str, Any]]:
    """The whole queue, or a district's."""
    queue, following = await views.queue(district)
    assert following is None
    return queue


async def queue_pages(
    views: AllocationViews, limit: int, district: str | None = None
) -> list[list[tuple[str, str, int]]]:
    """Every page of the queue, each from the mark the one before left."""
    pages, after = [], None
    while True:
        page, after = await views.queue(district, limit=limit, after=after)
        pages.append([(each["_id"], each["district"], each["place"]) for each in page])
        if after is None:
            return pages


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (
            2,
            [
                [("case-eq", EASTMOOR, 1), ("case-q4", NORTHVALE, 1)],
                [("case-q3", NORTHVALE, 2), ("case-q2", NORTHVALE, 3)],
                [("case-q1", NORTHVALE, 4)],
            ],
        ),
        (
            1,
            [
                [("case-eq", EASTMOOR, 1)],
                [("case-q4", NORTHVALE, 1)],
                [("case-q3", NORTHVALE, 2)],
                [("case-q2", NORTHVALE, 3)],
                [("case-q1", NORTHVALE, 4)],
            ],
        ),
        (
            5,
            [
                [
                    ("case-eq", EASTMOOR, 1),
                    ("case-q4", NORTHVALE, 1),
                    ("case-q3", NORTHVALE, 2),
                    ("case-q2", NORTHVALE, 3),
                    ("case-q1", NORTHVALE, 4),
                ]
            ],
        ),
    ],
)
async def test_the_county_s_queue_is_read_a_page_at_a_time_with_each_case_s_place(
    county: Backend, limit: int, expected: list[list[tuple[str, str, int]]]
) -> None:
    assert await queue_pages(county.views, limit) == expected


async def test_a_district_s_queue_is_read_a_page_at_a_time(county: Backend) -> None:
    pages = await queue_pages(county.views, 3, NORTHVALE)

    assert pages == [
        [("case-q4", NORTHVALE, 1), ("case-q3", NORTHVALE, 2), ("case-q2", NORTHVALE, 3)],
        [("case-q1", NORTHVALE, 4)],
    ]


async def test_a_long_queue_comes_a_page_at_a_time_across_its_bands(
    backend: Backend,
) -> None:
    kinds = (AllocationKind.STEP_DOWN, AllocationKind.STANDARD)
    levels = (LevelOfNeed.EARLY_HELP_MULTI_AGENCY, LevelOfNeed.EARLY_HELP_SINGLE_AGENCY)
    waiting = [
        # Received in the same few minutes, so the case id breaks ties within a band.
        case(f"case-{number:02}", district, kind=kind, level=level, received_minutes=number % 3)
        for number, (district, kind, level) in enumerate(
            (district, kind, level)
            for district in ("westfield", "eastmoor")
            for kind in kinds
            for level in levels
            for _ in range(4)
        )
    ]
    async with backend.store.unit_of_work() as uow:
        for district_id in ("westfield", "eastmoor"):
            district = District(district_id)
            for queued in waiting:
                if queued.district == district_id:
                    district.enqueue(place_of(queued))
            await uow.districts.save(district)
        await uow.cases.add(waiting)
        await uow.commit()
    in_order = sorted(waiting, key=lambda queued: (queued.district, place_of(queued)))
    expected = [
        (queued.id, queued.district, number)
        for district_id in ("eastmoor", "westfield")
        for number, queued in enumerate(
            (queued for queued in in_order if queued.district == district_id), start=1
        )
    ]

    pages = await queue_pages(backend.views, 5)
    westfield = await queue_pages(backend.views, 7, "westfield")

    assert [len(page) for page in pages] == [5] * 6 + [2]
    assert [entry for page in pages for entry in page] == expected
    assert [entry for page in westfield for entry in page] == expected[16:]
    assert [entry[1] for entry in expected] == ["eastmoor"] * 16 + ["westfield"] * 16


async def test_a_districts_queue_shows_each_waiting_case_whole_with_its_place(
    county: Backend,
) -> None:
    queue = await queued(county.views, NORTHVALE)

    assert ids(queue) == NORTHVALE_QUEUE
    for number, entry in enumerate(queue, start=1):
        assert entry == {**(await county.views.get_case(entry["_id"]) or {}), "place": number}
    step_down = queue[0]
    assert (step_down["kind"], step_down["level_of_need"], step_down["allocation"]) == (
        AllocationKind.STEP_DOWN,
        LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        AllocationStatus.QUEUED,
    )
    assert await county.views.queue("nowhere") == ([], None)


async def test_a_case_allocated_from_the_queue_leaves_it_and_the_rest_move_up(
    county: Backend,
) -> None:
    async with county.store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        head = await uow.cases.get("case-q4")
        assert head is not None
        district.dequeue(place_of(head))
        await uow.districts.save(district)
        await uow.cases.save(
            [
                replace(
                    head,
                    worker_id="amara",
                    team_id="northvale-north",
                    allocation=AllocationStatus.ALLOCATED,
                )
            ]
        )
        await uow.commit()

    queue = await queued(county.views, NORTHVALE)

    assert [(each["_id"], each["place"]) for each in queue] == [
        ("case-q3", 1),
        ("case-q2", 2),
        ("case-q1", 3),
    ]


# ---------------------------------------------------------------------------------------------
# Cases


async def test_a_case_reads_back_as_its_whole_document(county: Backend) -> None:
    assert await county.views.get_case("case-old") == {
        "_id": "case-old",
        "family_id": "fam-back",
        "district": NORTHVALE,
        "team_id": "northvale-north",
        "worker_id": "amara",
        "status": "closed",
        "allocation": "allocated",
        "kind": "standard",
        "level_of_need": 2,
        "referral_received_at": AT,
        "opening_referral_id": "ref-case-old",
        "referral_ids": ["ref-case-old"],
        "social_care_case_reference": None,
        "correlation_id": "corr-case-old",
        "opened_at": AT - timedelta(minutes=600),
        "allocated_at": AT - timedelta(minutes=600),
        "outcome": "needs_met",
        "closed_at": AT + timedelta(days=1),
        "version": 0,
    }
    queued = await county.views.get_case("case-q4")
    assert queued is not None
    assert (queued["status"], queued["allocation"], queued["worker_id"]) == ("open", "queued", None)
    assert queued["social_care_case_reference"] == "CSC-1"
    assert await county.views.get_case("case-none") is None


async def listed(
    county: Backend, filters: dict[str, Any], limit: int, before: int | None = None
) -> list[str]:
    page, _ = await county.views.list_cases(filters, limit, before=before)
    return ids(page)


async def test_cases_list_newest_opened_first_ties_by_id(county: Backend) -> None:
    # case-back was opened last (its family came back); of those opened together,
    # case-q1 and case-q2, like case-q3 and case-q4, opened at one instant.
    assert await listed(county, {}, 100) == [
        "case-back",
        "case-q1",
        "case-q2",
        "case-eq",
        "case-n2",
        "case-e1",
        "case-n3",
        "case-n1",
        "case-q3",
        "case-q4",
        "case-old",
    ]


async def test_cases_list_no_more_than_the_limit_the_newest(county: Backend) -> None:
    assert await listed(county, {}, 3) == ["case-back", "case-q1", "case-q2"]
    assert await listed(county, {"district": EASTMOOR}, 1) == ["case-eq"]


async def test_cases_come_a_page_at_a_time_in_the_same_order_as_all_at_once(
    county: Backend,
) -> None:
    everything = await listed(county, {}, 100)
    pages: list[list[str]] = []
    cursor: int | None = None
    while True:
        page, cursor = await county.views.list_cases({}, 3, before=cursor)
        pages.append(ids(page))
        if cursor is None:
            break

    assert [case for page in pages for case in page] == everything
    assert [len(page) for page in pages] == [3, 3, 3, len(everything) - 9]
    first, following = await county.views.list_cases({"district": EASTMOOR}, 1)
    assert ids(first) == ["case-eq"]
    assert following is not None
    assert await listed(county, {"district": EASTMOOR}, 1, following) == ["case-e1"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"district": EASTMOOR}, ["case-eq", "case-e1"]),
        ({"worker_id": "amara"}, ["case-n2", "case-n1", "case-old"]),
        ({"worker_id": "amara", "status": "open"}, ["case-n2", "case-n1"]),
        ({"family_id": "fam-back"}, ["case-back", "case-old"]),
        ({"family_id": "fam-back", "status": "open"}, ["case-back"]),
        ({"status": "closed"}, ["case-old"]),
        ({"district": NORTHVALE, "status": "closed"}, ["case-old"]),
        ({"district": EASTMOOR, "status": "closed"}, []),
        ({"family_id": "fam-nobody"}, []),
    ],
)
async def test_cases_list_only_those_matching_every_filter(
    county: Backend, filters: dict[str, Any], expected: list[str]
) -> None:
    assert await listed(county, filters, 100) == expected


async def test_open_cases_of_a_district_are_its_queued_and_allocated_ones(
    county: Backend,
) -> None:
    found, _ = await county.views.list_cases({"district": NORTHVALE, "status": "open"}, 100)

    assert sorted(ids(found)) == sorted(
        [*NORTHVALE_QUEUE, "case-n1", "case-n2", "case-n3", "case-back"]
    )
    assert {each["allocation"] for each in found if each["worker_id"] is None} == {"queued"}


async def test_cases_kept_before_the_lists_are_listed_once_newest_first(
    mongo_database: MongoDatabase,
) -> None:
    """A database written before cases were listed: its cases get their places at start."""
    store = MongoAllocationStore(mongo_database.client, mongo_database.db, mongo_database.outbox)
    await store.ensure_indexes()
    await mongo_database.db["cases"].insert_many(
        [
            case_document(old)
            for old in (
                case("case-b", NORTHVALE, opened_minutes=1),
                case("case-c", EASTMOOR, opened_minutes=2),
                case("case-a", NORTHVALE, opened_minutes=1),
            )
        ]
    )

    assert await store.list_existing_cases() == 3
    assert await store.list_existing_cases() == 0
    views = store.views()
    assert ids((await views.list_cases({}, 10))[0]) == ["case-c", "case-a", "case-b"]
    assert ids((await views.list_cases({"district": NORTHVALE}, 10))[0]) == ["case-a", "case-b"]
    async with store.unit_of_work() as uow:
        await uow.cases.add([case("case-d", NORTHVALE, opened_minutes=3)])
        await uow.commit()
    assert ids((await views.list_cases({}, 2))[0]) == ["case-d", "case-c"]
