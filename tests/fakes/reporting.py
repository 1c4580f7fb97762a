"""In-memory fakes of the reporting service's ports, held to the Mongo adapters by
``tests/contract/test_reporting_store.py``.

The facts and aggregates are kept as the adapters keep theirs: one fact per thing that
happened under its own id, and the aggregates by id, changed by the domain's projection, so
a redelivered or out-of-order event lands as it does in Mongo. A commit keeps each fact,
aggregate, mark or snapshot record this unit of work changed over what others committed
meanwhile, and clashes only where both changed the same one, as two transactions writing
different documents do not clash.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self

from services.reporting import domain
from services.reporting.domain import ALL_DISTRICTS, MonthTotals
from services.reporting.ports import DueSnapshot, ReportingUnitOfWork
from shared.events import EventData, RawEvent
from shared.unit_of_work import ConcurrentUpdate, retrying
from tests.fakes.units import InMemoryOutgoingEvents, InMemoryStore, InMemoryUnitOfWork, StagedEvent

Fact = dict[str, Any]


@dataclass
class ReportingState:
    """Every fact, aggregate, change mark, published snapshot and applied event, by id."""

    referral: dict[str, Fact] = field(default_factory=dict)
    rejection: dict[str, Fact] = field(default_factory=dict)
    allocation: dict[str, Fact] = field(default_factory=dict)
    case: dict[str, Fact] = field(default_factory=dict)
    capacity: dict[str, Fact] = field(default_factory=dict)
    audit: dict[str, Fact] = field(default_factory=dict)
    monthly: dict[str, Fact] = field(default_factory=dict)
    standing: dict[str, Fact] = field(default_factory=dict)
    marks: dict[str, Fact] = field(default_factory=dict)
    published: dict[str, Fact] = field(default_factory=dict)
    applied: dict[str, Fact] = field(default_factory=dict)

    def collections(self) -> dict[str, dict[str, Fact]]:
        return {each.name: getattr(self, each.name) for each in fields(self)}


READ_MODELS = (*domain.FACT_KINDS, domain.MONTHLY, domain.STANDING, "marks", "published")
"""What ``drop_all`` forgets: everything but the applied events."""

State = Callable[[], ReportingState]
"""The state a repository works on, looked up at each call: a commit replaces it."""


class InMemoryProjections:
    def __init__(self, state: State) -> None:
        self._state = state

    async def project(self, events: Sequence[EventData], *, now: datetime) -> None:
        state = self._state()
        collections = state.collections()
        known = {
            (kind, fact_id): copy.deepcopy(collections[kind][fact_id])
            for data in events
            for kind, fact_id in domain.fact_keys(data)
            if fact_id in collections[kind]
        }
        projection = domain.project(events, known)
        for (kind, fact_id), fact in projection.facts.items():
            collections[kind][fact_id] = copy.deepcopy(fact)
        for (kind, aggregate_id, path), count in projection.increments.items():
            _increment(collections[kind].setdefault(aggregate_id, {}), path, count)
        for month, district in domain.marked(projection.touched, now=now):
            key = domain.month_id(month, district)
            mark = state.marks.setdefault(key, {"month": month, "district": district})
            mark["changes"] = mark.get("changes", 0) + 1


def _increment(document: Fact, path: str, count: int) -> None:
    """``$inc`` on a dotted path, as the database applies it."""
    *parents, name = path.split(".")
    for parent in parents:
        document = document.setdefault(parent, {})
    document[name] = document.get(name, 0) + count


class InMemoryReadModels:
    """The aggregates standing in the committed state, read by id as the Mongo adapter's are."""

    def __init__(self, state: State) -> None:
        self._state = state

    async def totals(
        self, wanted: Sequence[tuple[str, str | None]], *, now: datetime
    ) -> list[MonthTotals]:
        state = self._state()
        return [
            MonthTotals(
                month=month,
                district=district,
                now=now,
                counters=copy.deepcopy(
                    state.monthly.get(domain.month_id(month, district or ALL_DISTRICTS), {})
                ),
                standing=copy.deepcopy(state.standing.get(district or ALL_DISTRICTS, {})),
            )
            for month, district in wanted
        ]

    async def months(self) -> list[str]:
        return domain.listed(self._state().standing.get(ALL_DISTRICTS, {}).get("months"))

    async def districts(self) -> list[str]:
        return domain.listed(self._state().standing.get(ALL_DISTRICTS, {}).get("districts"))


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
