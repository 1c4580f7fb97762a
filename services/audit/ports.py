"""What the audit use cases need from storage, and the values that cross that line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.audit.domain import Auditor, CaseState, DrawOutcome
from shared.events import AuditCompleted


@dataclass(frozen=True)
class DrawInputs:
    """Everything a month's draw depends on, read in the draw's own transaction."""

    month: str
    recorded_seed: int | None
    auditors: list[Auditor]
    already_assigned: dict[str, int]
    recently_drawn: set[str]
    population: list[CaseState]


@dataclass(frozen=True)
class DrawDecision:
    seed: int
    outcome: DrawOutcome


@dataclass(frozen=True)
class DrawRecord:
    """A month's draw: the seed it was first drawn with and each round that filled it."""

    month: str
    seed: int
    drawn_at: datetime
    rounds: list[dict[str, Any]] = field(default_factory=list)
    new_audit_ids: list[str] = field(default_factory=list)
    first_round: bool = False


class AuditNotOpen(Exception):
    """The audit was completed (or reassigned) by another request first."""


class AuditStore(Protocol):
    async def draw(
        self, month: str, decide: Callable[[DrawInputs], DrawDecision], *, now: datetime
    ) -> DrawRecord:
        """Read the inputs, decide and store the new assignments, all in one transaction.

        Two draws of one month at once cannot both assign: the draw record is written by
        both, so one transaction conflicts and is retried against the other's result.
        """

    async def get_draw(self, month: str) -> DrawRecord | None: ...

    async def get_audit(self, audit_id: str) -> dict[str, Any] | None: ...

    async def complete(
        self,
        audit_id: str,
        changes: dict[str, Any],
        event: AuditCompleted,
        *,
        correlation_id: str,
    ) -> None:
        """Mark the audit completed and stage ``audit-completed`` together.

        Raises ``AuditNotOpen`` (changing nothing) when it is no longer assigned.
        """

    async def auditors(self) -> list[Auditor]: ...

    async def month_audits(self, month: str) -> list[dict[str, Any]]: ...
