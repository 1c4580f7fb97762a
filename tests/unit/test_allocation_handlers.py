"""The allocation use cases on the in-memory store: the cases, loads and queue they leave,
and exactly the events they publish, without a server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation import handlers
from services.allocation.domain import AlreadyExists, Team, Worker, case_id_for
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    ReferralReceived,
    TeamCapacityChanged,
)
from shared.unit_of_work import ConcurrentUpdate, retrying
from tests.factories import referral_received
from tests.fakes.allocation import InMemoryAllocationStore, InMemoryAllocationUnitOfWork

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
NORTHVALE = "northvale"
TEAM = Team("northvale-north", "Northvale North", NORTHVALE, 18)


def practitioner(worker_id: str, cap: int) -> Worker:
    return Worker(worker_id, worker_id.title(), TEAM.id, NORTHVALE, 1.0, cap, True, NOW)


def referral(family: str, *, minutes: int = 0, **changes: Any) -> ReferralReceived:
    return referral_received(
        **{
            "family_id": family,
            "referral_id": f"ref-{family}-{minutes}",
            "district": NORTHVALE,
            "level_of_need": LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
            "received_at": NOW + timedelta(minutes=minutes),
            **changes,
        }
    )


def case_of(family: str, minutes: int = 0) -> str:
    return case_id_for(f"ref-{family}-{minutes}")


async def seeded(**caps: int) -> InMemoryAllocationStore:
    store = InMemoryAllocationStore()
    workers = [practitioner(worker_id, cap) for worker_id, cap in caps.items()]
    assert await handlers.seed(store.unit_of_work, [TEAM], workers, now=NOW) is True
    store.published.staged.clear()
    return store


async def place(store: InMemoryAllocationStore, *referrals: ReferralReceived) -> handlers.Placed:
    return await handlers.place_referrals(
        store.unit_of_work(), [(each, f"corr-{each.referral_id}") for each in referrals], now=NOW
    )


def allocations(store: InMemoryAllocationStore) -> list[tuple[Any, ...]]:
    """(event id, case, status, worker, queue position, kind) of each case-allocated."""
    return [
        (e.event_id, e.data.case_id, e.data.status, e.data.worker_id, e.data.queue_position,
         e.data.kind)
        for e in store.published.staged
        if isinstance(e.data, CaseAllocated)
    ]  # fmt: skip


def capacities(store: InMemoryAllocationStore) -> list[tuple[str, int, int]]:
    """(event id, workers, capacity) of each team-capacity-changed."""
    return [
        (e.event_id, e.data.workers, e.data.capacity)
        for e in store.published.staged
        if isinstance(e.data, TeamCapacityChanged)
    ]


def loads(store: InMemoryAllocationStore) -> dict[str, int]:
    return {w.id: w.open_cases for w in store.state.districts[NORTHVALE].workers.values()}


def queue(store: InMemoryAllocationStore) -> list[str]:
    return [place.case_id for place in sorted(e.place for e in store.state.queue.values())]


ALLOCATED, QUEUED = AllocationStatus.ALLOCATED, AllocationStatus.QUEUED
STANDARD = AllocationKind.STANDARD


async def test_seeding_loads_teams_workers_and_their_capacity_into_an_empty_register() -> None:
    store = InMemoryAllocationStore()

    first = await handlers.seed(
        store.unit_of_work, [TEAM], [practitioner("amara", 3), practitioner("ben", 2)], now=NOW
    )
    again = await handlers.seed(store.unit_of_work, [TEAM], [practitioner("cara", 9)], now=NOW)

    assert (first, again) == (True, False)
    assert sorted(store.state.workers) == ["amara", "ben"]
    assert store.state.teams[TEAM.id].capacity_version == 1
    assert loads(store) == {"amara": 0, "ben": 0}
    assert capacities(store) == [(f"{TEAM.id}.capacity.1", 2, 5)]


async def test_a_new_family_goes_to_the_worker_with_most_room_and_then_cases_queue() -> None:
    store = await seeded(amara=1, ben=2)

    placed = await place(store, referral("fam-1"), referral("fam-2", minutes=1))
    await place(store, referral("fam-3", minutes=2), referral("fam-4", minutes=3))

    assert placed.to_allocate == set()
    assert allocations(store) == [
        (f"{case_of('fam-1')}.0", case_of("fam-1"), ALLOCATED, "ben", None, STANDARD),
        (f"{case_of('fam-2', 1)}.0", case_of("fam-2", 1), ALLOCATED, "amara", None, STANDARD),
        (f"{case_of('fam-3', 2)}.0", case_of("fam-3", 2), ALLOCATED, "ben", None, STANDARD),
        (f"{case_of('fam-4', 3)}.0", case_of("fam-4", 3), QUEUED, None, 1, STANDARD),
    ]
    assert loads(store) == {"amara": 1, "ben": 2}
    assert queue(store) == [case_of("fam-4", 3)]
    assert store.state.cases[case_of("fam-1")].correlation_id == "corr-ref-fam-1-0"


async def test_a_family_with_an_open_case_joins_it_and_keeps_its_worker() -> None:
    store = await seeded(amara=1, ben=1)
    await place(store, referral("fam-1"))

    await place(store, referral("fam-1", minutes=30))

    case = store.state.cases[case_of("fam-1")]
    assert (case.worker_id, case.referral_ids, case.version) == (
        "amara",
        ("ref-fam-1-0", "ref-fam-1-30"),
        1,
    )
    assert [(event[0], event[3], event[5]) for event in allocations(store)] == [
        (f"{case.id}.0", "amara", STANDARD),
        (f"{case.id}.1", "amara", AllocationKind.EXISTING_CASE),
    ]
    assert loads(store) == {"amara": 1, "ben": 0}
    assert list(store.state.cases) == [case.id]


async def test_step_downs_queue_ahead_and_co_worked_families_keep_their_reference() -> None:
    store = await seeded(amara=0)

    await place(
        store,
        referral("standard"),
        referral("co-worked", minutes=1, open_to_social_care=True,
                 social_care_case_reference="CSC-2"),
        referral("step-down", minutes=2, is_step_down=True, social_care_case_reference="CSC-1"),
    )  # fmt: skip

    assert [(event[4], event[5]) for event in allocations(store)] == [
        (1, STANDARD),
        (2, AllocationKind.CO_WORKING),
        (1, AllocationKind.STEP_DOWN),
    ]
    assert queue(store) == [case_of("step-down", 2), case_of("standard"), case_of("co-worked", 1)]
    co_worked = store.state.cases[case_of("co-worked", 1)]
    assert co_worked.social_care_case_reference == "CSC-2"


async def test_more_capacity_allocates_the_queue_in_order_and_no_more() -> None:
    store = await seeded(amara=0)
    await place(store, *(referral(f"fam-{n}", minutes=n) for n in range(3)))
    store.published.staged.clear()

    await handlers.change_worker(
        store.unit_of_work, "amara", fte=None, caseload_cap=2, now=NOW, correlation_id="admin-1"
    )

    assert capacities(store) == [(f"{TEAM.id}.capacity.2", 1, 2)]
    assert allocations(store) == [
        (f"{case_of('fam-0')}.1", case_of("fam-0"), ALLOCATED, "amara", None, STANDARD),
        (f"{case_of('fam-1', 1)}.1", case_of("fam-1", 1), ALLOCATED, "amara", None, STANDARD),
    ]
    assert queue(store) == [case_of("fam-2", 2)]
    assert loads(store) == {"amara": 2}
    assert await handlers.allocate_queue(store.unit_of_work, NORTHVALE, now=NOW) == []


async def test_a_sweep_gives_a_place_left_free_beside_a_queue() -> None:
    store = await seeded(amara=0)
    await place(store, referral("fam-1"), referral("fam-2", minutes=1))
    async with store.unit_of_work() as uow:
        district = await uow.districts.get(NORTHVALE)
        district.change_cap("amara", 1)
        await uow.districts.save(district)
        await uow.commit()

    moved = await handlers.allocate_all_queues(store.unit_of_work, now=NOW)

    assert moved == 1
    assert queue(store) == [case_of("fam-2", 1)]
    assert store.state.cases[case_of("fam-1")].worker_id == "amara"


async def test_a_team_is_created_once_and_a_new_worker_takes_the_waiting_cases() -> None:
    store = InMemoryAllocationStore()
    await handlers.create_team(store.unit_of_work, TEAM, now=NOW, correlation_id="admin-1")
    with pytest.raises(AlreadyExists):
        await handlers.create_team(store.unit_of_work, TEAM, now=NOW, correlation_id="admin-2")
    await place(store, referral("fam-1"), referral("fam-2", minutes=1))

    joined = await handlers.add_worker(
        store.unit_of_work,
        Worker("amara", "Amara", TEAM.id, "", 0.5, None, True, NOW),
        now=NOW,
        correlation_id="admin-3",
    )

    assert joined.district == NORTHVALE
    assert capacities(store) == [(f"{TEAM.id}.capacity.1", 0, 0), (f"{TEAM.id}.capacity.2", 1, 9)]
    assert [(event[1], event[2], event[3]) for event in allocations(store)][-2:] == [
        (case_of("fam-1"), ALLOCATED, "amara"),
        (case_of("fam-2", 1), ALLOCATED, "amara"),
    ]
    assert (queue(store), loads(store)) == ([], {"amara": 2})


async def test_a_teams_new_cap_per_fte_changes_its_workers_caps() -> None:
    store = InMemoryAllocationStore()
    await handlers.seed(
        store.unit_of_work,
        [TEAM],
        [Worker("amara", "Amara", TEAM.id, NORTHVALE, 0.5, None, True, NOW)],
        now=NOW,
    )

    changed = await handlers.change_team(
        store.unit_of_work, TEAM.id, name="North", cap_per_fte=30, now=NOW, correlation_id="a"
    )

    assert (changed.name, changed.cap_per_fte, changed.capacity_version) == ("North", 30, 2)
    assert store.state.teams[TEAM.id] == changed
    assert store.state.districts[NORTHVALE].workers["amara"].cap == 15
    assert capacities(store)[-1] == (f"{TEAM.id}.capacity.2", 1, 15)


async def test_a_leavers_cases_go_to_a_colleague_with_room_or_back_to_the_queue() -> None:
    store = await seeded(amara=3, ben=1)
    await place(store, *(referral(f"fam-{n}", minutes=n) for n in range(4)))
    held = sorted(case.id for case in store.state.cases.values() if case.worker_id == "amara")
    store.published.staged.clear()

    moved = await handlers.worker_leaves(
        store.unit_of_work, "amara", now=NOW, correlation_id="admin-1"
    )

    assert [(event.case_id, event.status, event.reallocated_from_worker_id) for event in moved] == [
        (case_id, QUEUED, "amara") for case_id in held
    ]
    assert allocations(store) == [
        (f"{case_id}.1", case_id, QUEUED, None, event.queue_position, STANDARD)
        for case_id, event in zip(held, moved, strict=True)
    ]
    assert sorted(queue(store)) == held
    assert store.state.workers["amara"].active is False
    assert loads(store) == {"amara": 0, "ben": 1}
    assert capacities(store) == [(f"{TEAM.id}.capacity.2", 1, 1)]


async def test_closing_a_case_frees_its_place_for_the_next_waiting_case() -> None:
    store = await seeded(amara=1)
    await place(store, referral("fam-1"), referral("fam-2", minutes=1))
    store.published.staged.clear()

    closed = await handlers.close_case(
        store.unit_of_work, case_of("fam-1"), CaseOutcome.NEEDS_MET, now=NOW
    )

    assert (closed.case_id, closed.outcome, closed.worker_id) == (
        case_of("fam-1"),
        CaseOutcome.NEEDS_MET,
        "amara",
    )
    assert [(e.event_id, type(e.data)) for e in store.published.staged] == [
        (f"{case_of('fam-1')}.closed", CaseClosed),
        (f"{case_of('fam-2', 1)}.1", CaseAllocated),
    ]
    assert store.state.cases[case_of("fam-1")].open is False
    assert store.state.cases[case_of("fam-2", 1)].worker_id == "amara"
    assert (queue(store), loads(store)) == ([], {"amara": 1})


@dataclass
class Overtaking:
    """Units of work of ``store`` of which the first, as it commits, is overtaken by another
    writer's ``change``."""

    store: InMemoryAllocationStore
    change: Any
    opened: int = 0

    def __call__(self, session: Any = None) -> InMemoryAllocationUnitOfWork:
        self.opened += 1
        if self.opened > 1:
            return self.store.unit_of_work()
        return OvertakenUnitOfWork(self.store, self.change)


