"""The audit API's request and response bodies, as users read them in the OpenAPI
document, and how the domain's values are shown in them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from services.audit.domain import (
    AuditAsOf,
    Auditor,
    AuditorRole,
    AuditStatus,
    DrawRecord,
)
from services.audit.handlers import MonthCompliance
from shared.events import LevelOfNeed, OfstedGrade
from shared.months import MONTH_PATTERN
from shared.requests import RequestBody

AUDITOR_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"


class StandardView(BaseModel):
    id: str = Field(description="The standard's id, used as a key in an audit's scores.")
    description: str = Field(description="What the standard asks of the work with the family.")


class AuditorView(BaseModel):
    id: str = Field(description="The auditor's id: the sub of their token.")
    name: str = Field(description="The auditor's name.")
    role: AuditorRole = Field(description="team_manager or head_of_service.")
    district: str = Field(description="The district the auditor works in.")
    team_id: str | None = Field(description="The locality team a team manager manages.")
    active: bool = Field(description="Inactive auditors are not drawn audits any more.")
    audits_per_month: int = Field(description="Audits owed a calendar month (0 when inactive).")
    audits_per_month_override: int | None = Field(
        description="This auditor's own quota, when it differs from the service's default."
    )


class NewAuditor(RequestBody):
    # A team manager names their team; a head of service covers a district and names none.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"role": {"const": "team_manager"}}},
            "then": {"required": ["team_id"], "properties": {"team_id": {"type": "string"}}},
            "else": {"properties": {"team_id": {"type": "null"}}},
        }
    )

    id: str | None = Field(
        default=None,
        pattern=AUDITOR_ID_PATTERN,
        description="Lower-case id with hyphens; one is made up when left out.",
        examples=["tm-northvale-north"],
    )
    name: str = Field(min_length=1, max_length=200, description="The auditor's name.")
    role: AuditorRole = Field(description="team_manager or head_of_service.")
    district: str = Field(min_length=1, max_length=100, description="Their district.")
    team_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The team a team manager manages; required for team managers, absent for"
        " heads of service.",
    )
    audits_per_month: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Their own quota; the service default when unset.",
    )


class AuditorChange(RequestBody):
    """Only the fields given change; give audits_per_month null to use the default again,
    and team_id null for none. The other fields cannot be null: leave them out."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = Field(
        default=None, description="New name."
    )
    role: AuditorRole | SkipJsonSchema[None] = Field(default=None, description="New role.")
    district: Annotated[str, Field(min_length=1, max_length=100)] | SkipJsonSchema[None] = Field(
        default=None, description="District."
    )
    team_id: str | None = Field(default=None, max_length=100, description="Team, or null.")
    active: bool | SkipJsonSchema[None] = Field(
        default=None, description="False stops new draws for them."
    )
    audits_per_month: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Their own quota, or null for the default.",
    )


class DrawRequest(RequestBody):
    month: str = Field(pattern=MONTH_PATTERN, description="The month to draw, YYYY-MM.")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="Makes the draw reproducible; the month's recorded seed (or a new one) when"
        " left out.",
    )


class DrawRoundView(BaseModel):
    seed: int = Field(description="The seed this round drew with.")
    at: datetime = Field(description="When the round ran.")
    assigned: int = Field(description="Audits this round assigned.")
    unfilled: dict[str, int] = Field(
        description="Audits still owed after the round, by auditor, for want of eligible cases."
    )


class DrawView(BaseModel):
    month: str = Field(description="The month drawn, YYYY-MM.")
    seed: int = Field(description="The seed the month was first drawn with.")
    drawn_at: datetime = Field(description="When the month was first drawn.")
    rounds: list[DrawRoundView] = Field(description="Every round, the first one first.")
    new_audit_ids: list[str] = Field(description="Audits this request assigned (none on repeat).")


class AuditView(BaseModel):
    id: str = Field(description="The audit's id.")
    month: str = Field(description="The month it belongs to, YYYY-MM.")
    auditor_id: str = Field(description="The auditor it is assigned to.")
    auditor_role: AuditorRole = Field(description="Their role when it was drawn.")
    case_id: str = Field(description="The audited case (no personal data is held here).")
    family_id: str = Field(description="The case's family id.")
    district: str = Field(description="The case's district.")
    team_id: str | None = Field(description="The case's team when it was drawn.")
    level_of_need: LevelOfNeed | None = Field(description="The case's level of need when drawn.")
    status: AuditStatus = Field(
        description="assigned (not yet due), overdue (its month is over), or completed."
    )
    assigned_at: datetime = Field(description="When it was drawn.")
    due_by: datetime = Field(description="The end of its month.")
    completed_at: datetime | None = Field(description="When it was completed.")
    scores: dict[str, OfstedGrade] = Field(description="Each standard's grade, once completed.")
    overall_grade: OfstedGrade | None = Field(description="The overall grade, once completed.")
    learning_points: list[str] = Field(description="What the auditor wants learnt from the case.")


