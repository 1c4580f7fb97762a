"""Audit service: the monthly case audits against the Early Help Quality Standards."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.audit import domain
from services.audit.access import POLICY
from services.audit.domain import (
    MONTH_PATTERN,
    Auditor,
    AuditorRole,
    AuditStatus,
    CaseState,
    Problem,
)
from services.audit.handlers import (
    DrawPolicy,
    Refused,
    Submission,
    draw_current_month_if_due,
    draw_month,
    month_compliance,
    submit_audit,
)
from services.audit.ports import DrawRecord
from services.audit.sample import sample_auditors
from services.audit.settings import AuditSettings
from services.audit.store import MongoAuditStore
from shared import topics
from shared.auth import SignedIn, protect
from shared.clock import utc_now
from shared.consumer import IncomingMessage
from shared.events import CaseAllocated, CaseClosed, LevelOfNeed, OfstedGrade, RawEvent, decode
from shared.mongo import Session
from shared.runtime import build_runtime, service_app

log = logging.getLogger(__name__)

CaseChange = Callable[[CaseState | None], CaseState]

AUDITOR_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
REFUSALS: dict[int | str, dict[str, Any]] = {}


# ---------------------------------------------------------------------------------------------
# HTTP models: what users read in the OpenAPI document


class ProblemView(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. scores.plan_quality.")
    code: str = Field(description="Machine-readable reason, e.g. unknown_standard.")
    message: str = Field(description="What is wrong, for a person.")


class RefusalView(BaseModel):
    """Why a request was refused: nothing was changed."""

    detail: str = Field(description="A one-line summary.")
    problems: list[ProblemView] = Field(description="One entry per problem found.")


for _status, _meaning in (
    (403, "Not the assigned auditor"),
    (404, "Unknown audit or auditor"),
    (409, "Already done"),
    (422, "Invalid request, one problem per field"),
):
    REFUSALS[_status] = {"model": RefusalView, "description": _meaning}


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


class NewAuditor(BaseModel):
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
        default=None, ge=0, le=20, description="Their own quota; the service default when unset."
    )


class AuditorChange(BaseModel):
    """Only the fields given change; give audits_per_month null to use the default again."""

    name: str | None = Field(default=None, min_length=1, max_length=200, description="New name.")
    role: AuditorRole | None = Field(default=None, description="New role.")
    district: str | None = Field(
        default=None, min_length=1, max_length=100, description="District."
    )
    team_id: str | None = Field(default=None, max_length=100, description="Team, or null.")
    active: bool | None = Field(default=None, description="False stops new draws for them.")
    audits_per_month: int | None = Field(
        default=None, ge=0, le=20, description="Their own quota, or null for the default."
    )


class DrawRequest(BaseModel):
    month: str = Field(pattern=MONTH_PATTERN, description="The month to draw, YYYY-MM.")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**62,
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


class AuditSubmission(BaseModel):
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


# ---------------------------------------------------------------------------------------------


def create_app(
    settings: AuditSettings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = build_runtime(
        settings, produces=(topics.AUDIT_COMPLETED, topics.AUDIT_ASSIGNED), clock=clock
    )
    store = MongoAuditStore(runtime.client, runtime.db, runtime.outbox)
    policy = DrawPolicy(
        audits_per_month=settings.audits_per_month,
        closed_within_months=settings.audit_closed_within_months,
    )

    async def prepare(_: object) -> None:
        await store.ensure_indexes()
        if settings.seed_sample_auditors:
            await store.seed_auditors(sample_auditors(), now=runtime.clock())

    runtime.on_start.append(prepare)

    async def on_case_allocated(message: IncomingMessage) -> None:
        event, allocation = decode(message.value, CaseAllocated)

        async def project(session: Session) -> dict[str, Any]:
            case = await store.update_case(
                allocation.case_id,
                lambda known: domain.apply_allocation(known, allocation),
                session=session,
            )
            return {"case_id": case.case_id, "status": case.status}

        await runtime.processed.process_once(event, project)

    async def on_case_closed(message: IncomingMessage) -> None:
        event, closure = decode(message.value, CaseClosed)

        async def project(session: Session) -> dict[str, Any]:
            case = await store.update_case(
                closure.case_id, lambda known: domain.apply_closure(known, closure), session=session
            )
            return {"case_id": case.case_id, "status": case.status}

        await runtime.processed.process_once(event, project)

    def change_of(message: IncomingMessage) -> tuple[RawEvent, str, CaseChange]:
        if message.topic == runtime.topic(topics.CASE_ALLOCATED):
            event, allocation = decode(message.value, CaseAllocated)
            return event, allocation.case_id, partial(domain.apply_allocation, event=allocation)
        event, closure = decode(message.value, CaseClosed)
        return event, closure.case_id, partial(domain.apply_closure, event=closure)

    async def project_many(messages: list[IncomingMessage]) -> int:
        """Many allocations or closures with one read, one bulk write and one commit."""
        changes = [change_of(message) for message in messages]

        async def project(session: Session, fresh: list[int]) -> list[dict[str, Any]]:
            cases = await store.update_cases(
                [(changes[index][1], changes[index][2]) for index in fresh], session=session
            )
            return [{"case_id": case.case_id, "status": case.status} for case in cases]

        return await runtime.processed.process_many([event for event, _, _ in changes], project)

    runtime.subscribe(topics.CASE_ALLOCATED, on_case_allocated, many=project_many)
    runtime.subscribe(topics.CASE_CLOSED, on_case_closed, many=project_many)

    async def draw_if_due() -> DrawRecord | None:
        return await draw_current_month_if_due(
            store=store, now=runtime.clock(), policy=policy, fresh_seed=_fresh_seed()
        )

    async def draw_check() -> None:
        drawn = await draw_if_due()
        if drawn is not None:
            log.info("drew %s: %d audits", drawn.month, len(drawn.new_audit_ids))

    runtime.every(settings.draw_check_interval_s, "monthly-draw-check", draw_check)

    app = service_app(
        runtime,
        title="Early Help audit service",
        description="Monthly case audits against the Early Help Quality Standards. Each team"
        " manager and head of service is drawn the cases they owe each month (at random,"
        " stratified by district and level of need), grades each standard on the Ofsted scale,"
        " and the completed audit is published as audit-completed. Audits refer to cases and"
        " families by id only.",
    )
    app.state.draw_if_due = draw_if_due
    protect(app, settings, runtime.db, POLICY, clock=runtime.clock)

    @app.exception_handler(Refused)
    async def refused(_: Request, error: Refused) -> JSONResponse:
        return _refusal(error.status, error.problems)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            Problem(
                ".".join(str(part) for part in item["loc"][1:]) or str(item["loc"][0]),
                str(item["type"]),
                str(item["msg"]),
            )
            for item in error.errors()
        ]
        return _refusal(422, problems)

    # -- standards and auditors ------------------------------------------------------------

    @app.get("/standards", tags=["audits"], summary="The Early Help Quality Standards")
    async def get_standards() -> list[StandardView]:
        return [
            StandardView(id=standard, description=description)
            for standard, description in domain.QUALITY_STANDARDS.items()
        ]

    def auditor_view(auditor: Auditor) -> AuditorView:
        return AuditorView(
            id=auditor.id,
            name=auditor.name,
            role=auditor.role,
            district=auditor.district,
            team_id=auditor.team_id,
            active=auditor.active,
            audits_per_month=auditor.owes(settings.audits_per_month),
            audits_per_month_override=auditor.audits_per_month,
        )

    async def known_auditor(auditor_id: str) -> Auditor:
        found = await store.get_auditor(auditor_id)
        if found is None:
            raise Refused(
                404, [Problem("auditor_id", "unknown_auditor", f"no auditor {auditor_id!r}")]
            )
        return found

    @app.get("/auditors", tags=["auditors"], summary="Team managers and heads of service")
    async def list_auditors(
        active: Annotated[bool | None, Query(description="Only active or inactive.")] = None,
        district: Annotated[str | None, Query(description="Only this district.")] = None,
    ) -> list[AuditorView]:
        return [
            auditor_view(auditor)
            for auditor in await store.auditors()
            if (active is None or auditor.active == active)
            and (district is None or auditor.district == district)
        ]

    @app.get("/auditors/{auditor_id}", tags=["auditors"], summary="One auditor", responses=REFUSALS)
    async def get_auditor(auditor_id: str) -> AuditorView:
        return auditor_view(await known_auditor(auditor_id))

    @app.post(
        "/auditors",
        status_code=201,
        tags=["auditors"],
        summary="Add an auditor",
        responses=REFUSALS,
    )
    async def post_auditor(new: NewAuditor) -> AuditorView:
        auditor = Auditor(
            id=new.id or f"auditor-{uuid.uuid4().hex[:12]}",
            name=new.name,
            role=new.role,
            district=new.district,
            team_id=new.team_id,
            audits_per_month=new.audits_per_month,
        )
        _check_auditor(auditor)
        if not await store.add_auditor(auditor, now=runtime.clock()):
            raise Refused(
                409, [Problem("id", "auditor_exists", f"auditor {auditor.id!r} already exists")]
            )
        return auditor_view(auditor)

    @app.patch(
        "/auditors/{auditor_id}",
        tags=["auditors"],
        summary="Change an auditor (role, team, quota, active)",
        responses=REFUSALS,
    )
    async def patch_auditor(auditor_id: str, change: AuditorChange) -> AuditorView:
        auditor = await known_auditor(auditor_id)
        given = change.model_dump(include=change.model_fields_set)
        for name in ("name", "role", "district", "active"):
            if given.get(name, ...) is None:
                raise Refused(422, [Problem(name, "missing", f"{name} cannot be null")])
        changed = replace(auditor, **given)
        _check_auditor(changed)
        await store.save_auditor(changed, now=runtime.clock())
        return auditor_view(changed)

    @app.delete(
        "/auditors/{auditor_id}",
        tags=["auditors"],
        summary="Deactivate an auditor",
        description="The record and their audits are kept; they are drawn no new audits.",
        responses=REFUSALS,
    )
    async def deactivate_auditor(auditor_id: str) -> AuditorView:
        auditor = replace(await known_auditor(auditor_id), active=False)
        await store.save_auditor(auditor, now=runtime.clock())
        return auditor_view(auditor)

    # -- draws -----------------------------------------------------------------------------

    @app.post(
        "/audits/draws",
        tags=["draws"],
        summary="Draw a month's audits",
        description="Assigns every active auditor the cases they still owe for the month."
        " Drawing a month again assigns only what is still owed, never the same audit twice."
        " 201 when this request assigned audits, 200 otherwise.",
        responses={201: {"model": DrawView, "description": "Audits were assigned"}},
    )
    async def post_draw(request: DrawRequest) -> JSONResponse:
        drawn = await draw_month(
            request.month,
            store=store,
            now=runtime.clock(),
            policy=policy,
            requested_seed=request.seed,
            fresh_seed=_fresh_seed(),
        )
        view = _draw_view(drawn)
        status = 201 if drawn.new_audit_ids else 200
        return JSONResponse(view.model_dump(mode="json"), status_code=status)

    @app.get("/audits/draws", tags=["draws"], summary="Months drawn, newest first")
    async def list_draws() -> list[DrawView]:
        return [_draw_view(drawn) for drawn in await store.list_draws()]

    # -- audits ----------------------------------------------------------------------------

    def audit_view(document: dict[str, Any]) -> AuditView:
        status = domain.audit_status(
            domain.AuditRecord(
                audit_id=document["_id"],
                auditor_id=document["auditor_id"],
                district=document["district"],
                month=document["month"],
                due_by=document["due_by"],
                completed_at=document.get("completed_at"),
            ),
            runtime.clock(),
        )
        return AuditView(
            id=document["_id"],
            month=document["month"],
            auditor_id=document["auditor_id"],
            auditor_role=document["auditor_role"],
            case_id=document["case_id"],
            family_id=document["family_id"],
            district=document["district"],
            team_id=document.get("team_id"),
            level_of_need=document.get("level_of_need"),
            status=status,
            assigned_at=document["assigned_at"],
            due_by=document["due_by"],
            completed_at=document.get("completed_at"),
            scores=document.get("scores") or {},
            overall_grade=document.get("overall_grade"),
            learning_points=document.get("learning_points") or [],
        )

    @app.get("/audits", tags=["audits"], summary="Audits, newest month first")
    async def list_audits(
        month: Annotated[
            str | None, Query(pattern=MONTH_PATTERN, description="Only this month, YYYY-MM.")
        ] = None,
        auditor_id: Annotated[str | None, Query(description="Only this auditor's.")] = None,
        status: Annotated[
            AuditStatus | None, Query(description="assigned, overdue or completed.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 200,
    ) -> list[AuditView]:
        found = await store.find_audits(
            month=month,
            auditor_id=auditor_id,
            status=status.value if status else None,
            now=runtime.clock(),
            limit=limit,
        )
        return [audit_view(document) for document in found]

    @app.get(
        "/audits/compliance",
        tags=["audits"],
        summary="Per auditor: assigned, completed, overdue; per district: grades",
    )
    async def get_compliance(
        month: Annotated[str, Query(pattern=MONTH_PATTERN, description="The month, YYYY-MM.")],
    ) -> ComplianceView:
        now = runtime.clock()
        figures = await month_compliance(month, store=store, now=now, policy=policy)
        auditors = {auditor.id: auditor for auditor in await store.auditors()}
        return ComplianceView(
            month=month,
            as_of=now,
            assigned=sum(row.assigned for row in figures.auditors),
            completed=sum(row.completed for row in figures.auditors),
            overdue=sum(row.overdue for row in figures.auditors),
            auditors=[
                AuditorComplianceView(
                    auditor_id=row.auditor_id,
                    name=auditors[row.auditor_id].name,
                    role=auditors[row.auditor_id].role,
                    district=auditors[row.auditor_id].district,
                    owed=row.owed,
                    assigned=row.assigned,
                    completed=row.completed,
                    overdue=row.overdue,
                )
                for row in figures.auditors
            ],
            districts=[
                DistrictGradesView(
                    district=row.district,
                    completed=row.completed,
                    overall=row.overall,
                    by_standard=row.by_standard,
                )
                for row in figures.districts
            ],
        )

    @app.get("/audits/{audit_id}", tags=["audits"], summary="One audit", responses=REFUSALS)
    async def get_audit(audit_id: str) -> AuditView:
        found = await store.get_audit(audit_id)
        if found is None:
            raise Refused(404, [Problem("audit_id", "unknown_audit", f"no audit {audit_id!r}")])
        return audit_view(found)

    @app.post(
        "/audits/{audit_id}/completion",
        tags=["audits"],
        summary="Submit a completed audit",
        description="Only the assigned auditor (the token's sub) may submit it, once. Every"
        " standard of GET /standards is graded. The audit is"
        " published as audit-completed.",
        responses=REFUSALS,
    )
    async def complete_audit(
        audit_id: str,
        submission: AuditSubmission,
        auditor: SignedIn,
        x_correlation_id: Annotated[
            str | None, Header(description="Links the published event to this request.")
        ] = None,
    ) -> AuditView:
        if submission.auditor_id and submission.auditor_id != auditor.sub:
            raise Refused(
                403,
                [
                    Problem(
                        "auditor_id",
                        "auditor_mismatch",
                        f"you are signed in as {auditor.sub!r}, not {submission.auditor_id!r}",
                    )
                ],
            )
        completed = await submit_audit(
            audit_id,
            Submission(
                scores=submission.scores,
                overall_grade=submission.overall_grade,
                learning_points=submission.learning_points,
            ),
            auditor_id=auditor.sub,
            store=store,
            now=runtime.clock(),
            correlation_id=x_correlation_id or str(uuid.uuid4()),
        )
        return audit_view(completed)

    return app


def _check_auditor(auditor: Auditor) -> None:
    """A team manager manages one team; a head of service a whole district."""
    if auditor.role is AuditorRole.TEAM_MANAGER and not auditor.team_id:
        raise Refused(
            422, [Problem("team_id", "missing", "a team manager needs the team they manage")]
        )
    if auditor.role is AuditorRole.HEAD_OF_SERVICE and auditor.team_id:
        raise Refused(
            422,
            [
                Problem(
                    "team_id",
                    "not_allowed",
                    "a head of service covers a district, not one team: leave team_id out",
                )
            ],
        )


def _refusal(status: int, problems: list[Problem]) -> JSONResponse:
    view = RefusalView(
        detail="; ".join(f"{p.field}: {p.message}" for p in problems),
        problems=[ProblemView(field=p.field, code=p.code, message=p.message) for p in problems],
    )
    return JSONResponse(view.model_dump(mode="json"), status_code=status)


def _draw_view(drawn: DrawRecord) -> DrawView:
    return DrawView(
        month=drawn.month,
        seed=drawn.seed,
        drawn_at=drawn.drawn_at,
        rounds=[DrawRoundView.model_validate(round_) for round_ in drawn.rounds],
        new_audit_ids=drawn.new_audit_ids,
    )


def _fresh_seed() -> int:
    return secrets.randbelow(2**31)
