"""Audit service: keeps the cases it may audit and publishes audit-completed."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.audit import domain
from services.audit.settings import AuditSettings
from services.audit.store import MongoAuditStore
from shared import topics
from shared.consumer import IncomingMessage
from shared.events import (
    AllocationStatus,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    StandardScore,
    decode,
)
from shared.mongo import Session
from shared.runtime import build_runtime, service_app


class AuditSubmission(BaseModel):
    """A completed case audit as an auditor records it."""

    case_id: str = Field(min_length=1, description="The audited case.")
    auditor_id: str = Field(min_length=1, description="Team manager or head of service.")
    scores: list[StandardScore] = Field(min_length=1, description="A grade per standard.")
    learning_points: list[str] = Field(default_factory=list, description="What to learn.")


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = build_runtime(settings, produces=(topics.AUDIT_COMPLETED,))
    store = MongoAuditStore(runtime.client, runtime.db, runtime.outbox)

    runtime.on_start.append(lambda _: store.ensure_indexes())

    async def on_case_allocated(message: IncomingMessage) -> None:
        event, allocation = decode(message.value, CaseAllocated)

        async def remember(session: Session) -> dict[str, Any]:
            if allocation.status is AllocationStatus.ALLOCATED:
                await store.record_allocation(allocation, session=session)
            return {"case_id": allocation.case_id}

        await runtime.processed.process_once(event, remember)

    async def on_case_closed(message: IncomingMessage) -> None:
        event, closure = decode(message.value, CaseClosed)

        async def close(session: Session) -> dict[str, Any]:
            await store.record_closure(closure, session=session)
            return {"case_id": closure.case_id}

        await runtime.processed.process_once(event, close)

    runtime.subscribe(topics.CASE_ALLOCATED, on_case_allocated)
    runtime.subscribe(topics.CASE_CLOSED, on_case_closed)

    app = service_app(
        runtime,
        title="Early Help audit service",
        description="Monthly quality audits of cases against the Early Help Quality Standards.",
    )

    @app.post("/audits", status_code=201, tags=["audits"], summary="Record a completed audit")
    async def post_audit(
        submission: AuditSubmission,
        x_correlation_id: str | None = Header(default=None),
    ) -> JSONResponse:
        case = await store.get_case(submission.case_id)
        if case is None:
            raise HTTPException(404, f"no allocated case {submission.case_id} is known here")
        now = runtime.clock()
        month = domain.audit_month(now)
        audit = AuditCompleted(
            audit_id=domain.audit_id_for(submission.auditor_id, submission.case_id, month),
            case_id=submission.case_id,
            family_id=case["family_id"],
            district=case["district"],
            team_id=case.get("team_id"),
            auditor_id=submission.auditor_id,
            month=month,
            scores=submission.scores,
            overall_grade=domain.overall_grade(submission.scores),
            learning_points=submission.learning_points,
            completed_at=now,
        )
        created = await store.complete(audit, correlation_id=x_correlation_id or str(uuid.uuid4()))
        stored = await store.get_audit(audit.audit_id)
        assert stored is not None
        stored.pop("_id", None)
        return JSONResponse(stored, status_code=201 if created else 200)

    @app.get("/audits", tags=["audits"], summary="Audits, newest first")
    async def list_audits(
        auditor_id: str | None = None,
        month: str | None = Query(default=None, pattern=r"^\d{4}-\d{2}$"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        filters = {
            name: value
            for name, value in (("auditor_id", auditor_id), ("month", month))
            if value is not None
        }
        audits = await store.list_audits(filters, limit)
        for audit in audits:
            audit.pop("_id", None)
        return audits

    return app
