"""What the reporting use cases need from storage and the outbox, and the values that cross.

The projection and the snapshots write different documents on purpose (see ``store.py``):
``Projections`` counts a month's changes, ``Snapshots`` records what each snapshot covered,
so neither can undo the other's write when both commit at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.reporting.domain import Fact, FactKey, Increment, MonthKey, MonthTotals
from shared.events import EventData
from shared.unit_of_work import OutgoingEvents, UnitOfWork


@dataclass(frozen=True)
class DueSnapshot:
    """A month and district whose figures changed since their last ``performance-snapshot``,
    with the count of changes as read before the figures are computed: a change committed
    later is left for the next snapshot, never lost."""

    key: str
    month: str
    district: str
    changes: int
    version: int
    """The version of the last snapshot (0 when none was published)."""
    first: bool
    """No snapshot was published yet, so claiming it is an insert."""


class Projections(Protocol):
    async def project(self, events: Sequence[EventData], *, now: datetime) -> int:
        """Record the facts the events state, in order, and count a change for each month
        and district whose figures they moved (``now`` says which month is the current);
        how many of the events changed a fact (the rest were applied before)."""


class ReadModels(Protocol):
    """The aggregates the projection keeps, as the reports read them: by id, whatever the
    history."""

    async def totals(
        self, wanted: Sequence[tuple[str, str | None]], *, now: datetime
    ) -> list[MonthTotals]:
        """The aggregates of each (month, district) wanted (the whole county when the district
        is None), in the order wanted: one read of the months' and one of the districts'."""

    async def months(self) -> list[str]:
        """Every month a referral, rejection, allocation or audit falls in, ascending: the
        months that have figures of their own, for the dashboard's picker."""

    async def districts(self) -> list[str]:
        """Every district a referral, case or team is in, ascending."""


class ReadModelStore(Protocol):
    """The read models as a whole: what a rebuild drops and the service indexes at start."""

    async def ensure_indexes(self) -> None: ...

    async def drop_all(self) -> None:
        """Forget every fact, aggregate, change count and published snapshot."""

    async def load(self, facts: Mapping[FactKey, Fact]) -> set[FactKey]:
        """Store ``facts`` as new, in bulk, outside any transaction: a rebuild's, after the
        drop. Any the live projection stored meanwhile is left as it is, and returned."""

    async def add_up(
        self, increments: Mapping[Increment, int], touched: Iterable[MonthKey], *, now: datetime
    ) -> None:
        """Add ``increments`` to the aggregates (a rebuild's: each inserted whole where none
        is stored), and count a change of the figures ``touched`` moved (``domain.marked``),
        for the snapshots."""


class Snapshots(Protocol):
    async def due(self, interval_s: float, *, now: datetime) -> list[DueSnapshot]:
        """Month/districts with changes no snapshot covered, whose last snapshot is at least
        ``interval_s`` old at ``now`` (a first snapshot is due at once), in no set order."""

    async def claim(self, due: DueSnapshot, *, now: datetime) -> int | None:
        """Take ``due`` for publication: its new version, or None when another replica took
        it first (the version it read having moved on); then the unit of work is to be left
        without commit, as its transaction may have ended."""


class ReportingUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the repositories a use case writes together."""

    @property
    def projections(self) -> Projections: ...

    @property
    def snapshots(self) -> Snapshots: ...

    @property
    def events(self) -> OutgoingEvents: ...


class ReportingStore(ReadModelStore, Protocol):
    """Everything the reporting service keeps, as its composition root hands it out: the
    read side outside any transaction, and units of work for the writes made together."""

    @property
    def read_models(self) -> ReadModels: ...

    @property
    def snapshots(self) -> Snapshots:
        """The snapshots outside any transaction: to find which are ``due``."""

    def unit_of_work(self) -> ReportingUnitOfWork:
        """A unit of work of its own transaction."""
