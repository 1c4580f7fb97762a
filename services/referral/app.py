"""Referral service: the single front door, over Kafka and HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter

from services.referral import domain
from services.referral.access import POLICY, PersonalData, add_access_log
from services.referral.directory import DirectoryService, find_services
from services.referral.erasure import add_erasure
from services.referral.handlers import (
    MAX_NESTING,
    MAX_REASONS,
    Accepted,
    FrontDoor,
    Origin,
    Outcome,
    Unreadable,
    lookups_of,
    note_case_closed,
    note_case_open,
    read_json,
    receive_body,
    receive_message,
)
from services.referral.partners import add_partner_keys
from services.referral.retention import add_retention_review
from services.referral.settings import ReferralSettings
from services.referral.store import MongoReferralStore
from shared import topics
from shared.auth import protect
from shared.clock import utc_now
from shared.consumer import IncomingMessage
from shared.events import (
    CaseAllocated,
    CaseClosed,
    HeadlineOutcome,
    ReferralSubmitted,
    RejectionReason,
    decode,
)
from shared.mongo import Session, in_transaction
from shared.runtime import build_runtime, service_app

HTTP_SOURCE = "/earlyhelp/referral/http"


class SignpostedService(BaseModel):
    id: str = Field(description="Directory service id.")
    name: str = Field(description="The service's name.")
    organisation: str = Field(description="Who runs it.")
    url: str | None = Field(default=None, description="Where the family can find it.")


class ReferralAnswer(BaseModel):
    """The front door's answer to an accepted request (or to its duplicate)."""

    status: str = Field(description="Always accepted.", examples=["accepted"])
    referral_id: str = Field(description="The referral's id: the same for a duplicate.")
    family_id: str = Field(description="The family the request was matched to.")
    district: str = Field(description="District decided by the postcode.")
    decision: str = Field(description="signpost, early_help or step_up.")
    screening_reason: str | None = Field(description="Why screening decided so.")
    family_match: str | None = Field(description="upn, nhs_number, surname_dob_postcode or new.")
    is_re_referral: bool = Field(description="Within 12 months of the family's last closure.")
    family_has_open_case: bool = Field(description="The family keeps its open case and worker.")
    signposted_services: list[SignpostedService] = Field(
        description="Local services offered, for a signpost decision."
    )
    duplicate: bool = Field(description="This submission was accepted before.")


class RejectionAnswer(BaseModel):
    """Why a request cannot be accepted: one reason per problem found."""

    status: str = Field(description="Always rejected.", examples=["rejected"])
    rejection_id: str = Field(description="The stored rejection's id.")
    reasons: list[RejectionReason] = Field(description="One per problem: field, code, message.")


class RefusalAnswer(BaseModel):
    """A request refused unread (too large, or not JSON): nothing was stored."""

    status: str = Field(description="Always refused.", examples=["refused"])
    reasons: list[RejectionReason] = Field(description="Why: field, code, message.")


class RouteEntry(BaseModel):
    route: str = Field(description="The route's id, used in submissions.")
    name: str = Field(description="What the route is.")
    referral_source: str = Field(description="Children in Need census referral-source code.")
    referral_source_description: str = Field(description="What the census code means.")


