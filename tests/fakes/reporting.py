"""In-memory fakes of the reporting service's ports, held to the Mongo adapters by
``tests/contract/test_reporting_store.py``.

The facts are kept as the adapters keep theirs, one per thing that happened under the
thing's own id, so a redelivered or out-of-order event lands as it does in Mongo. A commit
keeps each fact, mark or snapshot record this unit of work changed over what others
committed meanwhile, and clashes only where both changed the same one, as two transactions
writing different documents do not clash.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self

from services.reporting.domain import ALL_DISTRICTS, MonthFacts
from services.reporting.ports import DueSnapshot, ReportingUnitOfWork
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
from shared.months import month_end, month_of, month_start
from shared.unit_of_work import ConcurrentUpdate, retrying
from tests.fakes.units import InMemoryOutgoingEvents, InMemoryStore, InMemoryUnitOfWork, StagedEvent

Fact = dict[str, Any]
MonthKey = tuple[str, str]


@dataclass
class ReportingState:
    """Every fact, change mark, published snapshot and applied event, each by its id."""

    referrals: dict[str, Fact] = field(default_factory=dict)
    rejections: dict[str, Fact] = field(default_factory=dict)
    allocations: dict[str, Fact] = field(default_factory=dict)
    cases: dict[str, Fact] = field(default_factory=dict)
    capacity: dict[str, Fact] = field(default_factory=dict)
    audits: dict[str, Fact] = field(default_factory=dict)
    marks: dict[str, Fact] = field(default_factory=dict)
    published: dict[str, Fact] = field(default_factory=dict)
    applied: dict[str, Fact] = field(default_factory=dict)

    def collections(self) -> dict[str, dict[str, Fact]]:
        return {each.name: getattr(self, each.name) for each in fields(self)}


READ_MODELS = (
    "referrals",
    "rejections",
    "allocations",
    "cases",
    "capacity",
    "audits",
    "marks",
    "published",
)
"""What ``drop_all`` forgets: everything but the applied events."""

State = Callable[[], ReportingState]
"""The state a repository works on, looked up at each call: a commit replaces it."""


class InMemoryProjections:
    def __init__(self, state: State) -> None:
        self._state = state

    async def project(self, events: Sequence[EventData], *, now: datetime) -> None:
        state = self._state()
        touched: set[MonthKey] = set()
        for data in events:
            touched.update(_record(state, data))
        current = month_of(now)
        marked = set(touched)
        marked |= {(current, district) for month, district in touched if month < current}
        marked |= {(month, ALL_DISTRICTS) for month, _ in marked}
        for month, district in marked:
            key = f"{month}|{district}"
            mark = state.marks.setdefault(key, {"month": month, "district": district})
            mark["changes"] = mark.get("changes", 0) + 1


def _record(state: ReportingState, data: EventData) -> list[MonthKey]:
    match data:
        case ReferralReceived():
            _upsert(
                state.referrals,
                data.referral_id,
                month=month_of(data.received_at),
                district=data.district,
                source=data.referral_source,
                route=data.route,
                decision=data.decision.value,
                re_referral=data.is_re_referral,
                step_down=data.is_step_down,
                received_at=data.received_at,
            )
            return [(month_of(data.received_at), data.district)]
        case ReferralRejected():
            _upsert(
                state.rejections,
                data.rejection_id,
                month=month_of(data.received_at),
                partner_id=data.partner_id,
                codes=sorted({reason.code for reason in data.reasons}),
                received_at=data.received_at,
            )
            return [(month_of(data.received_at), ALL_DISTRICTS)]
        case CaseAllocated():
            return _allocation(state, data)
        case CaseClosed():
            _upsert(
                state.cases,
                data.case_id,
                district=data.district,
                closed_at=data.closed_at,
                outcome=data.outcome.value,
            )
            return [(month_of(data.closed_at), data.district)]
        case TeamCapacityChanged():
            _upsert(
                state.capacity,
                f"{data.team_id}|{data.changed_at.isoformat()}",
                team_id=data.team_id,
                district=data.district,
                capacity=data.capacity,
                changed_at=data.changed_at,
            )
            return [(month_of(data.changed_at), data.district)]
        case AuditAssigned():
            _upsert(
                state.audits,
                data.audit_id,
                month=data.month,
                district=data.district,
                team_id=data.team_id,
                assigned_at=data.assigned_at,
                due_by=data.due_by,
            )
            return [(data.month, data.district), (data.month, ALL_DISTRICTS)]
        case AuditCompleted():
            _upsert(
                state.audits,
                data.audit_id,
                month=data.month,
                district=data.district,
                team_id=data.team_id,
                completed_at=data.completed_at,
                overall_grade=data.overall_grade.value,
            )
            return [(data.month, data.district), (data.month, ALL_DISTRICTS)]
    raise TypeError(f"no projection for {type(data).__name__}")


def _allocation(state: ReportingState, data: CaseAllocated) -> list[MonthKey]:
    at = data.allocated_at
    case = _upsert(state.cases, data.case_id, district=data.district)
    if data.team_id is not None:
        case.setdefault("teams", {})[at] = data.team_id
    first = "allocated_at" if data.status is AllocationStatus.ALLOCATED else "queued_at"
    case[first] = min(case.get(first, at), at)
    if data.kind is AllocationKind.CO_WORKING and data.reallocated_from_worker_id is None:
        _upsert(state.referrals, data.referral_id, co_working=True)
    if data.status is AllocationStatus.ALLOCATED and data.reallocated_from_worker_id is None:
        state.allocations.setdefault(
            f"{data.case_id}|{data.referral_id}",
            {
                "_id": f"{data.case_id}|{data.referral_id}",
                "month": month_of(at),
                "district": data.district,
                "team_id": data.team_id,
                "kind": data.kind.value,
                "seconds": data.time_to_allocation_seconds,
                "allocated_at": at,
            },
        )
    return [(month_of(at), data.district)]


def _upsert(facts: dict[str, Fact], key: str, **values: Any) -> Fact:
    fact = facts.setdefault(key, {"_id": key})
    fact.update(values)
    return fact


class InMemoryReadModels:
    """The facts standing in the committed state, read as the Mongo adapter's queries do."""

    def __init__(self, state: State) -> None:
        self._state = state

    async def month_facts(self, month: str, district: str | None, *, now: datetime) -> MonthFacts:
        state = self._state()
        start, end = month_start(month), month_end(month)

        def here(facts: dict[str, Fact]) -> list[Fact]:
            return [
                copy.deepcopy(fact)
                for fact in facts.values()
                if district is None or fact.get("district") == district
            ]

        def before_end(case: Fact, name: str) -> bool:
            return case.get(name) is not None and case[name] < end

        def open_at_end(case: Fact) -> bool:
            return not before_end(case, "closed_at")

        cases = here(state.cases)
        capacity: dict[str, Fact] = {}
        changes = [change for change in here(state.capacity) if change["changed_at"] < end]
        for change in sorted(changes, key=lambda change: change["changed_at"]):
            capacity[change["team_id"]] = change
        return MonthFacts(
            month=month,
            district=district,
            referrals=[fact for fact in here(state.referrals) if fact.get("month") == month],
            rejections=(
                [copy.deepcopy(f) for f in state.rejections.values() if f["month"] == month]
                if district is None
                else []
            ),
            allocations=[fact for fact in here(state.allocations) if fact["month"] == month],
            closures=_with_teams(
                [
                    case
                    for case in cases
                    if case.get("closed_at") is not None and start <= case["closed_at"] < end
                ]
            ),
            open_at_end=_with_teams(
                [case for case in cases if before_end(case, "allocated_at") and open_at_end(case)]
            ),
            queued_at_end=[
                case
                for case in cases
                if before_end(case, "queued_at")
                and not before_end(case, "allocated_at")
                and open_at_end(case)
            ],
            capacity_at_end=capacity,
            audits=[fact for fact in here(state.audits) if fact.get("month") == month],
            now=now,
        )

    async def months(self) -> list[str]:
        state = self._state()
        found = {
            fact["month"]
            for facts in (state.referrals, state.rejections, state.allocations, state.audits)
            for fact in facts.values()
            if "month" in fact
        }
        return sorted(found)

    async def districts(self) -> list[str]:
        state = self._state()
        found = {
            fact["district"]
            for facts in (state.referrals, state.cases, state.capacity)
            for fact in facts.values()
            if fact.get("district")
        }
        return sorted(found)


