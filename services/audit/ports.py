"""What the audit use cases need from storage: repositories, handed out by a unit of work
that stores everything a use case changed (and the events it stages) together or not at all."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.audit.domain import Audit, Auditor, AuditStatus, CaseState, DrawRecord, DrawRound
from shared.unit_of_work import OutgoingEvents, UnitOfWork


class AuditNotOpen(Exception):
    """The audit was completed (or reassigned) by another request first."""


class CaseRepository(Protocol):
    """The population of cases, as projected from case-allocated and case-closed."""

    async def get_many(self, case_ids: Collection[str]) -> dict[str, CaseState]:
        """The known cases among ``case_ids``, by id."""

    async def save_many(self, cases: Sequence[CaseState]) -> None:
        """Store each case as given, in place of what was known of it."""

    async def allocated_before(self, at: datetime) -> list[CaseState]:
        """Cases first allocated before ``at``: the most a month's draw can choose from."""


class AuditorRepository(Protocol):
    async def all(self) -> list[Auditor]:
        """Every auditor, active or not, by id."""

    async def get(self, auditor_id: str) -> Auditor | None: ...

    async def add(self, auditor: Auditor, *, now: datetime) -> bool:
        """False, changing nothing, when the id is taken."""

    async def save(self, auditor: Auditor, *, now: datetime) -> None:
        """Store a registered auditor as changed; an unknown id is left unknown (``add``)."""

    async def count(self) -> int: ...


AuditPlace = tuple[str, str, str]
"""Where a list of audits stopped: the last one's month, auditor and id."""


class AuditRepository(Protocol):
    async def get(self, audit_id: str) -> Audit | None: ...

    async def of_month(self, month: str) -> list[Audit]:
        """Every audit drawn for ``month``, in no particular order."""

    async def find(
        self,
        *,
        month: str | None,
        auditor_id: str | None,
        status: AuditStatus | None,
        now: datetime,
        limit: int,
        after: AuditPlace | None = None,
    ) -> tuple[list[Audit], AuditPlace | None]:
        """At most ``limit`` audits of drawn months matching every filter given, after the
        place ``after`` names: newest month first, then by auditor and id; ``status`` as it
        stands at ``now``. And the place to go on from, or None at the end."""

    async def assigned_per_auditor(self, month: str) -> dict[str, int]:
        """How many audits of ``month`` each auditor holds, completed or not."""

    async def cases_drawn(self, months: Sequence[str]) -> set[str]:
        """The ids of the cases drawn in any of ``months``."""

    async def add(self, audits: Sequence[Audit]) -> None:
        """Store newly drawn audits: a month draws each case for one audit at most."""

    async def complete(self, audit: Audit) -> None:
        """Store the completed ``audit``'s grades and completion time.

        Raises ``AuditNotOpen`` (changing nothing) when it is no longer assigned (or was
        never drawn). Two completions of one audit at once both write it, so one unit of
        work fails with ``ConcurrentUpdate``; run again, it finds the audit completed.
        """


class DrawRepository(Protocol):
    async def get(self, month: str) -> DrawRecord | None: ...

    async def newest_first(self) -> list[DrawRecord]:
        """Every month's draw, the latest month first."""

    async def add_round(self, month: str, round_: DrawRound) -> DrawRecord:
        """Record a round of ``month``'s draw after those before it (the first one records
        the month's seed and when it was first drawn); the month's record as it now stands.

        Two draws of one month at once cannot both assign: both write the month's record,
        so one unit of work fails with ``ConcurrentUpdate`` and is retried on the other's
        result.
        """


class AuditUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the audit service's data and its outbox."""

    @property
    def cases(self) -> CaseRepository: ...

    @property
    def auditors(self) -> AuditorRepository: ...

    @property
    def audits(self) -> AuditRepository: ...

    @property
    def draws(self) -> DrawRepository: ...

    @property
    def events(self) -> OutgoingEvents: ...


class AuditStore(Protocol):
    """The audit service's storage: a new unit of work for each use case to run in."""

    async def ensure_indexes(self) -> None: ...

    def unit_of_work(self, session: Any = None) -> AuditUnitOfWork:
        """A transaction of its own; or, given a consumer's ``session``, one joined to that
        transaction (which records the events processed), whose owner commits it."""
