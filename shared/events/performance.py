"""Reporting's event: a district's monthly figures, and the report they are the figures of.

``MonthlyReport`` is both what ``GET /reports/monthly`` answers and what a
``performance-snapshot`` carries, so a consumer of either reads one shape. A ratio is null
when what it divides by is zero (no requests, no capacity), and a waiting time is null when
nothing was allocated: not a zero the month did not have.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import EventData, examples_of
from shared.months import Month


class Figures(BaseModel):
    """Part of a monthly report. Readers ignore measures they do not know (tolerant reader)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class RequestFigures(Figures):
    total: int = Field(
        ge=0,
        description="Requests received in the month and found valid (rejections are"
        " counted under outcomes).",
    )
    by_source: dict[str, int] = Field(
        description="Requests by Children in Need census referral-source code."
    )
    by_route: dict[str, int] = Field(description="Requests by referral route.")
    schools: int = Field(ge=0, description="Requests from schools (referral source 2A).")
    schools_share: float | None = Field(
        description="Schools' share of the requests, to 4 places; null with no requests."
    )


class OutcomeFigures(Figures):
    accepted_for_early_help: int = Field(ge=0, description="Requests screened for Early Help.")
    stepped_up: int = Field(ge=0, description="Requests stepped up to Children's Social Care.")
    signposted: int = Field(ge=0, description="Requests signposted to other services.")
    rejected: int = Field(ge=0, description="Requests rejected as invalid.")
    rejected_by_reason: dict[str, int] = Field(
        description="Rejections by reason code; a rejection with several reasons counts under each."
    )


class ReReferralFigures(Figures):
    count: int = Field(
        ge=0, description="Requests for a family whose last case closed within 12 months."
    )
    rate: float | None = Field(
        description="Re-referrals' share of the requests, to 4 places; null with no requests."
    )


class AllocationFigures(Figures):
    count: int = Field(
        ge=0,
        description="Cases given a worker in the month: referrals that opened a case (standard,"
        " step-down or co-working). Referrals that joined a case already open are not counted"
        " here but under ``joined_open_case``.",
    )
    joined_open_case: int | None = Field(
        default=None,
        ge=0,
        description="Referrals that joined a case already open, so no new case was given a"
        " worker; null in snapshots before version 3, which counted them under ``count``.",
    )
    median_hours: float | None = Field(
        description="Median hours from the front door to allocation over the cases given a"
        " worker (joins left out), to 2 places (waits kept to the second below an hour, to"
        " the minute above); null with no allocations."
    )
    p90_hours: float | None = Field(
        description="90th percentile of those hours, to 2 places; null with no allocations."
    )
    queued_at_month_end: int = Field(ge=0, description="Cases waiting for a worker at month end.")


class CaseloadFigures(Figures):
    open_at_month_end: int = Field(ge=0, description="Cases open at month end.")
    capacity: int | None = Field(
        ge=0,
        description="Families the teams could hold at month end; null before any team's"
        " capacity was recorded (no data, not no places).",
    )
    utilisation: float | None = Field(
        description="Open cases over capacity, to 4 places (above 1 when over capacity); null"
        " with no capacity or none recorded."
    )


class ClosureFigures(Figures):
    total: int = Field(ge=0, description="Cases closed in the month.")
    by_outcome: dict[str, int] = Field(description="Closures by case outcome.")


class AuditFigures(Figures):
    due: int = Field(ge=0, description="Audits drawn for the month.")
    completed: int = Field(ge=0, description="Of those, audits completed.")
    overdue: int = Field(ge=0, description="Of those, audits past their due time, not completed.")
    grades: dict[str, int] = Field(description="Completed audits by overall Ofsted grade.")


class TeamFigures(Figures):
    team_id: str = Field(description="Locality team id.")
    district: str | None = Field(description="The district the team serves, when known.")
    allocations: int = Field(ge=0, description="Cases allocated to the team in the month.")
    open_at_month_end: int = Field(ge=0, description="The team's cases open at month end.")
    capacity: int | None = Field(
        ge=0,
        description="Families the team could hold at month end; null before its capacity was"
        " recorded.",
    )


class MonthlyReport(Figures):
    """Every measure of one month, for one district or the whole county."""

    month: Month = Field(description="The month, YYYY-MM.")
    district: str | None = Field(description="The district, or null for the whole county.")
    requests: RequestFigures = Field(
        description="Valid requests for Early Help received (rejections are under outcomes)."
    )
    outcomes: OutcomeFigures = Field(description="What the front door decided.")
    re_referrals: ReReferralFigures = Field(description="Requests that were re-referrals.")
    step_downs: int = Field(ge=0, description="Requests stepped down from social care.")
    co_working: int = Field(
        ge=0,
        description="Requests allocation placed as co-working with social care (its"
        " ``case-allocated`` kind says so).",
    )
    allocations: AllocationFigures = Field(description="Allocation to workers, and waiting.")
    caseload: CaseloadFigures = Field(description="Open cases against capacity at month end.")
    closures: ClosureFigures = Field(description="Cases closed.")
    audits: AuditFigures = Field(description="The month's quality audits.")
    teams: list[TeamFigures] = Field(description="Each locality team's figures, by team id.")


class PerformanceSnapshot(EventData):
    """One district's (or the county's) monthly performance figures, as they stand now.

    Published by reporting when the figures change, at most once every few seconds per
    district and month; the newest ``version`` per key supersedes the rest.
    """

    event_type: ClassVar[str] = "performance-snapshot"
    schema_version: ClassVar[int] = 3
    model_config = ConfigDict(json_schema_extra=examples_of("performance-snapshot"))

    month: Month = Field(description="The month, YYYY-MM.")
    district: str = Field(description="The district, or ``all`` for the whole county.")
    version: int = Field(ge=1, description="Rises with every snapshot of this month/district.")
    figures: MonthlyReport = Field(
        description="The monthly report, as ``GET /reports/monthly`` answers it."
    )
    generated_at: datetime = Field(description="When the figures were computed.")

    def event_subject(self) -> str | None:
        return f"{self.month}|{self.district}"


def performance_snapshot_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 declared ``figures`` as any object; version 2 names the report's measures.
    The figures published as version 1 already had this shape, so they read unchanged."""
    return data


def performance_snapshot_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 counts joins of open cases apart from allocations and may leave capacity
    null (none recorded); version 2 figures read as they were, their joins not known apart."""
    return data
