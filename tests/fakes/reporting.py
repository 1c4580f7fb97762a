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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from services.reporting import domain
from services.reporting.domain import ALL_DISTRICTS, MonthTotals
from services.reporting.ports import DueSnapshot
from shared.events import EventData
from shared.unit_of_work import ConcurrentUpdate
from tests.fakes.units import InMemoryStore, InMemoryUnitOfWork, StagedEvent

Fact = dict[str, Any]


@dataclass
class ReportingState:
    """Every fact, aggregate, change mark and published snapshot, by id."""

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

    def collections(self) -> dict[str, dict[str, Fact]]:
        return {each.name: getattr(self, each.name) for each in fields(self)}


READ_MODELS = (*domain.FACT_KINDS, domain.MONTHLY, domain.STANDING, "marks", "published")
"""What ``drop_all`` forgets: everything."""

State = Callable[[], ReportingState]
"""The state a repository works on, looked up at each call: a commit replaces it."""


class InMemoryProjections:
    def __init__(self, state: State) -> None:
        self._state = state

    async def project(self, events: Sequence[EventData], *, now: datetime) -> int:
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
        add_up(state, projection.increments, projection.touched, now=now)
        return projection.changed_by


def add_up(
    state: ReportingState,
    increments: Mapping[domain.Increment, int],
    touched: Iterable[domain.MonthKey],
    *,
    now: datetime,
) -> None:
    collections = state.collections()
    for (kind, aggregate_id, path), count in increments.items():
        increment(collections[kind].setdefault(aggregate_id, {}), path, count)
    for month, district in domain.marked(touched, now=now):
        key = domain.month_id(month, district)
        mark = state.marks.setdefault(key, {"month": month, "district": district})
        mark["changes"] = mark.get("changes", 0) + 1


def increment(document: Fact, path: str, count: int) -> None:
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

    def unit_of_work(self) -> InMemoryReportingUnitOfWork:
        return InMemoryReportingUnitOfWork(self)

    async def ensure_indexes(self) -> None:
        """Nothing to index in memory."""

    async def drop_all(self) -> None:
        for name in READ_MODELS:
            getattr(self.state, name).clear()

    async def load(self, facts: Mapping[domain.FactKey, Fact]) -> set[domain.FactKey]:
        collections = self.state.collections()
        stored = {(kind, fact_id) for kind, fact_id in facts if fact_id in collections[kind]}
        for (kind, fact_id), fact in facts.items():
            if (kind, fact_id) not in stored:
                collections[kind][fact_id] = copy.deepcopy(fact)
        return stored

    async def add_up(
        self,
        increments: Mapping[domain.Increment, int],
        touched: Iterable[domain.MonthKey],
        *,
        now: datetime,
    ) -> None:
        add_up(self.state, increments, touched, now=now)

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
