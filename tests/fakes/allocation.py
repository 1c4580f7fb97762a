"""The allocation service's ports over dictionaries, held to ``MongoAllocationStore`` and
``MongoAllocationViews`` by ``tests/contract/test_allocation_store.py`` and
``tests/contract/test_allocation_views.py``.

Committed records are keyed by id, so a commit applies only what its unit of work changed
and leaves what others committed meanwhile. The two guards the use cases rely on hold as in
the database: a district saved since it was read, and a family given an open case by
another writer first, both end in ``ConcurrentUpdate`` and keep nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.allocation.domain import (
    HEAD_SIZE,
    AlreadyExists,
    Band,
    Case,
    District,
    QueuePlace,
    Team,
    Worker,
    WorkerLoad,
)
from services.allocation.ports import (
    AllocationStore,
    AllocationUnitOfWork,
    AllocationViews,
    Cases,
    Districts,
    QueueMark,
    Teams,
    Workers,
)
from shared.unit_of_work import ConcurrentUpdate
from tests.fakes.units import InMemoryStore, InMemoryUnitOfWork, StagedEvent

T = TypeVar("T")


@dataclass
class QueueEntry:
    district: str
    place: QueuePlace


@dataclass
class AllocationState:
    """Every record of the service: saved districts (without their queue), each queued
    place, cases, teams and workers."""

    districts: dict[str, District] = field(default_factory=dict)
    queue: dict[str, QueueEntry] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)

    def open_case_of(self, family_id: str) -> Case | None:
        return next(
            (case for case in self.cases.values() if case.open and case.family_id == family_id),
            None,
        )


def _version(state: AllocationState, district_id: str) -> int:
    saved = state.districts.get(district_id)
    return 0 if saved is None else saved.version


COUNTY = "all"
"""The county's list of cases, beside each district's."""


class InMemoryAllocationStore(InMemoryStore[AllocationState]):
    """``AllocationStore`` in memory; ``state`` is what is committed."""

    def __init__(self) -> None:
        super().__init__(AllocationState())
        self.list_next: dict[str, int] = {}
        """Per list (the county's, each district's), the next position: handed out outside
        any unit of work, as the adapter does, so a unit of work left uncommitted leaves gaps."""
        self.positions: dict[str, tuple[int, int]] = {}
        """Each case's position in the county's list and in its district's."""

    def take_positions(self, cases: Sequence[Case]) -> None:
        """Positions for cases added together, the newest opened last, ties by id backwards
        (so a newest-first list shows them by id)."""
        by_id_backwards = sorted(cases, key=lambda case: case.id, reverse=True)
        for case in sorted(by_id_backwards, key=lambda case: case.opened_at):
            county = self.list_next.get(COUNTY, 0)
            district = self.list_next.get(case.district, 0)
            self.list_next[COUNTY], self.list_next[case.district] = county + 1, district + 1
            self.positions[case.id] = (county, district)

    async def ensure_indexes(self) -> None:
        return None

    def unit_of_work(self, session: Any = None) -> InMemoryAllocationUnitOfWork:
        """``session`` is the consumer's transaction in the database; here every unit of
        work commits on its own."""
        return InMemoryAllocationUnitOfWork(self)

    def views(self) -> InMemoryAllocationViews:
        return InMemoryAllocationViews(self)

    def check(self, read: AllocationState, mine: AllocationState) -> None:
        for district_id, district in mine.districts.items():
            before = _version(read, district_id)
            if district.version != before and _version(self.state, district_id) != before:
                raise ConcurrentUpdate(f"district {district_id} was saved meanwhile")
        for case_id, case in mine.cases.items():
            if case_id in read.cases:
                continue
            held = self.state.open_case_of(case.family_id)
            if case_id in self.state.cases or (case.open and held is not None):
                raise ConcurrentUpdate("a family's case was opened meanwhile")
        for added, committed in (
            (mine.teams.keys() - read.teams.keys(), self.state.teams),
            (mine.workers.keys() - read.workers.keys(), self.state.workers),
        ):
            if any(key in committed for key in added):
                raise ConcurrentUpdate("added meanwhile by another writer")

    def committed(
        self, mine: AllocationState, events: Sequence[StagedEvent], *, read: AllocationState
    ) -> None:
        """Apply what this unit of work changed over what others committed since it read."""
        self.check(read, mine)
        merged = copy.deepcopy(self.state)
        _apply(merged.districts, read.districts, mine.districts)
        _apply(merged.queue, read.queue, mine.queue)
        _apply(merged.cases, read.cases, mine.cases)
        _apply(merged.teams, read.teams, mine.teams)
        _apply(merged.workers, read.workers, mine.workers)
        self.state = merged
        self.version += 1
        for event in events:
            self.published.keep(event)


