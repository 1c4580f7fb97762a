"""Projection rules: which counters an event moves, as pure functions.

Counters are kept per month (of the fact, not of its processing) and district, so a
replayed stream rebuilds the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.events import (
    AllocationStatus,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    ReferralReceived,
    ReferralRejected,
    ScreeningDecision,
)

UNKNOWN_DISTRICT = "unknown"


@dataclass(frozen=True)
class FigureChange:
    """Counters to add to one month and district's figures."""

    month: str
    district: str
    increments: dict[str, int] = field(default_factory=dict)


def month_of(at: datetime) -> str:
    """The calendar month in UTC, so every service puts a late-evening fact in one month."""
    return at.astimezone(UTC).strftime("%Y-%m")


def figures_for(data: EventData) -> FigureChange:
    """The counters an event adds to its month and district."""
    match data:
        case ReferralReceived():
            counts = {
                "referrals_received": 1,
                f"by_source.{data.referral_source}": 1,
                f"by_route.{data.route}": 1,
                _decision_counter(data.decision): 1,
            }
            if data.is_step_down:
                counts["step_downs"] = 1
            if data.is_re_referral:
                counts["re_referrals"] = 1
            return FigureChange(month_of(data.received_at), data.district, counts)
        case ReferralRejected():
            counts = {"referrals_rejected": 1}
            for code in sorted({reason.code for reason in data.reasons}):
                counts[f"rejections_by_reason.{code}"] = 1
            return FigureChange(month_of(data.received_at), UNKNOWN_DISTRICT, counts)
        case CaseAllocated():
            counts = {
                "cases_allocated"
                if data.status is AllocationStatus.ALLOCATED
                else "cases_queued": 1,
                f"allocations_by_kind.{data.kind.value}": 1,
            }
            return FigureChange(month_of(data.allocated_at), data.district, counts)
        case CaseClosed():
            counts = {"cases_closed": 1, f"closures_by_outcome.{data.outcome.value}": 1}
            return FigureChange(month_of(data.closed_at), data.district, counts)
        case AuditCompleted():
            counts = {"audits_completed": 1, f"grades.{data.overall_grade.value}": 1}
            return FigureChange(data.month, data.district, counts)
    raise TypeError(f"no projection for {type(data).__name__}")


def _decision_counter(decision: ScreeningDecision) -> str:
    return {
        ScreeningDecision.SIGNPOST: "signposted",
        ScreeningDecision.EARLY_HELP: "accepted_for_early_help",
        ScreeningDecision.STEP_UP: "stepped_up",
    }[decision]


Counts = dict[str, "int | Counts"]


def add_counts(total: Counts, counts: Counts) -> None:
    """Add nested counters (``{"by_source": {"2A": 3}}``) into ``total``."""
    for name, value in counts.items():
        if isinstance(value, dict):
            branch = total.setdefault(name, {})
            assert isinstance(branch, dict)
            add_counts(branch, value)
        else:
            current = total.get(name, 0)
            assert isinstance(current, int)
            total[name] = current + value
