"""Allocation service: consumes referral-received, publishes case-allocated and case-closed."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from services.allocation import domain
from services.allocation.settings import AllocationSettings
from services.allocation.store import CaseNotOpen, MongoCaseStore
from shared import topics
from shared.consumer import IncomingMessage
from shared.events import CaseOutcome, ReferralReceived, decode
from shared.mongo import Session
from shared.runtime import build_runtime, service_app


class CloseCase(BaseModel):
    outcome: CaseOutcome = Field(description="Why the case ends.")


def create_app(settings: AllocationSettings | None = None) -> FastAPI:
    settings = settings or AllocationSettings()
    runtime = build_runtime(settings, produces=(topics.CASE_ALLOCATED, topics.CASE_CLOSED))
    store = MongoCaseStore(runtime.client, runtime.db, runtime.outbox, runtime.clock)

    runtime.on_start.append(lambda _: store.ensure_indexes())

    async def on_referral_received(message: IncomingMessage) -> None:
        event, referral = decode(message.value, ReferralReceived)

        async def allocate_case(session: Session) -> dict[str, Any]:
            open_case = await store.open_case_for(referral.family_id, session=session)
            allocation = domain.allocate(referral, open_case, runtime.clock())
            if allocation is None:
                return {"allocated": False, "decision": referral.decision.value}
            await store.save_allocation(
                allocation, session=session, correlation_id=event.correlationid
            )
            return {"allocated": True, "case_id": allocation.case_id}

        await runtime.processed.process_once(event, allocate_case)

    runtime.subscribe(topics.REFERRAL_RECEIVED, on_referral_received)

    app = service_app(
        runtime,
        title="Early Help allocation service",
        description="One family, one worker: cases allocated to locality teams and workers.",
    )

    @app.get("/cases", tags=["cases"], summary="Cases, newest first")
    async def list_cases(
        family_id: str | None = None,
        district: str | None = None,
        status: str | None = Query(default=None, pattern="^(open|closed)$"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        filters = {
            name: value
            for name, value in (
                ("family_id", family_id),
                ("district", district),
                ("status", status),
            )
            if value is not None
        }
        return [_jsonable(case) for case in await store.list_cases(filters, limit)]

    @app.get("/cases/{case_id}", tags=["cases"], summary="One case")
    async def get_case(case_id: str) -> dict[str, Any]:
        case = await store.get(case_id)
        if case is None:
            raise HTTPException(404, f"no case {case_id}")
        return _jsonable(case)

    @app.post("/cases/{case_id}/close", tags=["cases"], summary="Close a case with its outcome")
    async def close_case(case_id: str, request: CloseCase) -> dict[str, Any]:
        try:
            closed = await store.close(case_id, request.outcome)
        except CaseNotOpen:
            if await store.get(case_id) is None:
                raise HTTPException(404, f"no case {case_id}") from None
            raise HTTPException(409, f"case {case_id} is already closed") from None
        return closed.model_dump(mode="json")

    return app


def _jsonable(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return result
