"""Audit service: the monthly case audits against the Early Help Quality Standards.

``create_app`` is the composition root: it builds the runtime and the Mongo store,
subscribes the case projection, schedules the monthly draw, and serves the HTTP API, whose
routes parse a request, call one use case and show its result; refusals of the rules become
HTTP statuses here and only here.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from services.audit import domain, handlers
from services.audit.access import POLICY
from services.audit.app.views import (
    AuditorChange,
    AuditorView,
    AuditSubmission,
    AuditView,
    ComplianceView,
    DrawRequest,
    DrawView,
    NewAuditor,
    StandardView,
    audit_view,
    auditor_view,
    compliance_view,
    draw_view,
)
from services.audit.domain import (
    Auditor,
    AuditStatus,
    Conflict,
    DrawPolicy,
    DrawRecord,
    Invalid,
    NotFound,
    NotTheAuditor,
    Problem,
    Refused,
    Submission,
)
from services.audit.ports import AuditPlace
from services.audit.sample import sample_auditors
from services.audit.settings import AuditSettings
from services.audit.store import MongoAuditStore
from shared import topics
from shared.auth import SignedIn, protect
from shared.clock import utc_now
from shared.consumer import Delivered
from shared.events import CaseAllocated, CaseClosed
from shared.listing import ANY_PART, NEXT_PAGE, cursor_query, join_cursor, link_next, split_cursor
from shared.months import MONTH_PATTERN
from shared.problems import FieldProblem, ProblemResponse, problem
from shared.runtime import build_runtime, service_app

log = logging.getLogger(__name__)

__all__ = ["create_app"]


REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"description": meaning}
    for status, meaning in (
        (403, "Not the assigned auditor"),
        (404, "Unknown audit or auditor"),
        (409, "Already done"),
        (422, "Invalid request, one problem per field"),
    )
}
"""The refusals an audit operation may answer, each a problem with one entry per reason."""


def refusal(status: int, problems: list[Problem]) -> ProblemResponse:
    """The rules' refusal as a problem, with every reason found."""
    return problem(
        status,
        "; ".join(f"{p.field}: {p.message}" for p in problems),
        problems=[FieldProblem(field=p.field, code=p.code, message=p.message) for p in problems],
    )


REFUSAL_STATUS: dict[type[Refused], int] = {
    Invalid: 422,
    NotTheAuditor: 403,
    NotFound: 404,
    Conflict: 409,
}
"""The HTTP status of each kind of refusal; the body is the same shape for all of them."""

NO_AUDITORS = (
    "no auditors configured; add them with POST /auditors, or set EARLYHELP_SAMPLE_DATA=true"
    " for the sample county's"
)


def refusal_status(error: Refused) -> int:
    return next(
        (REFUSAL_STATUS[kind] for kind in type(error).__mro__ if kind in REFUSAL_STATUS), 400
    )