def _apply(into: dict[str, T], read: dict[str, T], mine: dict[str, T]) -> None:
    for key in read.keys() - mine.keys():
        into.pop(key, None)
    for key, value in mine.items():
        if key not in read or read[key] != value:
            into[key] = copy.deepcopy(value)


class InMemoryAllocationUnitOfWork(InMemoryUnitOfWork[AllocationState]):
    districts: Districts
    cases: Cases
    teams: Teams
    workers: Workers

    def __init__(self, store: InMemoryAllocationStore) -> None:
        super().__init__(store)
        self.lists = store
        """The store as the cases' lists need it: their positions are handed out by it."""

    def opened(self) -> None:
        read = {district_id: d.version for district_id, d in self.state.districts.items()}
        self.districts = InMemoryDistricts(self.state, self.store, read)
        self.cases = InMemoryCases(self.state, self.lists)
        self.teams = InMemoryTeams(self.state)
        self.workers = InMemoryWorkers(self.state)


class InMemoryDistricts:
    """``Districts``: a save claims the district's next version, as the adapter does, so a
    stale copy or one saved by another writer since it was read is refused."""

    def __init__(
        self,
        state: AllocationState,
        store: InMemoryStore[AllocationState],
        read_versions: dict[str, int],
    ) -> None:
        self._state = state
        self._store = store
        self._read_versions = read_versions

    async def get(self, district_id: str) -> District:
        return (await self.get_many([district_id]))[district_id]

    async def get_many(self, district_ids: Sequence[str]) -> dict[str, District]:
        return {
            district_id: copy.deepcopy(self._state.districts.get(district_id))
            or District(district_id)
            for district_id in district_ids
        }

    async def band(self, district_id: str, band: Band) -> list[QueuePlace]:
        return sorted(
            entry.place
            for entry in self._state.queue.values()
            if entry.district == district_id and entry.place.band == band
        )

    async def front(self, district: District) -> list[QueuePlace]:
        places: list[QueuePlace] = []
        for band in sorted(district.bands):
            places += await self.band(district.id, band)
            if len(places) >= HEAD_SIZE:
                break
        return places

    async def save(self, district: District) -> None:
        read = self._read_versions.get(district.id, 0)
        if district.version != _version(self._state, district.id):
            raise ConcurrentUpdate(f"district {district.id} is not as it was read")
        if _version(self._store.state, district.id) != read:
            raise ConcurrentUpdate(f"district {district.id} was saved meanwhile")
        for case_id in district.removed:
            self._state.queue.pop(case_id, None)
        if queued := sorted(set(district.added) & set(self._state.queue)):
            # As the adapter's insert does: a case queued once has one entry.
            raise RuntimeError(f"queue entries already there: {queued}")
        for case_id, place in district.added.items():
            self._state.queue[case_id] = QueueEntry(district.id, place)
        district.version += 1
        district.added.clear()
        district.removed.clear()
        self._state.districts[district.id] = District(
            district.id,
            copy.deepcopy(district.workers),
            copy.deepcopy(district.bands),
            list(district.head),
            district.version,
        )

    async def with_queue(self) -> list[str]:
        return sorted(
            district_id
            for district_id, district in self._state.districts.items()
            if district.queue_length
        )