def create_app(
    settings: ReferralSettings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    settings = settings or ReferralSettings()
    runtime = build_runtime(
        settings, produces=(topics.REFERRAL_RECEIVED, topics.REFERRAL_REJECTED), clock=clock
    )
    store = MongoReferralStore(runtime.client, runtime.db, runtime.outbox)
    front_door = _front_door(settings)
    directory_by_id = {service.id: service for service in front_door.directory}

    runtime.on_start.append(lambda _: store.ensure_indexes())

    limit = settings.max_submission_bytes

    async def on_referral_submitted(message: IncomingMessage) -> None:
        await receive_message(
            message.value,
            position=_position(message),
            store=store,
            now=runtime.clock(),
            front_door=front_door,
            max_bytes=limit,
        )

    async def on_referrals_submitted(messages: list[IncomingMessage]) -> int:
        """A poll's submissions in one transaction: a few reads each, a few writes in all."""

        lookups = [lookups_of(message.value, max_bytes=limit) for message in messages]

        async def receive_all(session: Session) -> int:
            batch = store.batch(session)
            await batch.prefetch([lookup for lookup in lookups if lookup is not None])
            now = runtime.clock()
            fresh = 0
            for message in messages:
                outcome = await receive_message(
                    message.value,
                    position=_position(message),
                    store=batch,
                    now=now,
                    front_door=front_door,
                    max_bytes=limit,
                )
                fresh += not (isinstance(outcome, Accepted) and outcome.duplicate)
            await batch.flush()
            return fresh

        return await in_transaction(runtime.client, receive_all)

    async def on_case_allocated(message: IncomingMessage) -> None:
        _, allocated = decode(message.value, CaseAllocated)
        await note_case_open(allocated.family_id, allocated.case_id, store=store)

    async def on_case_closed(message: IncomingMessage) -> None:
        _, closed = decode(message.value, CaseClosed)
        await note_case_closed(closed.family_id, closed.case_id, closed.closed_at, store=store)

    runtime.subscribe(topics.REFERRAL_SUBMITTED, on_referral_submitted, many=on_referrals_submitted)

    async def on_cases_allocated(messages: list[IncomingMessage]) -> int:
        cases = [decode(message.value, CaseAllocated)[1] for message in messages]
        await store.note_cases_open([(case.family_id, case.case_id) for case in cases])
        return len(cases)

    runtime.subscribe(topics.CASE_ALLOCATED, on_case_allocated, many=on_cases_allocated)
    runtime.subscribe(topics.CASE_CLOSED, on_case_closed)

    app = service_app(
        runtime,
        title="Early Help referral service",
        description="The single front door: every referral route gives the same validated, "
        "matched and screened referral-received. Partners may POST here or publish the same "
        "Request for Early Help Support on the referral-submitted topic (see /asyncapi.json). "
        f"A submission is at most {limit} bytes of UTF-8 JSON (EARLYHELP_MAX_SUBMISSION_BYTES), "
        f"nested at most {MAX_NESTING} levels.",
    )

    refusals = protect(app, settings, runtime.db, POLICY, clock=runtime.clock)
    partner_keys, partners = add_partner_keys(app, runtime.db, refusals, runtime.clock)
    access_log = add_access_log(app, runtime.db, runtime.clock)
    add_erasure(app, runtime.client, runtime.db, access_log, runtime.clock)
    add_retention_review(app, runtime.db, settings.retention_years, runtime.clock)
    runtime.on_start.append(lambda _: partner_keys.ensure_indexes())
    runtime.on_start.append(lambda _: access_log.ensure_indexes())

    def answer(outcome: Outcome) -> JSONResponse:
        if isinstance(outcome, Accepted):
            return JSONResponse(
                _accepted_answer(outcome, directory_by_id).model_dump(mode="json"),
                status_code=202,
                headers={"location": f"/referrals/{outcome.referral_id}"},
            )
        rejected = RejectionAnswer(
            status="rejected", rejection_id=outcome.rejection_id, reasons=outcome.reasons
        )
        return JSONResponse(rejected.model_dump(mode="json"), status_code=422)

    @app.post(
        "/referrals",
        status_code=202,
        tags=["referrals"],
        summary="Submit a Request for Early Help Support",
        description="Validated, matched to a family and screened. The same partner_id and "
        "submission_id sent again (here or on Kafka) gives the same referral and no second "
        "referral-received. Invalid requests are stored and answered with every reason (at "
        f"most {MAX_REASONS} listed). The body is UTF-8 JSON (content-type application/json) "
        f"of at most {limit} bytes; a larger one is refused with 413 before it is read in "
        "full. JSON that is nested more than "
        f"{MAX_NESTING} levels, repeats a key, holds NaN or Infinity or a lone surrogate is "
        "rejected as unreadable.",
        responses={
            202: {"model": ReferralAnswer, "description": "Accepted (or accepted before)"},
            413: {"model": RefusalAnswer, "description": f"Over {limit} bytes, refused unread"},
            415: {"model": RefusalAnswer, "description": "Not application/json, refused unread"},
            422: {"model": RejectionAnswer, "description": "Rejected, one reason per problem"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ReferralSubmitted"},
                        "examples": _request_examples(),
                    }
                },
            }
        },
    )
    async def post_referral(request: Request) -> JSONResponse:
        partner = await partners.authenticate(request)
        media_type = request.headers.get("content-type", "application/json")
        if not _is_json(media_type):
            return _refusal(
                415,
                "unsupported_media_type",
                f"content-type {media_type[:100]!r}: send application/json",
            )
        body = await _body_within(request, limit)
        if body is None:
            return _refusal(413, "too_large", f"a submission is at most {limit} bytes")
        try:
            document: Any = read_json(body, max_bytes=limit)
        except Unreadable:
            pass  # answered below, with the reason, like any unreadable submission
        else:
            await partners.authorise(request, partner, document)
        # Each HTTP call is its own attempt; duplicates are caught by partner + submission id.
        correlation_id = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        origin = Origin(HTTP_SOURCE, str(uuid.uuid4()), correlation_id[:200])
        outcome = await receive_body(
            body,
            origin=origin,
            store=store,
            now=runtime.clock(),
            front_door=front_door,
            max_bytes=limit,
        )
        return answer(outcome)

    @app.get("/referrals/{referral_id}", tags=["referrals"], summary="A referral as received")
    async def get_referral(referral_id: str, access: PersonalData) -> dict[str, Any]:
        found = await store.get_referral(referral_id)
        if found is None:
            raise HTTPException(404, f"no referral {referral_id}")
        await access.record("read_referral", family_id=found["family_id"], resource=referral_id)
        return _jsonable(found)

    @app.get("/rejections/{rejection_id}", tags=["referrals"], summary="A stored rejection")
    async def get_rejection(rejection_id: str, access: PersonalData) -> dict[str, Any]:
        found = await store.get_rejection(rejection_id)
        if found is None:
            raise HTTPException(404, f"no rejection {rejection_id}")
        await access.record("read_rejection", family_id=None, resource=rejection_id)
        return _jsonable(found)

    @app.get("/routes", tags=["catalogue"], summary="Referral routes and their census codes")
    async def get_routes() -> list[RouteEntry]:
        return [
            RouteEntry(
                route=route.id,
                name=route.name,
                referral_source=route.referral_source,
                referral_source_description=domain.CIN_REFERRAL_SOURCES[route.referral_source],
            )
            for route in domain.ROUTE_CATALOGUE
        ]

    @app.get("/districts", tags=["catalogue"], summary="Districts and their postcode areas")
    async def get_districts() -> dict[str, list[str]]:
        districts: dict[str, list[str]] = {}
        for outward, district in sorted(front_door.districts.items()):
            districts.setdefault(district, []).append(outward)
        return districts

    @app.get(
        "/directory/services",
        tags=["catalogue"],
        summary="Local services, filtered by need, age and district",
    )
    async def get_directory_services(
        need: Annotated[HeadlineOutcome | None, Query(description="A headline outcome.")] = None,
        age: Annotated[int | None, Query(ge=0, le=25, description="A child's age.")] = None,
        district: Annotated[str | None, Query(description="A district name.")] = None,
    ) -> list[DirectoryService]:
        return find_services(
            front_door.directory,
            needs=[need] if need else [],
            ages=[age] if age is not None else [],
            district=district,
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            submitted = ReferralSubmitted.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(submitted.pop("$defs", {}))
            components["ReferralSubmitted"] = submitted
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed ``limit``: by its declared length
    first, then by counting what arrives, so an unbounded stream is never held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refusal(status_code: int, code: str, message: str) -> JSONResponse:
    refused = RefusalAnswer(
        status="refused", reasons=[RejectionReason(field="", code=code, message=message)]
    )
    return JSONResponse(refused.model_dump(mode="json"), status_code=status_code)


def _front_door(settings: ReferralSettings) -> FrontDoor:
    sample = FrontDoor.sample()
    districts: Mapping[str, str] = sample.districts
    directory: Sequence[DirectoryService] = sample.directory
    if settings.postcode_districts_file is not None:
        districts = TypeAdapter(dict[str, str]).validate_json(
            settings.postcode_districts_file.read_bytes()
        )
        districts = {outward.upper(): name for outward, name in districts.items()}
    if settings.directory_file is not None:
        directory = TypeAdapter(list[DirectoryService]).validate_json(
            settings.directory_file.read_bytes()
        )
    return FrontDoor(districts, tuple(directory))


def _accepted_answer(
    outcome: Accepted, directory: Mapping[str, DirectoryService]
) -> ReferralAnswer:
    return ReferralAnswer(
        status="accepted",
        referral_id=outcome.referral_id,
        family_id=outcome.family_id,
        district=outcome.district,
        decision=outcome.decision,
        screening_reason=outcome.screening_reason,
        family_match=outcome.family_match,
        is_re_referral=outcome.is_re_referral,
        family_has_open_case=outcome.family_has_open_case,
        signposted_services=[
            SignpostedService(
                id=service.id,
                name=service.name,
                organisation=service.organization.name,
                url=service.url,
            )
            for service_id in outcome.signposted_services
            if (service := directory.get(service_id)) is not None
        ],
        duplicate=outcome.duplicate,
    )


def _request_examples() -> dict[str, Any]:
    """The contract's own examples, named by route, so OpenAPI and AsyncAPI show the same."""
    extra: Any = ReferralSubmitted.model_config.get("json_schema_extra") or {}
    return {
        example["route"]: {
            "summary": f"A request on the {example['route']} route",
            "value": example,
        }
        for example in extra.get("examples", [])
    }


def _jsonable(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return result


def _position(message: IncomingMessage) -> Origin:
    """Where a record sits in the log: the identity of bytes too broken to have their own."""
    return Origin(
        source=f"kafka:{message.topic}",
        event_id=f"{message.partition}/{message.offset}",
        correlation_id=str(uuid.uuid4()),
    )