def create_app(
    settings: AuditSettings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = build_runtime(
        settings, produces=(topics.AUDIT_COMPLETED, topics.AUDIT_ASSIGNED), clock=clock
    )
    runtime.erase_families_on_request()
    store = MongoAuditStore(runtime.client, runtime.db, runtime.outbox)
    policy = DrawPolicy(
        audits_per_month=settings.audits_per_month,
        closed_within_months=settings.audit_closed_within_months,
    )

    async def prepare(_: object) -> None:
        await store.ensure_indexes()
        if settings.sample_data:
            await handlers.seed_auditors(
                sample_auditors(), uow=store.unit_of_work(), now=runtime.clock()
            )
        if not await handlers.count_auditors(uow=store.unit_of_work()):
            log.warning(NO_AUDITORS)

    runtime.on_start.append(prepare)

    async def auditors_check() -> str:
        count = await handlers.count_auditors(uow=store.unit_of_work())
        if count:
            return f"ok: {count} auditor{'s' if count != 1 else ''}"
        sample = "on" if settings.sample_data else "off"
        return (
            "ok: empty: no auditors configured; add them with POST /auditors"
            f" (EARLYHELP_SAMPLE_DATA is {sample})"
        )

    runtime.reference_checks["auditors"] = auditors_check

    # -- the case population, from case-allocated and case-closed -------------------------

    async def project(batch: Sequence[Delivered[CaseAllocated | CaseClosed]]) -> int:
        """Allocations or closures, once each, with one read, one bulk write and one commit."""

        async def work(session: Any, fresh: list[int]) -> None:
            changes = [batch[index].event for index in fresh]
            await handlers.project_case_events(changes, uow=store.unit_of_work(session=session))

        return await runtime.processed.process_many([item.envelope for item in batch], work)

    async def on_case_allocated(batch: Sequence[Delivered[CaseAllocated]]) -> int:
        return await project(batch)

    async def on_case_closed(batch: Sequence[Delivered[CaseClosed]]) -> int:
        return await project(batch)

    runtime.subscribe(CaseAllocated, on_case_allocated)
    runtime.subscribe(CaseClosed, on_case_closed)

    # -- the monthly draw ------------------------------------------------------------------

    async def draw_if_due() -> DrawRecord | None:
        return await handlers.draw_current_month_if_due(
            uow=store.unit_of_work(), now=runtime.clock(), policy=policy, fresh_seed=_fresh_seed()
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
    protect(app, settings, runtime.db, POLICY, on_start=runtime.on_start, clock=runtime.clock)

    @app.exception_handler(Refused)
    async def refused(_: Request, error: Refused) -> ProblemResponse:
        return refusal(refusal_status(error), error.problems)

    def shown(auditor: Auditor) -> AuditorView:
        return auditor_view(auditor, default_per_month=settings.audits_per_month)

    # -- standards and auditors ------------------------------------------------------------

    @app.get("/standards", tags=["audits"], summary="The Early Help Quality Standards")
    async def get_standards() -> list[StandardView]:
        return [
            StandardView(id=standard, description=description)
            for standard, description in domain.QUALITY_STANDARDS.items()
        ]

    @app.get("/auditors", tags=["auditors"], summary="Team managers and heads of service")
    async def list_auditors(
        active: Annotated[bool | None, Query(description="Only active or inactive.")] = None,
        district: Annotated[str | None, Query(description="Only this district.")] = None,
    ) -> list[AuditorView]:
        found = await handlers.list_auditors(
            uow=store.unit_of_work(), active=active, district=district
        )
        return [shown(auditor) for auditor in found]

    @app.get("/auditors/{auditor_id}", tags=["auditors"], summary="One auditor", responses=REFUSALS)
    async def get_auditor(auditor_id: str) -> AuditorView:
        return shown(await handlers.get_auditor(auditor_id, uow=store.unit_of_work()))

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
        return shown(
            await handlers.add_auditor(auditor, uow=store.unit_of_work(), now=runtime.clock())
        )

    @app.patch(
        "/auditors/{auditor_id}",
        tags=["auditors"],
        summary="Change an auditor (role, team, quota, active)",
        responses=REFUSALS,
    )
    async def patch_auditor(auditor_id: str, change: AuditorChange) -> AuditorView:
        changed = await handlers.change_auditor(
            auditor_id,
            change.model_dump(include=change.model_fields_set),
            uow=store.unit_of_work(),
            now=runtime.clock(),
        )
        return shown(changed)

    @app.post(
        "/auditors/{auditor_id}/deactivation",
        tags=["auditors"],
        summary="Deactivate an auditor",
        description="The record and their audits are kept; they are drawn no new audits.",
        responses=REFUSALS,
    )
    async def deactivate_auditor(auditor_id: str) -> AuditorView:
        return shown(
            await handlers.deactivate_auditor(
                auditor_id, uow=store.unit_of_work(), now=runtime.clock()
            )
        )

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
        drawn = await handlers.draw_month(
            request.month,
            uow=store.unit_of_work(),
            now=runtime.clock(),
            policy=policy,
            requested_seed=request.seed,
            fresh_seed=_fresh_seed(),
        )
        status = 201 if drawn.new_audit_ids else 200
        return JSONResponse(draw_view(drawn).model_dump(mode="json"), status_code=status)

    @app.get("/audits/draws", tags=["draws"], summary="Months drawn, newest first")
    async def list_draws() -> list[DrawView]:
        return [draw_view(drawn) for drawn in await handlers.list_draws(uow=store.unit_of_work())]

    # -- audits ----------------------------------------------------------------------------

    @app.get(
        "/audits",
        tags=["audits"],
        summary="Audits, newest month first, a page at a time",
        description="Newest month first, then by auditor and id." + NEXT_PAGE,
    )
    async def list_audits(
        request: Request,
        response: Response,
        month: Annotated[
            str | None, Query(pattern=MONTH_PATTERN, description="Only this month, YYYY-MM.")
        ] = None,
        auditor_id: Annotated[str | None, Query(description="Only this auditor's.")] = None,
        status: Annotated[
            AuditStatus | None, Query(description="assigned, overdue or completed.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 200,
        cursor: Annotated[str | None, cursor_query(AUDITS_CURSOR)] = None,
    ) -> list[AuditView]:
        found, following = await handlers.find_audits(
            uow=store.unit_of_work(),
            now=runtime.clock(),
            month=month,
            auditor_id=auditor_id,
            status=status,
            limit=limit,
            after=None if cursor is None else audit_place(cursor),
        )
        link_next(request, response, None if following is None else join_cursor(*following))
        return [audit_view(audit) for audit in found]

    @app.get(
        "/audits/compliance",
        tags=["audits"],
        summary="Per auditor: assigned, completed, overdue; per district: grades",
    )
    async def get_compliance(
        month: Annotated[str, Query(pattern=MONTH_PATTERN, description="The month, YYYY-MM.")],
    ) -> ComplianceView:
        report = await handlers.month_compliance(
            month, uow=store.unit_of_work(), now=runtime.clock(), policy=policy
        )
        return compliance_view(month, report)

    @app.get("/audits/{audit_id}", tags=["audits"], summary="One audit", responses=REFUSALS)
    async def get_audit(audit_id: str) -> AuditView:
        return audit_view(
            await handlers.get_audit(audit_id, uow=store.unit_of_work(), now=runtime.clock())
        )

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
        completed = await handlers.submit_audit(
            audit_id,
            Submission(
                scores=submission.scores,
                overall_grade=submission.overall_grade,
                learning_points=submission.learning_points,
            ),
            claimed_auditor_id=submission.auditor_id,
            auditor_id=auditor.sub,
            uow=store.unit_of_work(),
            now=runtime.clock(),
            correlation_id=x_correlation_id or str(uuid.uuid4()),
        )
        return audit_view(completed)

    return app


def _fresh_seed() -> int:
    return secrets.randbelow(2**31)


AUDITS_CURSOR = f"^[0-9]{{4}}-[0-9]{{2}}~{ANY_PART}~{ANY_PART}$"
"""The last audit's month, auditor and id."""


def audit_place(cursor: str) -> AuditPlace:
    month, auditor_id, audit_id = split_cursor(cursor)
    return month, auditor_id, audit_id
