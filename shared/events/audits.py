"""Audit's events: cases drawn for their monthly quality audit, and the audits' grades."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import EventData, examples_of
from shared.events.vocabulary import LevelOfNeed, OfstedGrade
from shared.months import Month


class StandardScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    standard: str = Field(description="The Early Help Quality Standard scored.")
    grade: OfstedGrade = Field(description="Grade on the Ofsted scale.")


class AuditCompleted(EventData):
    """A quality audit of a case, graded against the Early Help Quality Standards."""

    event_type: ClassVar[str] = "audit-completed"
    model_config = ConfigDict(json_schema_extra=examples_of("audit-completed"))

    audit_id: str = Field(description="Audit service's id for the audit.")
    case_id: str = Field(description="The audited case.")
    family_id: str = Field(description="The audited case's family.")
    district: str = Field(description="The case's district.")
    team_id: str | None = Field(default=None, description="The case's team.")
    auditor_id: str = Field(description="Team manager or head of service who audited.")
    month: Month = Field(description="Audit month, YYYY-MM.")
    scores: list[StandardScore] = Field(description="One grade per quality standard.")
    overall_grade: OfstedGrade = Field(description="The overall grade.")
    learning_points: list[str] = Field(default_factory=list, description="What to learn.")
    completed_at: datetime = Field(description="When the audit was completed.")
    auditor_role: str | None = Field(
        default=None, description="The auditor's role: team_manager or head_of_service."
    )
    level_of_need: LevelOfNeed | None = Field(
        default=None, description="The case's level of need when it was drawn for audit."
    )
    due_by: datetime | None = Field(
        default=None,
        description="When the audit fell due: the end of its month. Completed after this, it"
        " was late.",
    )


class AuditAssigned(EventData):
    """A case was drawn for an auditor's monthly audit: the audit is now due."""

    event_type: ClassVar[str] = "audit-assigned"
    model_config = ConfigDict(json_schema_extra=examples_of("audit-assigned"))

    audit_id: str = Field(description="Audit service's id for the audit.")
    case_id: str = Field(description="The case to audit.")
    family_id: str = Field(description="The case's family.")
    district: str = Field(description="The case's district.")
    team_id: str | None = Field(default=None, description="The case's team.")
    auditor_id: str = Field(description="Team manager or head of service who must audit it.")
    month: Month = Field(description="Audit month, YYYY-MM.")
    assigned_at: datetime = Field(description="When the draw assigned it.")
    due_by: datetime = Field(description="When it falls due: the end of its month.")
