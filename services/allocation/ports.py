"""What the allocation use cases need from storage: repositories handed out by a unit of work.

Every repository works inside the unit of work's transaction, so a decision, the records it
changes and the events it stages are kept together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from services.allocation.domain import Band, Case, District, QueuePlace, Team, Worker
from shared.unit_of_work import OutgoingEvents, UnitOfWork


class Districts(Protocol):
    async def get(self, district_id: str) -> District:
        """One district's aggregate (``get_many`` of one)."""

    async def get_many(self, district_ids: Sequence[str]) -> dict[str, District]:
        """Each district's aggregate; a district never saved comes back empty, version 0."""

    async def band(self, district_id: str, band: Band) -> list[QueuePlace]:
        """Every queued place of one band, as saved."""

    async def front(self, district: District) -> list[QueuePlace]:
        """The queue's first places as saved, enough to refill the district's head."""

    async def save(self, district: District) -> None:
        """Save the district and its queue's changes if nobody saved it since it was read;
        else raise ``ConcurrentUpdate`` and save nothing."""

    async def with_queue(self) -> list[str]:
        """Districts where cases wait."""


class Cases(Protocol):
    async def open_cases_of(self, family_ids: Sequence[str]) -> dict[str, Case]:
        """Each family's open case, by family id."""

    async def get(self, case_id: str) -> Case | None: ...

    async def get_many(self, case_ids: Sequence[str]) -> dict[str, Case]: ...

    async def open_cases_held_by(self, worker_id: str) -> list[Case]: ...

    async def add(self, cases: Sequence[Case]) -> None:
        """Store new cases; ``ConcurrentUpdate`` when another writer opened one of their
        families' cases first (the partial unique index is the backstop)."""

    async def save(self, cases: Sequence[Case]) -> None:
        """Store changed cases, each over its earlier state."""


class Teams(Protocol):
    async def get(self, team_id: str) -> Team | None: ...

    async def add(self, team: Team) -> None:
        """Raises ``AlreadyExists`` when the id is taken."""

    async def save(self, team: Team) -> None: ...

    async def any(self) -> bool: ...


class Workers(Protocol):
    async def get(self, worker_id: str) -> Worker | None: ...

    async def of_team(self, team_id: str) -> list[Worker]: ...

    async def add(self, worker: Worker) -> None:
        """Raises ``AlreadyExists`` when the id is taken."""

    async def save(self, worker: Worker) -> None: ...


class AllocationUnitOfWork(UnitOfWork, Protocol):
    districts: Districts
    cases: Cases
    teams: Teams
    workers: Workers

    @property
    def events(self) -> OutgoingEvents: ...


class AllocationStore(Protocol):
    """Where the allocation service keeps its records: it hands out units of work."""

    async def ensure_indexes(self) -> None:
        """Make ready whatever the store needs before the first unit of work; safe to repeat."""

    def unit_of_work(self, session: Any = None) -> AllocationUnitOfWork:
        """A new unit of work; given ``session`` (a consumer's transaction, opaque here), it
        joins that transaction and leaves committing to its owner."""

    def views(self) -> AllocationViews:
        """What managers read of the records the units of work commit."""


class QueueMark(NamedTuple):
    """Where a page of the queue stopped: the last case's district, its place in the order
    cases are allocated, and its place number, which the next page counts on from."""

    district: str
    place: QueuePlace
    number: int


class AllocationViews(Protocol):
    """What managers read: teams, workers, the queue and cases, as answer documents.

    Committed records only, read outside any unit of work: a view may lag a decision by a
    moment, never show one half made.
    """

    async def list_teams(self, district: str | None = None) -> list[dict[str, Any]]:
        """Each team (of ``district``) with its workers' loads, by district then id."""

    async def get_team(self, team_id: str) -> dict[str, Any] | None:
        """The team as ``list_teams`` shows it; None when there is none."""

    async def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        """The worker as a team shows them, with ``case_ids``, their open cases' ids."""

    async def queue(
        self,
        district: str | None = None,
        *,
        limit: int | None = None,
        after: QueueMark | None = None,
    ) -> tuple[list[dict[str, Any]], QueueMark | None]:
        """Queued cases' documents, each with ``place``, its place in its district's queue
        (1 is next), by district then allocation order: up to ``limit`` of them (all when
        None) after the one ``after`` marks; and the mark of the last, when more follow."""

    async def list_cases(
        self, filters: dict[str, Any], limit: int, *, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` case documents equal to ``filters`` field by field, newest
        opened first, ties by id, from the list's position ``before`` down (the newest
        when None); and the position the next page starts at, None when none is left. A
        page of a filtered list may hold fewer than ``limit`` and have a next."""

    async def get_case(self, case_id: str) -> dict[str, Any] | None: ...

    async def count_teams(self) -> int:
        """How many teams there are: none means referrals can only queue."""
