"""What the allocation store promises, held alike by ``InMemoryAllocationStore`` and
``MongoAllocationStore`` over the real database: each test runs on both."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.allocation import domain
from services.allocation.domain import (
    HEAD_SIZE,
    AlreadyExists,
    BandState,
    Case,
    District,
    QueuePlace,
    Team,
    Worker,
    WorkerLoad,
)
from services.allocation.ports import AllocationStore, AllocationUnitOfWork
from services.allocation.store import MongoAllocationStore
from shared.events import AllocationKind, AllocationStatus, CaseOutcome, EventData, LevelOfNeed
from shared.unit_of_work import ConcurrentUpdate
from tests.contract.conftest import (
    MongoDatabase,
    Published,
    published_by,
    published_from,
)
from tests.fakes.allocation import InMemoryAllocationStore

AT = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NORTHVALE = "northvale"
EASTMOOR = "eastmoor"


@dataclass
class Backend:
    store: AllocationStore
    published: Published


@pytest.fixture
async def backend(database: MongoDatabase | None) -> Backend:
    if database is None:
        fake = InMemoryAllocationStore()
        return Backend(fake, published_by(fake))
    store = MongoAllocationStore(database.client, database.db, database.outbox)
    await store.ensure_indexes()
    return Backend(store, published_from(database))


def place(case_id: str, *, minutes: int = 0, priority: int = 1, need_rank: int = -3) -> QueuePlace:
    return QueuePlace(priority, need_rank, AT + timedelta(minutes=minutes), case_id)


def open_case(
    case_id: str, family_id: str, *, worker_id: str | None = None, district: str = NORTHVALE
) -> Case:
    return Case(
        id=case_id,
        family_id=family_id,
        district=district,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
        referral_received_at=AT,
        opening_referral_id=f"ref-{case_id}",
        referral_ids=(f"ref-{case_id}",),
        correlation_id=f"corr-{case_id}",
        opened_at=AT + timedelta(minutes=1),
        team_id=None if worker_id is None else "northvale-north",
        worker_id=worker_id,
        allocation=AllocationStatus.QUEUED if worker_id is None else AllocationStatus.ALLOCATED,
        allocated_at=None if worker_id is None else AT + timedelta(minutes=1),
    )


def team(team_id: str = "northvale-north", *, district: str = NORTHVALE) -> Team:
    return Team(team_id, team_id.replace("-", " ").title(), district, 18)


def worker(worker_id: str, team_id: str = "northvale-north") -> Worker:
    return Worker(worker_id, worker_id.title(), team_id, NORTHVALE, 0.5, None, True, AT)


def district_with(district_id: str, places: list[QueuePlace], **caps: int) -> District:
    district = District(district_id)
    for worker_id, cap in caps.items():
        district.join(worker_id, f"{district_id}-north", cap)
    for queued in places:
        district.enqueue(queued)
    return district


async def saved(store: AllocationStore, district: District) -> None:
    async with store.unit_of_work() as uow:
        await uow.districts.save(district)
        await uow.commit()


async def read_district(store: AllocationStore, district_id: str) -> District:
    async with store.unit_of_work() as uow:
        return await uow.districts.get(district_id)


def closed_event(case: Case) -> EventData:
    return domain.close_case(case, CaseOutcome.NEEDS_MET, AT + timedelta(days=30))[1]


Work = Callable[[AllocationUnitOfWork], Awaitable[None]]


async def together(store: AllocationStore, *works: Work) -> list[bool]:
    """Each work in its own unit of work, all open at once: every one reads and writes
    before any commits, then they commit in turn. Whether each was kept."""
    units = [store.unit_of_work() for _ in works]
    kept = [True] * len(units)
    for unit in units:
        await unit.__aenter__()

    async def step(index: int, action: Callable[[], Awaitable[None]]) -> None:
        if not kept[index]:
            return
        try:
            await action()
        except Exception as error:
            kept[index] = False
            try:
                await units[index].__aexit__(type(error), error, error.__traceback__)
            except ConcurrentUpdate:
                return
            if not isinstance(error, ConcurrentUpdate):
                raise

    for index, work in enumerate(works):
        await step(index, partial(work, units[index]))
    for index, unit in enumerate(units):
        await step(index, unit.commit)
    for index, unit in enumerate(units):
        if kept[index]:
            await unit.__aexit__(None, None, None)
    return kept


# ---------------------------------------------------------------------------------------------
# Districts


async def test_a_district_never_saved_is_empty_at_version_0(backend: Backend) -> None:
    async with backend.store.unit_of_work() as uow:
        one = await uow.districts.get(NORTHVALE)
        many = await uow.districts.get_many([NORTHVALE, EASTMOOR])

    assert one == District(NORTHVALE)
    assert many == {NORTHVALE: District(NORTHVALE), EASTMOOR: District(EASTMOOR)}


async def test_a_saved_district_reads_back_with_its_loads_queue_and_next_version(
    backend: Backend,
) -> None:
    district = district_with(
        NORTHVALE,
        [place("case-b", minutes=5), place("case-a", minutes=9, priority=0)],
        amara=3,
        ben=0,
    )
    district.workers["amara"].open_cases = 2
    district.workers["ben"].active = False

    await saved(backend.store, district)
    read = await read_district(backend.store, NORTHVALE)

    assert (district.version, district.added, district.removed) == (1, {}, set())
    assert read.version == 1
    assert read.workers == {
        "amara": WorkerLoad("amara", "northvale-north", 3, 2, True),
        "ben": WorkerLoad("ben", "northvale-north", 0, 0, False),
    }
    assert read.head == [place("case-a", minutes=9, priority=0), place("case-b", minutes=5)]
    assert read.bands == {
        (0, -3): BandState(1, [place("case-a", minutes=9, priority=0)]),
        (1, -3): BandState(1, [place("case-b", minutes=5)]),
    }
    assert read.queue_length == 2


async def test_a_district_saved_twice_in_one_unit_of_work_keeps_the_second(
    backend: Backend,
) -> None:
    async with backend.store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        district.join("amara", "northvale-north", 3)
        await uow.districts.save(district)
        district.change_cap("amara", 5)
        await uow.districts.save(district)
        await uow.commit()

    read = await read_district(backend.store, NORTHVALE)
    assert (read.version, read.workers["amara"].cap) == (2, 5)


async def test_a_save_over_a_district_saved_since_it_was_read_keeps_nothing(
    backend: Backend,
) -> None:
    await saved(backend.store, district_with(NORTHVALE, [], amara=1))
    case = open_case("case-1", "fam-1")

    async def overtaken() -> None:
        async with backend.store.unit_of_work() as late:
            stale = await late.districts.get(NORTHVALE)
            async with backend.store.unit_of_work() as first:
                fresh = await first.districts.get(NORTHVALE)
                fresh.change_cap("amara", 7)
                await first.districts.save(fresh)
                await first.commit()
            await late.cases.add([case])
            await late.events.stage(closed_event(case), correlation_id="c", event_id="e-late")
            stale.change_cap("amara", 2)
            await late.districts.save(stale)
            await late.commit()

    with pytest.raises(ConcurrentUpdate):
        await overtaken()

    read = await read_district(backend.store, NORTHVALE)
    assert (read.version, read.workers["amara"].cap) == (2, 7)
    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.get("case-1") is None
    assert await backend.published() == []


async def test_of_two_units_of_work_saving_one_district_at_once_only_one_is_kept(
    backend: Backend,
) -> None:
    await saved(backend.store, district_with(NORTHVALE, [], amara=1))

    def cap_to(cap: int) -> Work:
        async def work(uow: AllocationUnitOfWork) -> None:
            district = await uow.districts.get(NORTHVALE)
            district.change_cap("amara", cap)
            district.enqueue(place(f"case-{cap}"))
            await uow.districts.save(district)

        return work

    kept = await together(backend.store, cap_to(4), cap_to(9))

    assert kept == [True, False]
    read = await read_district(backend.store, NORTHVALE)
    assert (read.version, read.workers["amara"].cap, read.head) == (2, 4, [place("case-4")])
    async with backend.store.unit_of_work() as uow:
        assert await uow.districts.band(NORTHVALE, (1, -3)) == [place("case-4")]


async def test_a_band_is_its_places_in_queue_order_and_no_other_districts(
    backend: Backend,
) -> None:
    band = [place(f"case-{n}", minutes=n) for n in range(12)]
    other_bands = [place("step-down", priority=0), place("lower-need", need_rank=-2)]
    shuffled = [*band, *other_bands]
    random.Random(3).shuffle(shuffled)
    await saved(backend.store, district_with(NORTHVALE, shuffled))
    await saved(backend.store, district_with(EASTMOOR, [place("eastmoor-case", minutes=4)]))

    async with backend.store.unit_of_work() as uow:
        assert await uow.districts.band(NORTHVALE, (1, -3)) == band
        assert await uow.districts.band(NORTHVALE, (0, -3)) == [place("step-down", priority=0)]
        assert await uow.districts.band(EASTMOOR, (1, -3)) == [place("eastmoor-case", minutes=4)]
        assert await uow.districts.band(NORTHVALE, (1, -1)) == []


async def test_places_taken_out_of_the_queue_leave_their_band(backend: Backend) -> None:
    places = [place(f"case-{n}", minutes=n) for n in range(4)]
    await saved(backend.store, district_with(NORTHVALE, places))

    async with backend.store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        district.dequeue(places[1])
        district.enqueue(place("case-9", minutes=-1))
        await uow.districts.save(district)
        in_unit = await uow.districts.band(NORTHVALE, (1, -3))
        await uow.commit()

    expected = [place("case-9", minutes=-1), places[0], places[2], places[3]]
    assert in_unit == expected
    async with backend.store.unit_of_work() as uow:
        assert await uow.districts.band(NORTHVALE, (1, -3)) == expected


async def test_a_place_that_moves_within_the_queue_is_kept_once_in_its_new_band(
    backend: Backend,
) -> None:
    places = [place(f"case-{n}", minutes=n) for n in range(3)]
    await saved(backend.store, district_with(NORTHVALE, places))
    raised = place("case-1", minutes=1, need_rank=-4)  # more need, as a joining referral says

    async with backend.store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        district.dequeue(places[1])
        district.enqueue(raised)
        await uow.districts.save(district)
        await uow.commit()

    async with backend.store.unit_of_work() as uow:
        assert await uow.districts.band(NORTHVALE, (1, -3)) == [places[0], places[2]]
        assert await uow.districts.band(NORTHVALE, (1, -4)) == [raised]
        assert await uow.districts.front(await uow.districts.get(NORTHVALE)) == [
            raised,
            places[0],
            places[2],
        ]


async def test_the_front_is_the_queues_first_places_in_order_enough_for_the_head(
    backend: Backend,
) -> None:
    queue = sorted(
        place(f"case-{band}-{n}", minutes=n * 7 % 40, priority=band % 2, need_rank=-3 + band // 2)
        for band in range(4)
        for n in range(30)
    )
    shuffled = list(queue)
    random.Random(5).shuffle(shuffled)
    await saved(backend.store, district_with(NORTHVALE, shuffled))

    async with backend.store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        district.head.clear()
        front = await uow.districts.front(district)

    assert len(front) >= HEAD_SIZE
    assert front == queue[: len(front)]


async def test_the_front_of_a_short_queue_is_the_whole_queue(backend: Backend) -> None:
    queue = [place("a", priority=0), place("b", minutes=3), place("c", need_rank=-1)]
    await saved(backend.store, district_with(NORTHVALE, list(reversed(queue))))

    async with backend.store.unit_of_work() as uow:
        front = await uow.districts.front(await uow.districts.get(NORTHVALE))

    assert front == queue


async def test_districts_with_a_queue_are_those_where_cases_wait(backend: Backend) -> None:
    await saved(backend.store, district_with(NORTHVALE, [place("waiting")]))
    await saved(backend.store, district_with(EASTMOOR, [], amara=2))
    emptied = district_with("southby", [place("gone")])
    await saved(backend.store, emptied)
    emptied.dequeue(place("gone"))
    await saved(backend.store, emptied)

    async with backend.store.unit_of_work() as uow:
        assert sorted(await uow.districts.with_queue()) == [NORTHVALE]


# ---------------------------------------------------------------------------------------------
# Cases


async def test_cases_never_added_are_not_found(backend: Backend) -> None:
    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.get("case-1") is None
        assert await uow.cases.get_many(["case-1"]) == {}
        assert await uow.cases.get_many([]) == {}
        assert await uow.cases.open_cases_of(["fam-1"]) == {}
        assert await uow.cases.open_cases_held_by("amara") == []


async def test_added_cases_read_back_by_id_family_and_worker(backend: Backend) -> None:
    held = open_case("case-1", "fam-1", worker_id="amara")
    queued = open_case("case-2", "fam-2")
    other = open_case("case-3", "fam-3", worker_id="ben")
    async with backend.store.unit_of_work() as uow:
        await uow.cases.add([held, queued, other])
        await uow.commit()

    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.get("case-1") == held
        assert await uow.cases.get_many(["case-2", "case-1", "case-9"]) == {
            "case-1": held,
            "case-2": queued,
        }
        assert await uow.cases.open_cases_of(["fam-2", "fam-1", "fam-9"]) == {
            "fam-1": held,
            "fam-2": queued,
        }
        assert await uow.cases.open_cases_held_by("amara") == [held]


async def test_a_saved_case_reads_back_changed_and_once_closed_is_no_familys_open_case(
    backend: Backend,
) -> None:
    case = open_case("case-1", "fam-1", worker_id="amara")
    async with backend.store.unit_of_work() as uow:
        await uow.cases.add([case])
        await uow.commit()
    joined = replace(case, referral_ids=(*case.referral_ids, "ref-2"), version=1)
    closed, _ = domain.close_case(joined, CaseOutcome.NEEDS_MET, AT + timedelta(days=3))

    async with backend.store.unit_of_work() as uow:
        await uow.cases.save([joined])
        assert await uow.cases.get("case-1") == joined
        await uow.cases.save([closed])
        await uow.commit()

    reopened = open_case("case-2", "fam-1", worker_id="amara")
    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.get("case-1") == closed
        assert await uow.cases.open_cases_of(["fam-1"]) == {}
        assert await uow.cases.open_cases_held_by("amara") == []
        await uow.cases.add([reopened])
        await uow.commit()
    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.open_cases_of(["fam-1"]) == {"fam-1": reopened}


async def test_a_second_open_case_for_a_family_is_refused_and_keeps_nothing(
    backend: Backend,
) -> None:
    first = open_case("case-1", "fam-1")
    async with backend.store.unit_of_work() as uow:
        await uow.cases.add([first])
        await uow.commit()

    async def second_for_the_family() -> None:
        async with backend.store.unit_of_work() as uow:
            await uow.teams.add(team())
            await uow.cases.add([open_case("case-2", "fam-2"), open_case("case-3", "fam-1")])
            await uow.commit()

    with pytest.raises(ConcurrentUpdate):
        await second_for_the_family()

    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.get_many(["case-1", "case-2", "case-3"]) == {"case-1": first}
        assert await uow.teams.any() is False


async def test_of_two_units_of_work_opening_a_familys_case_at_once_only_one_is_kept(
    backend: Backend,
) -> None:
    def opens(case: Case) -> Work:
        async def work(uow: AllocationUnitOfWork) -> None:
            assert await uow.cases.open_cases_of([case.family_id]) == {}
            await uow.cases.add([case])
            await uow.events.stage(
                closed_event(case), correlation_id=case.correlation_id, event_id=case.id
            )

        return work

    first, second = open_case("case-1", "fam-1"), open_case("case-2", "fam-1")
    kept = await together(backend.store, opens(first), opens(second))

    assert kept == [True, False]
    async with backend.store.unit_of_work() as uow:
        assert await uow.cases.open_cases_of(["fam-1"]) == {"fam-1": first}
        assert await uow.cases.get("case-2") is None
    assert await backend.published() == [("case-1", closed_event(first))]


# ---------------------------------------------------------------------------------------------
# Teams and workers


async def test_a_team_added_reads_back_and_its_id_cannot_be_taken_again(
    backend: Backend,
) -> None:
    async with backend.store.unit_of_work() as uow:
        assert await uow.teams.get("northvale-north") is None
        assert await uow.teams.any() is False
        await uow.teams.add(team())
        await uow.commit()

    with pytest.raises(AlreadyExists):
        async with backend.store.unit_of_work() as uow:
            await uow.teams.add(replace(team(), name="Another"))
    renamed = replace(team(), name="Northvale North and West", capacity_version=3)
    async with backend.store.unit_of_work() as uow:
        assert await uow.teams.any() is True
        assert await uow.teams.get("northvale-north") == team()
        await uow.teams.save(renamed)
        await uow.commit()
    async with backend.store.unit_of_work() as uow:
        assert await uow.teams.get("northvale-north") == renamed


async def test_workers_added_read_back_by_id_and_team(backend: Backend) -> None:
    amara, ben, cara = worker("amara"), worker("ben"), worker("cara", "northvale-south")
    async with backend.store.unit_of_work() as uow:
        assert await uow.workers.get("amara") is None
        assert await uow.workers.of_team("northvale-north") == []
        for joining in (amara, ben, cara):
            await uow.workers.add(joining)
        await uow.commit()

    with pytest.raises(AlreadyExists):
        async with backend.store.unit_of_work() as uow:
            await uow.workers.add(replace(amara, name="Someone else"))
    left = replace(ben, active=False, left_at=AT + timedelta(days=9))
    async with backend.store.unit_of_work() as uow:
        assert await uow.workers.get("amara") == amara
        await uow.workers.save(left)
        await uow.commit()
    async with backend.store.unit_of_work() as uow:
        assert by_id(await uow.workers.of_team("northvale-north")) == [amara, left]
        assert await uow.workers.of_team("northvale-south") == [cara]


def by_id(workers: list[Worker]) -> list[Worker]:
    return sorted(workers, key=lambda each: each.id)


# ---------------------------------------------------------------------------------------------
# The unit of work


async def test_leaving_a_unit_of_work_without_commit_keeps_no_record_and_no_event(
    backend: Backend,
) -> None:
    case = open_case("case-1", "fam-1", worker_id="amara")
    async with backend.store.unit_of_work() as uow:
        await uow.teams.add(team())
        await uow.workers.add(worker("amara"))
        await uow.cases.add([case])
        await uow.districts.save(district_with(NORTHVALE, [place("case-2")], amara=1))
        await uow.events.stage(closed_event(case), correlation_id="c", event_id="e-1")

    async with backend.store.unit_of_work() as uow:
        assert await uow.teams.any() is False
        assert await uow.workers.get("amara") is None
        assert await uow.cases.get("case-1") is None
        assert await uow.districts.get(NORTHVALE) == District(NORTHVALE)
        assert await uow.districts.band(NORTHVALE, (1, -3)) == []
    assert await backend.published() == []


async def test_events_staged_are_published_on_commit_and_a_repeated_id_keeps_the_first(
    backend: Backend,
) -> None:
    one, two, three = (closed_event(open_case(f"case-{n}", f"fam-{n}")) for n in (1, 2, 3))
    async with backend.store.unit_of_work() as uow:
        await uow.events.stage_many([(one, "c-1", "e-1"), (two, "c-2", "e-2")])
        await uow.events.stage(three, correlation_id="c-3", event_id="e-1")
        assert await backend.published() == []
        await uow.commit()
    async with backend.store.unit_of_work() as uow:
        await uow.events.stage(three, correlation_id="c-3", event_id="e-2")
        await uow.events.stage_many([(three, "c-3", "e-3")])
        await uow.commit()

    assert await backend.published() == [("e-1", one), ("e-2", two), ("e-3", three)]