class InMemoryCases:
    """``Cases``: one open case per family, whoever opened it first."""

    def __init__(self, state: AllocationState, store: InMemoryAllocationStore) -> None:
        self._state = state
        self._store = store

    async def open_cases_of(self, family_ids: Sequence[str]) -> dict[str, Case]:
        wanted = set(family_ids)
        return {
            case.family_id: case
            for case in self._state.cases.values()
            if case.open and case.family_id in wanted
        }

    async def get(self, case_id: str) -> Case | None:
        return self._state.cases.get(case_id)

    async def get_many(self, case_ids: Sequence[str]) -> dict[str, Case]:
        return {
            case_id: self._state.cases[case_id]
            for case_id in case_ids
            if case_id in self._state.cases
        }

    async def open_cases_held_by(self, worker_id: str) -> list[Case]:
        return [
            case for case in self._state.cases.values() if case.open and case.worker_id == worker_id
        ]

    async def add(self, cases: Sequence[Case]) -> None:
        families: set[str] = set()
        for case in cases:
            taken = case.id in self._state.cases or case.id in self._store.state.cases
            if case.open:
                taken = taken or case.family_id in families
                taken = taken or self._state.open_case_of(case.family_id) is not None
                taken = taken or self._store.state.open_case_of(case.family_id) is not None
                families.add(case.family_id)
            if taken:
                raise ConcurrentUpdate("a family's case was opened meanwhile")
        self._store.take_positions(cases)
        for case in cases:
            self._state.cases[case.id] = case

    async def save(self, cases: Sequence[Case]) -> None:
        missing = [case.id for case in cases if case.id not in self._state.cases]
        if missing:
            raise RuntimeError(f"{len(missing)} of the cases are not stored")
        for case in cases:
            self._state.cases[case.id] = case


class InMemoryTeams:
    def __init__(self, state: AllocationState) -> None:
        self._teams = state.teams

    async def get(self, team_id: str) -> Team | None:
        return self._teams.get(team_id)

    async def add(self, team: Team) -> None:
        if team.id in self._teams:
            raise AlreadyExists(f"team {team.id} already exists")
        self._teams[team.id] = team

    async def save(self, team: Team) -> None:
        if team.id in self._teams:
            self._teams[team.id] = team

    async def any(self) -> bool:
        return bool(self._teams)


class InMemoryWorkers:
    def __init__(self, state: AllocationState) -> None:
        self._workers = state.workers

    async def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    async def of_team(self, team_id: str) -> list[Worker]:
        return [worker for worker in self._workers.values() if worker.team_id == team_id]

    async def add(self, worker: Worker) -> None:
        if worker.id in self._workers:
            raise AlreadyExists(f"worker {worker.id} already exists")
        self._workers[worker.id] = worker

    async def save(self, worker: Worker) -> None:
        if worker.id in self._workers:
            self._workers[worker.id] = worker


