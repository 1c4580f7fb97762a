"""Allocation's events: cases given to a team and worker, closed, and teams' capacity."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from shared.events.envelope import EventData, examples_of
from shared.events.vocabulary import AllocationKind, AllocationStatus, CaseOutcome, LevelOfNeed


class CaseAllocated(EventData):
    """A referral was given a case with a team and worker, or its case was queued for one.

    One referral gives one ``allocated`` event, or a ``queued`` one followed by ``allocated``
    when capacity frees. A worker leaving gives another ``allocated`` (or ``queued``) event
    for each of their cases, with ``reallocated_from_worker_id`` set.
    """

    event_type: ClassVar[str] = "case-allocated"
    schema_version: ClassVar[int] = 2
    model_config = ConfigDict(json_schema_extra=examples_of("case-allocated"))

    case_id: str = Field(description="Allocation service's case id.")
    family_id: str = Field(description="The family the case is for.")
    referral_id: str = Field(description="The referral that opened or joined the case.")
    district: str = Field(description="The family's district.")
    team_id: str | None = Field(description="Locality team, or null while queued unassigned.")
    worker_id: str | None = Field(description="Lead practitioner, or null while queued.")
    status: AllocationStatus = Field(description="Allocated or queued.")
    kind: AllocationKind = Field(description="Which allocation rule applied.")
    level_of_need: LevelOfNeed = Field(description="Level of need from screening.")
    social_care_case_reference: str | None = Field(
        default=None, description="Statutory case reference for step-downs and co-working."
    )
    referral_received_at: datetime = Field(description="When the request reached the front door.")
    allocated_at: datetime = Field(description="When the allocation (or queueing) happened.")
    queue_position: int | None = Field(
        default=None,
        ge=1,
        description="Place in the district's queue when queued (1 is next); null when allocated.",
    )
    time_to_allocation_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds from the referral reaching the front door to this allocation;"
        " null while queued.",
    )
    reallocated_from_worker_id: str | None = Field(
        default=None,
        description="The worker who held the case before, when a leaver's case is reallocated.",
    )


def case_allocated_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 called the first rule's allocation ``continuing``; version 2 names it
    ``existing_case``."""
    if data.get("kind") == "continuing":
        return {**data, "kind": AllocationKind.EXISTING_CASE.value}
    return data


class CaseClosed(EventData):
    """A case ended, with its outcome."""

    event_type: ClassVar[str] = "case-closed"
    model_config = ConfigDict(json_schema_extra=examples_of("case-closed"))

    case_id: str = Field(description="Allocation service's case id.")
    family_id: str = Field(description="The family the case was for.")
    district: str = Field(description="The family's district.")
    team_id: str | None = Field(description="The team that held the case.")
    worker_id: str | None = Field(description="The worker that held the case.")
    outcome: CaseOutcome = Field(description="Why the case ended.")
    closed_at: datetime = Field(description="When the case closed.")


class TeamCapacityChanged(EventData):
    """A locality team's capacity after a worker joined, left or changed FTE or cap.

    Carries the whole figure rather than a difference, so the newest event per team is
    all a reader needs.
    """

    event_type: ClassVar[str] = "team-capacity-changed"
    model_config = ConfigDict(json_schema_extra=examples_of("team-capacity-changed"))

    team_id: str = Field(description="Locality team id.", examples=["northvale-north"])
    team_name: str = Field(description="The team's name.", examples=["Northvale North"])
    district: str = Field(description="The district the team serves.", examples=["northvale"])
    workers: int = Field(ge=0, description="Workers currently in the team.")
    fte: float = Field(ge=0, description="The team's total full-time equivalent.")
    capacity: int = Field(ge=0, description="Families the team can hold: its workers' caps.")
    changed_at: datetime = Field(description="When the change was made.")

    def event_subject(self) -> str | None:
        return self.team_id