class AuditSubmission(RequestBody):
    """A completed case audit: every Early Help Quality Standard graded (see GET /standards)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "auditor_id": "tm-northvale-north",
                    "scores": {
                        "assessment_timeliness": "good",
                        "voice_of_the_child": "outstanding",
                        "plan_quality": "requires_improvement",
                        "multi_agency_working": "good",
                        "management_oversight": "good",
                        "outcomes_for_family": "good",
                    },
                    "overall_grade": "good",
                    "learning_points": ["Make the plan's actions measurable."],
                }
            ]
        }
    }

    auditor_id: str | None = Field(
        default=None, description="Who is submitting; when given, it must be the token's sub."
    )
    scores: dict[str, str] = Field(
        description="Standard id -> Ofsted grade (outstanding, good, requires_improvement,"
        " inadequate), one for every standard."
    )
    overall_grade: str | None = Field(
        default=None,
        description="The auditor's overall judgement; when left out, the median standard's"
        " grade (inadequate if any standard is).",
    )
    learning_points: list[Annotated[str, Field(min_length=1, max_length=2000)]] = Field(
        default_factory=list, max_length=20, description="What to learn from the case."
    )


class AuditorComplianceView(BaseModel):
    auditor_id: str = Field(description="The auditor.")
    name: str = Field(description="Their name.")
    role: AuditorRole = Field(description="Their role.")
    district: str = Field(description="Their district.")
    owed: int = Field(description="Audits they owe this month.")
    assigned: int = Field(description="Audits drawn for them this month.")
    completed: int = Field(description="Of those, completed.")
    overdue: int = Field(description="Of those, not completed by the end of the month.")


class DistrictGradesView(BaseModel):
    district: str = Field(description="The audited cases' district.")
    completed: int = Field(description="Audits completed for the month.")
    overall: dict[str, int] = Field(description="Completed audits by overall grade.")
    by_standard: dict[str, dict[str, int]] = Field(
        description="For each standard, completed audits by that standard's grade."
    )


class ComplianceView(BaseModel):
    month: str = Field(description="The month reported, YYYY-MM.")
    as_of: datetime = Field(description="The time the overdue figures were worked out at.")
    assigned: int = Field(description="Audits drawn for the month, all auditors.")
    completed: int = Field(description="Of those, completed.")
    overdue: int = Field(description="Of those, overdue.")
    auditors: list[AuditorComplianceView] = Field(description="One row per auditor.")
    districts: list[DistrictGradesView] = Field(description="Grades given, per district.")


def auditor_view(auditor: Auditor, *, default_per_month: int) -> AuditorView:
    return AuditorView(
        id=auditor.id,
        name=auditor.name,
        role=auditor.role,
        district=auditor.district,
        team_id=auditor.team_id,
        active=auditor.active,
        audits_per_month=auditor.owes(default_per_month),
        audits_per_month_override=auditor.audits_per_month,
    )


def draw_view(drawn: DrawRecord) -> DrawView:
    return DrawView(
        month=drawn.month,
        seed=drawn.seed,
        drawn_at=drawn.drawn_at,
        rounds=[
            DrawRoundView(
                seed=round_.seed, at=round_.at, assigned=round_.assigned, unfilled=round_.unfilled
            )
            for round_ in drawn.rounds
        ],
        new_audit_ids=drawn.new_audit_ids,
    )


def audit_view(found: AuditAsOf) -> AuditView:
    audit = found.audit
    return AuditView(
        id=audit.id,
        month=audit.month,
        auditor_id=audit.auditor_id,
        auditor_role=audit.auditor_role,
        case_id=audit.case_id,
        family_id=audit.family_id,
        district=audit.district,
        team_id=audit.team_id,
        level_of_need=audit.level_of_need,
        status=found.status,
        assigned_at=audit.assigned_at,
        due_by=audit.due_by,
        completed_at=audit.completed_at,
        scores=audit.scores,
        overall_grade=audit.overall_grade,
        learning_points=audit.learning_points,
    )


def compliance_view(month: str, report: MonthCompliance) -> ComplianceView:
    rows = report.figures.auditors
    return ComplianceView(
        month=month,
        as_of=report.as_of,
        assigned=sum(row.assigned for row in rows),
        completed=sum(row.completed for row in rows),
        overdue=sum(row.overdue for row in rows),
        auditors=[
            AuditorComplianceView(
                auditor_id=row.auditor_id,
                name=report.auditors[row.auditor_id].name,
                role=report.auditors[row.auditor_id].role,
                district=report.auditors[row.auditor_id].district,
                owed=row.owed,
                assigned=row.assigned,
                completed=row.completed,
                overdue=row.overdue,
            )
            for row in rows
        ],
        districts=[
            DistrictGradesView(
                district=row.district,
                completed=row.completed,
                overall=row.overall,
                by_standard=row.by_standard,
            )
            for row in report.figures.districts
        ],
    )