def _with_teams(cases: list[Fact]) -> list[Fact]:
    for case in cases:
        if teams := case.get("teams"):
            case["team_id"] = teams[max(teams)]
    return cases


class InMemorySnapshots:
    """The change marks the projection counts, against what each published snapshot covered."""

    def __init__(self, state: State) -> None:
        self._state = state

    async def due(self, interval_s: float, *, now: datetime) -> list[DueSnapshot]:
        state = self._state()
        quiet_since = now - timedelta(seconds=interval_s)
        due = []
        for key, mark in state.marks.items():
            last = state.published.get(key)
            if last is None:
                due.append(_due(key, mark, first=True, version=0))
            elif mark["changes"] > last["changes"] and last["published_at"] <= quiet_since:
                due.append(_due(key, mark, first=False, version=last["version"]))
        return due

    async def claim(self, due: DueSnapshot, *, now: datetime) -> int | None:
        published = self._state().published
        last = published.get(due.key)
        taken = last is not None if due.first else last is None or last["version"] != due.version
        if taken:
            return None
        version = due.version + 1
        published[due.key] = {"version": version, "changes": due.changes, "published_at": now}
        return version


def _due(key: str, mark: Fact, *, first: bool, version: int) -> DueSnapshot:
    return DueSnapshot(
        key=key,
        month=mark["month"],
        district=mark["district"],
        changes=mark["changes"],
        version=version,
        first=first,
    )


