"""Referral service: the single front door, over Kafka and HTTP."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.referral import domain
from services.referral.handlers import (
    Accepted,
    Origin,
    Outcome,
    receive_submission,
    receive_unreadable,
)
from services.referral.settings import ReferralSettings
from services.referral.store import MongoReferralStore
from shared import topics
from shared.consumer import IncomingMessage
from shared.events import UndecodableEvent, read_envelope
from shared.runtime import build_runtime, service_app

HTTP_SOURCE = "/earlyhelp/referral/http"


def create_app(settings: ReferralSettings | None = None) -> FastAPI:
    settings = settings or ReferralSettings()
    runtime = build_runtime(settings, produces=(topics.REFERRAL_RECEIVED, topics.REFERRAL_REJECTED))
    store = MongoReferralStore(runtime.client, runtime.db, runtime.outbox)

    runtime.on_start.append(lambda _: store.ensure_indexes())

    async def on_referral_submitted(message: IncomingMessage) -> None:
        try:
            event = read_envelope(message.value)
        except UndecodableEvent as error:
            origin = Origin(
                source=f"kafka:{message.topic}",
                event_id=f"{message.partition}/{message.offset}",
                correlation_id=str(uuid.uuid4()),
            )
            await receive_unreadable(
                message.value, str(error), origin=origin, store=store, now=runtime.clock()
            )
            return
        origin = Origin(source=event.source, event_id=event.id, correlation_id=event.correlationid)
        await receive_submission(event.data, origin=origin, store=store, now=runtime.clock())

    runtime.subscribe(topics.REFERRAL_SUBMITTED, on_referral_submitted)

    app = service_app(
        runtime,
        title="Early Help referral service",
        description="The single front door: every referral route gives the same validated, "
        "matched and screened referral-received.",
    )

    @app.post(
        "/referrals",
        status_code=202,
        tags=["referrals"],
        summary="Submit a Request for Early Help Support",
        responses={422: {"description": "Rejected, with one reason per problem"}},
    )
    async def post_referral(request: Request) -> JSONResponse:
        correlation_id = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        body = await request.body()
        try:
            document: Any = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            origin = Origin(HTTP_SOURCE, str(uuid.uuid4()), correlation_id)
            rejected = await receive_unreadable(
                body, f"not JSON: {error}", origin=origin, store=store, now=runtime.clock()
            )
            return _answer(rejected)
        # Each HTTP call is its own attempt; duplicates are caught by partner + submission id.
        origin = Origin(HTTP_SOURCE, str(uuid.uuid4()), correlation_id)
        outcome = await receive_submission(
            document, origin=origin, store=store, now=runtime.clock()
        )
        return _answer(outcome)

    @app.get("/referrals/{referral_id}", tags=["referrals"], summary="A referral as received")
    async def get_referral(referral_id: str) -> JSONResponse:
        found = await store.get_referral(referral_id)
        if found is None:
            return JSONResponse({"detail": f"no referral {referral_id}"}, status_code=404)
        return JSONResponse(json.loads(json.dumps(found, default=str)))

    @app.get("/routes", tags=["referrals"], summary="Referral routes and their CIN codes")
    async def get_routes() -> dict[str, str]:
        return dict(domain.ROUTES)

    return app


def _answer(outcome: Outcome) -> JSONResponse:
    if isinstance(outcome, Accepted):
        return JSONResponse(
            {
                "status": "accepted",
                "referral_id": outcome.referral_id,
                "family_id": outcome.family_id,
                "district": outcome.district,
                "decision": outcome.decision,
                "duplicate": outcome.duplicate,
            },
            status_code=202,
        )
    return JSONResponse(
        {
            "status": "rejected",
            "rejection_id": outcome.rejection_id,
            "reasons": [reason.model_dump() for reason in outcome.reasons],
        },
        status_code=422,
    )