class InMemoryAllocationViews:
    """``AllocationViews`` over what the store has committed, read at each call, so what a
    unit of work commits shows in the next answer and what it leaves uncommitted never does.
    """

    def __init__(self, store: InMemoryAllocationStore) -> None:
        self._store = store

    async def list_teams(self, district: str | None = None) -> list[dict[str, Any]]:
        state = self._store.state
        teams = sorted(
            (team for team in state.teams.values() if district in (None, team.district)),
            key=lambda team: (team.district, team.id),
        )
        return [_team_view(state, team) for team in teams]

    async def get_team(self, team_id: str) -> dict[str, Any] | None:
        state = self._store.state
        team = state.teams.get(team_id)
        return None if team is None else _team_view(state, team)

    async def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        state = self._store.state
        worker = state.workers.get(worker_id)
        if worker is None:
            return None
        held = [c.id for c in state.cases.values() if c.open and c.worker_id == worker_id]
        return {**_worker_view(state, worker, worker.district), "case_ids": sorted(held)}

    async def queue(
        self,
        district: str | None = None,
        *,
        limit: int | None = None,
        after: QueueMark | None = None,
    ) -> tuple[list[dict[str, Any]], QueueMark | None]:
        state = self._store.state
        entries = sorted(
            (entry.district, entry.place)
            for entry in state.queue.values()
            if district in (None, entry.district)
        )
        marks: list[QueueMark] = []
        for district_id, place in entries:
            if after is not None and (district_id, place) <= (after.district, after.place):
                continue
            if limit is not None and len(marks) == limit:
                break
            counted = marks[-1] if marks else after
            number = counted.number if counted and counted.district == district_id else 0
            marks.append(QueueMark(district_id, place, number + 1))
        else:
            return self._queued(marks), None
        return self._queued(marks), marks[-1]

    def _queued(self, marks: list[QueueMark]) -> list[dict[str, Any]]:
        cases = self._store.state.cases
        return [
            {**_case_document(cases[mark.place.case_id]), "place": mark.number} for mark in marks
        ]

    async def list_cases(
        self, filters: dict[str, Any], limit: int, *, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        store = self._store
        matching = [
            document
            for document in (_case_document(case) for case in store.state.cases.values())
            if all(document.get(name) == value for name, value in filters.items())
        ]
        if "family_id" in filters:
            matching.sort(key=lambda document: store.positions[document["_id"]], reverse=True)
            return matching[:limit], None
        which = 0 if filters.get("district") is None else 1
        listed = sorted(
            (
                (store.positions[document["_id"]][which], document)
                for document in matching
                if before is None or store.positions[document["_id"]][which] <= before
            ),
            key=lambda listed: listed[0],
            reverse=True,
        )
        page = listed[:limit]
        if len(listed) <= limit or page[-1][0] == 0:
            return [document for _, document in page], None
        return [document for _, document in page], page[-1][0] - 1

    async def get_case(self, case_id: str) -> dict[str, Any] | None:
        case = self._store.state.cases.get(case_id)
        return None if case is None else _case_document(case)

    async def count_teams(self) -> int:
        return len(self._store.state.teams)


def _worker_view(state: AllocationState, worker: Worker, district_id: str) -> dict[str, Any]:
    """A worker's load is their district's to tell; one it never saw holds nothing."""
    district = state.districts.get(district_id)
    load = (district.workers if district else {}).get(worker.id) or WorkerLoad(
        worker.id, worker.team_id, 0
    )
    return {
        "id": worker.id,
        "name": worker.name,
        "team_id": worker.team_id,
        "district": worker.district,
        "fte": worker.fte,
        "caseload_cap": load.cap,
        "cap_is_own": worker.cap_override is not None,
        "open_cases": load.open_cases,
        "spare": max(0, load.spare) if worker.active else 0,
        "active": worker.active,
    }


def _team_view(state: AllocationState, team: Team) -> dict[str, Any]:
    members = sorted(
        (
            _worker_view(state, worker, team.district)
            for worker in state.workers.values()
            if worker.team_id == team.id
        ),
        key=lambda member: (not member["active"], member["id"]),
    )
    current = [member for member in members if member["active"]]
    return {
        "id": team.id,
        "name": team.name,
        "district": team.district,
        "cap_per_fte": team.cap_per_fte,
        "fte": round(sum(member["fte"] for member in current), 2),
        "capacity": sum(member["caseload_cap"] for member in current),
        "open_cases": sum(member["open_cases"] for member in current),
        "workers": members,
    }


def _case_document(case: Case) -> dict[str, Any]:
    """The case as the database keeps it, which is what the case answers are made from."""
    return {
        "_id": case.id,
        "family_id": case.family_id,
        "district": case.district,
        "team_id": case.team_id,
        "worker_id": case.worker_id,
        "status": "open" if case.open else "closed",
        "allocation": case.allocation.value,
        "kind": case.kind.value,
        "level_of_need": int(case.level_of_need),
        "referral_received_at": case.referral_received_at,
        "opening_referral_id": case.opening_referral_id,
        "referral_ids": list(case.referral_ids),
        "social_care_case_reference": case.social_care_case_reference,
        "correlation_id": case.correlation_id,
        "opened_at": case.opened_at,
        "allocated_at": case.allocated_at,
        "outcome": None if case.outcome is None else case.outcome.value,
        "closed_at": case.closed_at,
        "version": case.version,
    }


def _conforms(
    store: InMemoryAllocationStore,
) -> tuple[AllocationStore, AllocationUnitOfWork, AllocationViews]:
    return store, store.unit_of_work(), store.views()