class InMemoryReportingUnitOfWork(InMemoryUnitOfWork[ReportingState]):
    projections: InMemoryProjections
    snapshots: InMemorySnapshots

    def opened(self) -> None:
        self.projections = InMemoryProjections(lambda: self.state)
        self.snapshots = InMemorySnapshots(lambda: self.state)


class InMemoryJoinedUnitOfWork:
    """The unit of work the record of applied events opened, as the use case is handed it:
    the record's owner commits it, with the record, once the use case is done."""

    def __init__(self, owner: InMemoryReportingUnitOfWork) -> None:
        self._owner = owner

    @property
    def projections(self) -> InMemoryProjections:
        return self._owner.projections

    @property
    def snapshots(self) -> InMemorySnapshots:
        return self._owner.snapshots

    @property
    def events(self) -> InMemoryOutgoingEvents:
        return self._owner.events

    async def __aenter__(self) -> Self:
        return self

    async def commit(self) -> None:
        """The owner's to do, after recording the events."""

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


class InMemoryAppliedEvents:
    def __init__(self, store: InMemoryReportingStore) -> None:
        self._store = store

    async def apply_new(
        self,
        events: Sequence[RawEvent],
        apply: Callable[[ReportingUnitOfWork, list[int]], Awaitable[None]],
    ) -> int:
        return await retrying(partial(self._apply_once, events, apply))

    async def _apply_once(
        self,
        events: Sequence[RawEvent],
        apply: Callable[[ReportingUnitOfWork, list[int]], Awaitable[None]],
    ) -> int:
        async with self._store.unit_of_work() as uow:
            keys = [f"{event.source}|{event.id}" for event in events]
            seen = set(uow.state.applied)
            fresh = []
            for index, key in enumerate(keys):
                if key not in seen:
                    seen.add(key)
                    fresh.append(index)
            if not fresh:
                return 0
            await apply(InMemoryJoinedUnitOfWork(uow), fresh)
            for index in fresh:
                uow.state.applied[keys[index]] = {"type": events[index].type}
            await uow.commit()
        return len(fresh)

    async def forget_all(self) -> None:
        self._store.state.applied.clear()


class InMemoryReportingStore(InMemoryStore[ReportingState]):
    """Everything the reporting service keeps, in memory: the counterpart of
    ``MongoReportingStore``."""

    def __init__(self) -> None:
        super().__init__(ReportingState())

    @property
    def read_models(self) -> InMemoryReadModels:
        return InMemoryReadModels(lambda: self.state)

    @property
    def snapshots(self) -> InMemorySnapshots:
        return InMemorySnapshots(lambda: self.state)

    @property
    def applied(self) -> InMemoryAppliedEvents:
        return InMemoryAppliedEvents(self)

    def unit_of_work(self) -> InMemoryReportingUnitOfWork:
        return InMemoryReportingUnitOfWork(self)

    async def ensure_indexes(self) -> None:
        """Nothing to index in memory."""

    async def drop_all(self) -> None:
        for name in READ_MODELS:
            getattr(self.state, name).clear()

    def check(self, read: ReportingState, mine: ReportingState) -> None:
        clashes = _changes(read, mine) & _changes(read, self.state)
        if clashes:
            raise ConcurrentUpdate(f"changed meanwhile: {sorted(clashes)}")

    def committed(
        self, mine: ReportingState, events: Sequence[StagedEvent], *, read: ReportingState
    ) -> None:
        """Keep what ``mine`` changed since ``read`` over what is committed now."""
        self.check(read, mine)
        merged = copy.deepcopy(self.state)
        for name, key in _changes(read, mine):
            facts, fact = merged.collections()[name], mine.collections()[name].get(key)
            if fact is None:
                facts.pop(key, None)
            else:
                facts[key] = copy.deepcopy(fact)
        super().committed(merged, events, read=self.state)


def _changes(before: ReportingState, after: ReportingState) -> set[tuple[str, str]]:
    """(collection, id) of every document that differs between the two."""
    changed: set[tuple[str, str]] = set()
    for name, was in before.collections().items():
        now = after.collections()[name]
        changed.update((name, key) for key in was | now if was.get(key) != now.get(key))
    return changed