class OvertakenUnitOfWork(InMemoryAllocationUnitOfWork):
    def __init__(self, store: InMemoryAllocationStore, change: Any) -> None:
        super().__init__(store)
        self.change = change

    async def commit(self) -> None:
        await self.change()
        await super().commit()


async def test_closing_a_case_overtaken_by_another_writer_is_decided_again() -> None:
    store = await seeded(amara=1)
    await place(store, referral("fam-1"))

    async def cap_raised() -> None:
        await handlers.change_worker(
            store.unit_of_work, "amara", fte=None, caseload_cap=4, now=NOW, correlation_id="a"
        )

    overtaking = Overtaking(store, cap_raised)
    await handlers.close_case(overtaking, case_of("fam-1"), CaseOutcome.NEEDS_MET, now=NOW)

    assert overtaking.opened == 3  # overtaken, decided again, then the queue's turn
    amara = store.state.districts[NORTHVALE].workers["amara"]
    assert (amara.cap, amara.open_cases) == (4, 0)
    assert store.state.cases[case_of("fam-1")].open is False


async def test_a_batch_overtaken_by_a_familys_new_case_joins_it_on_retry() -> None:
    store = await seeded(amara=2)

    async def opened_elsewhere() -> None:
        await place(store, referral("fam-1", minutes=5))

    overtaking = Overtaking(store, opened_elsewhere)
    with pytest.raises(ConcurrentUpdate):
        await handlers.place_referrals(overtaking(), [(referral("fam-1"), "corr")], now=NOW)
    assert list(store.state.cases) == [case_of("fam-1", 5)]

    placed = await retrying(
        lambda: handlers.place_referrals(overtaking(), [(referral("fam-1"), "corr")], now=NOW)
    )

    [joined] = placed.allocations
    assert (joined.case_id, joined.kind) == (case_of("fam-1", 5), AllocationKind.EXISTING_CASE)
    assert store.state.cases[case_of("fam-1", 5)].referral_ids == ("ref-fam-1-5", "ref-fam-1-0")
    assert loads(store) == {"amara": 1}
