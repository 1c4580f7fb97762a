"""Referral service: the single front door, over Kafka and HTTP."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.referral import domain, sample
from services.referral.access import POLICY
from services.referral.directory import DIRECTORY, DirectoryService, find_services
from services.referral.domain.partners import KNOWN_ROUTES, PartnerKeyRecord
from services.referral.handlers import (
    MAX_REASONS,
    FrontDoor,
    Origin,
    Outcome,
    SubmittedRecord,
    note_cases_closed,
    note_cases_open,
    receive_records,
)
from services.referral.handlers import access_log as access_handlers
from services.referral.handlers import erasure as erasure_handlers
from services.referral.handlers import partners as partner_handlers
from services.referral.handlers import retention as retention_handlers
from services.referral.handlers.grouped import GroupedReceipts
from services.referral.ports import Accepted, AccessEntry
from services.referral.settings import ReferralSettings, match_keys_of
from services.referral.store import MongoReferralStore
from shared import topics
from shared.access_log import PersonalData
from shared.auth import Refusals, SignedIn, protect
from shared.clock import utc_now
from shared.consumer import Delivered
from shared.events import (
    CaseAllocated,
    CaseClosed,
    HeadlineOutcome,
    ReferralSubmitted,
)
from shared.listing import NEXT_PAGE, PositionCursor, link_next
from shared.problems import FieldProblem, ProblemResponse, answer_with, problem
from shared.requests import RequestBody
from shared.runtime import Runtime, build_runtime, service_app
from shared.strict_json import MAX_NESTING, Unreadable, read_json

log = logging.getLogger(__name__)

HTTP_SOURCE = "/earlyhelp/referral/http"
REJECTED_TYPE = "/problems/referral-rejected"
"""The problem type of a rejected referral: stored, and answered on Kafka too."""
KEY_HEADER = "x-partner-key"


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


class RouteEntry(BaseModel):
    route: str = Field(description="The route's id, used in submissions.")
    name: str = Field(description="What the route is.")
    referral_source: str = Field(description="Children in Need census referral-source code.")
    referral_source_description: str = Field(description="What the census code means.")


KnownRoute = Annotated[str, Field(json_schema_extra={"enum": sorted(KNOWN_ROUTES)})]
"""A route id; one the front door does not know is refused with the list of those it does."""


class NewPartnerKey(RequestBody):
    model_config = ConfigDict(extra="forbid")

    partner_id: str = Field(
        min_length=1, max_length=200, description="The partner whose system will use the key."
    )
    routes: list[KnownRoute] = Field(
        min_length=1, description="Routes the partner may submit on (see GET /routes)."
    )
    name: str | None = Field(
        default=None, max_length=200, description="What the key is for, e.g. the system's name."
    )


class PartnerKeyView(BaseModel):
    key_id: str = Field(description="The key's id (not the key).")
    partner_id: str = Field(description="The partner the key belongs to.")
    routes: list[str] = Field(description="Routes it may submit on.")
    name: str | None = Field(description="What the key is for.")
    created_at: datetime = Field(description="When it was made.")
    created_by: str = Field(description="The administrator who made it.")
    revoked_at: datetime | None = Field(description="When it was revoked; refused from then.")
    revoked_by: str | None = Field(description="Who revoked it.")


class IssuedPartnerKey(PartnerKeyView):
    key: str = Field(description="The key itself: shown this once, send it as X-Partner-Key.")


class AccessRecord(BaseModel):
    at: datetime = Field(description="When.")
    sub: str = Field(description="Who: the token's subject.")
    role: str = Field(description="Their role.")
    action: str = Field(description="What, e.g. read_referral, erase_family.")
    family_id: str | None = Field(description="Which family (none for an unmatched rejection).")
    resource: str = Field(description="The record looked at or changed.")
    reason: str = Field(description="Why, as the caller stated it.")


class ErasureRequest(RequestBody):
    reason: str = Field(
        min_length=5, max_length=500, description="Why, e.g. the request's reference (recorded)."
    )


class ErasureView(BaseModel):
    family_id: str = Field(description="The family whose personal data was erased.")
    referrals: int = Field(description="Referrals whose submission was removed.")
    rejections: int = Field(description="Rejections whose stored submission was removed.")
    keys: int = Field(description="Family keys removed: the family will not be matched again.")
    erased_at: datetime = Field(description="When.")


class RetentionItem(BaseModel):
    family_id: str = Field(description="The family due for review.")
    district: str | None = Field(description="Its district.")
    last_closed_at: datetime = Field(description="When its last case closed.")
    last_referral_at: datetime | None = Field(description="When its last request came.")
    review_due_since: datetime = Field(description="When its retention period ended.")


class RetentionReview(BaseModel):
    as_of: datetime = Field(description="The time the review was worked out at.")
    retention_years: int = Field(description="Years personal data is kept after closure.")
    families: list[RetentionItem] = Field(description="Families due for review, oldest first.")


NO_REASON: dict[int | str, dict[str, Any]] = {
    400: {"description": "No reason given for reading a family's data"}
}

ERROR_STATUS: Mapping[type[Exception], int] = {
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Invalid: 422,
}
"""Each domain error's HTTP status; the body is FastAPI's usual ``{"detail": message}``."""


def create_app(
    settings: ReferralSettings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    settings = settings or ReferralSettings()
    runtime = build_runtime(
        settings,
        produces=(topics.REFERRAL_RECEIVED, topics.REFERRAL_REJECTED, topics.FAMILY_ERASED),
        clock=clock,
    )
    runtime.erase_families_on_request()
    store = MongoReferralStore(runtime.client, runtime.db, runtime.outbox)
    unit_of_work = store.unit_of_work
    front_door = _front_door(settings)
    directory_by_id = {service.id: service for service in front_door.directory}

    runtime.on_start.append(lambda _: store.ensure_indexes())
    _check_reference_data(runtime.reference_checks, runtime.on_start, front_door, settings)

    limit = settings.max_submission_bytes
    receipts = GroupedReceipts(store, front_door=front_door, clock=runtime.clock, max_bytes=limit)

    async def on_referral_submitted(batch: Sequence[SubmittedRecord]) -> int:
        """Submissions and records that are none, each answered once."""
        return await receive_records(
            batch, store=store, now=runtime.clock(), front_door=front_door, max_bytes=limit
        )

    runtime.subscribe(
        ReferralSubmitted,
        on_referral_submitted,
        answer_refused=on_referral_submitted,
        max_bytes=limit,
    )

    async def on_case_allocated(batch: Sequence[Delivered[CaseAllocated]]) -> int:
        cases = [(item.event.family_id, item.event.case_id) for item in batch]
        await note_cases_open(cases, store=store)
        return len(batch)

    async def on_case_closed(batch: Sequence[Delivered[CaseClosed]]) -> int:
        closures = [
            (item.event.family_id, item.event.case_id, item.event.closed_at) for item in batch
        ]
        await note_cases_closed(closures, store=store)
        return len(batch)

    runtime.subscribe(CaseAllocated, on_case_allocated)
    runtime.subscribe(CaseClosed, on_case_closed)

    app = service_app(
        runtime,
        title="Early Help referral service",
        description="The single front door: every referral route gives the same validated, "
        "matched and screened referral-received. Partners may POST here or publish the same "
        "Request for Early Help Support on the referral-submitted topic (see /asyncapi.json). "
        f"A submission is at most {limit} bytes of UTF-8 JSON (EARLYHELP_MAX_SUBMISSION_BYTES), "
        f"nested at most {MAX_NESTING} levels.",
    )
    for error, status_code in ERROR_STATUS.items():
        app.add_exception_handler(error, answer_with(status_code))

    refusals = protect(
        app, settings, runtime.db, POLICY, on_start=runtime.on_start, clock=runtime.clock
    )

    # -- partner keys: the administrators' API, and the gate of POST /referrals -----------

    @app.post(
        "/partner-keys",
        status_code=201,
        tags=["partners"],
        summary="Issue a partner key (shown once)",
    )
    async def issue_key(request: NewPartnerKey, admin: SignedIn) -> IssuedPartnerKey:
        record, key = await partner_handlers.issue_key(
            unit_of_work(),
            partner_id=request.partner_id,
            routes=request.routes,
            name=request.name,
            by=admin.sub,
            now=runtime.clock(),
        )
        return IssuedPartnerKey(**_key_view(record).model_dump(), key=key)

    @app.get(
        "/partner-keys",
        tags=["partners"],
        summary="Partner keys, without the keys, newest issued first, a page at a time",
        description="Newest issued first." + NEXT_PAGE,
    )
    async def list_keys(
        request: Request,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: PositionCursor = None,
    ) -> list[PartnerKeyView]:
        records, following = await partner_handlers.list_keys(unit_of_work(), limit, before=cursor)
        link_next(request, response, following)
        return [_key_view(record) for record in records]

    @app.delete("/partner-keys/{key_id}", tags=["partners"], summary="Revoke a partner key")
    async def revoke_key(
        key_id: Annotated[str, Path(max_length=40)], admin: SignedIn
    ) -> PartnerKeyView:
        record = await partner_handlers.revoke_key(
            unit_of_work(), key_id, by=admin.sub, now=runtime.clock()
        )
        return _key_view(record)

    # -- data protection: the access log, erasure and the retention review ----------------

    @app.get(
        "/access-log",
        tags=["access"],
        summary="Who looked at a family's data, and why, newest first, a page at a time",
        description="Newest first." + NEXT_PAGE,
    )
    async def access_log(
        request: Request,
        response: Response,
        family_id: Annotated[str | None, Query(description="Only this family.")] = None,
        sub: Annotated[str | None, Query(description="Only this member of staff.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        cursor: PositionCursor = None,
    ) -> list[AccessRecord]:
        entries, following = await access_handlers.access_log(
            unit_of_work(), family_id=family_id, sub=sub, limit=limit, before=cursor
        )
        link_next(request, response, following)
        return [_access_record(entry) for entry in entries]

    @app.post(
        "/families/{family_id}/erasure",
        tags=["data protection"],
        summary="Erase a family's personal data, keeping the statistics",
        responses={404: {"description": "Unknown family"}, 409: {"description": "Case open"}},
    )
    async def post_erasure(
        family_id: Annotated[str, Path(max_length=80)], request: ErasureRequest, admin: SignedIn
    ) -> ErasureView:
        erased = await erasure_handlers.erase_family(
            unit_of_work(),
            family_id,
            by=admin.sub,
            role=admin.role.value,
            reason=request.reason,
            now=runtime.clock(),
            match_keys=front_door.match_keys,
        )
        return ErasureView(**asdict(erased))

    @app.get(
        "/retention/review",
        tags=["data protection"],
        summary="Closed families whose personal data is past its retention period",
    )
    async def retention_review() -> RetentionReview:
        now, years = runtime.clock(), settings.retention_years
        due = await retention_handlers.review(unit_of_work(), now=now, years=years)
        return RetentionReview(
            as_of=now,
            retention_years=years,
            families=[RetentionItem(**asdict(family)) for family in due],
        )

    # -- referrals ------------------------------------------------------------------------

    async def refuse_partner(request: Request, refused: domain.Refused) -> NoReturn:
        """Record the refusal, then answer 401 (no usable key) or 403 (not this one's)."""
        status_code = 403 if isinstance(refused, domain.Forbidden) else 401
        await _record_refusal(refusals, request, status_code, refused)
        raise HTTPException(
            status_code, str(refused), headers={"WWW-Authenticate": "X-Partner-Key"}
        ) from None

    def answer(outcome: Outcome) -> JSONResponse:
        if isinstance(outcome, Accepted):
            return JSONResponse(
                _accepted_answer(outcome, directory_by_id).model_dump(mode="json"),
                status_code=202,
                headers={"location": f"/referrals/{outcome.referral_id}"},
            )
        return problem(
            422,
            f"the referral is rejected, stored as {outcome.rejection_id}: see problems",
            title="Referral rejected",
            type=REJECTED_TYPE,
            problems=[FieldProblem(**reason.model_dump()) for reason in outcome.reasons],
            rejection_id=outcome.rejection_id,
        )

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
            413: {"description": f"Over {limit} bytes, refused unread"},
            415: {"description": "Not application/json, refused unread"},
            422: {
                "description": "Rejected and stored, one problem per reason, with the"
                " rejection's id as `rejection_id`"
            },
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
        try:
            partner = await partner_handlers.authenticate(
                store.partner_keys, request.headers.get(KEY_HEADER)
            )
        except domain.Refused as refused:
            await refuse_partner(request, refused)
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
            try:
                partner_handlers.authorise(partner, document)
            except domain.Refused as refused:
                await refuse_partner(request, refused)
        # Each HTTP call is its own attempt; duplicates are caught by partner + submission id.
        correlation_id = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        origin = Origin(HTTP_SOURCE, str(uuid.uuid4()), correlation_id[:200])
        return answer(await receipts.receive(body, origin))

    @app.get(
        "/referrals/{referral_id}",
        tags=["referrals"],
        summary="A referral as received",
        responses=NO_REASON,
    )
    async def get_referral(referral_id: str, access: PersonalData) -> dict[str, Any]:
        found = await access_handlers.read_referral(
            unit_of_work(), referral_id, reader=access, now=runtime.clock()
        )
        return _jsonable(found)

    @app.get(
        "/rejections/{rejection_id}",
        tags=["referrals"],
        summary="A stored rejection",
        responses=NO_REASON,
    )
    async def get_rejection(rejection_id: str, access: PersonalData) -> dict[str, Any]:
        found = await access_handlers.read_rejection(
            unit_of_work(), rejection_id, reader=access, now=runtime.clock()
        )
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

    documented = app.openapi

    def openapi() -> dict[str, Any]:
        """The document, with the submission's schema the request body refers to."""
        schema = documented()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ReferralSubmitted" not in components:
            submitted = ReferralSubmitted.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(submitted.pop("$defs", {}))
            components["ReferralSubmitted"] = submitted
        return schema

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


def _refusal(status_code: int, code: str, message: str) -> ProblemResponse:
    """A submission refused unread: nothing was stored."""
    return problem(
        status_code, message, problems=[FieldProblem(field="", code=code, message=message)]
    )


def _front_door(settings: ReferralSettings) -> FrontDoor:
    """The council's postcode table and directory from their files; the sample county's
    only when sample data is asked for; otherwise empty (see ``_check_reference_data``)."""
    districts: Mapping[str, str] = {}
    directory: Sequence[DirectoryService] = ()
    if settings.postcode_districts_file is not None:
        table = TypeAdapter(dict[str, str]).validate_json(
            settings.postcode_districts_file.read_bytes()
        )
        districts = {outward.upper(): name for outward, name in table.items()}
    elif settings.sample_data:
        districts = sample.POSTCODE_DISTRICTS
    if settings.directory_file is not None:
        directory = DIRECTORY.validate_json(settings.directory_file.read_bytes())
    elif settings.sample_data:
        directory = sample.load_sample_directory()
    return FrontDoor(districts, tuple(directory), match_keys_of(settings))


def _check_reference_data(
    checks: dict[str, Callable[[], Awaitable[str]]],
    on_start: list[Callable[[Runtime], Awaitable[None]]],
    front_door: FrontDoor,
    settings: ReferralSettings,
) -> None:
    """Say in ``/ready`` what the front door works from, and warn at start of what is empty:
    an empty deployment stays ready, as it is unconfigured rather than broken."""

    def empty(variable: str, file: object) -> str:
        if file is not None:
            return f"empty: {file} ({variable}) holds none"
        return f"empty: set {variable}" + ("" if settings.sample_data else " (sample data is off)")

    empty_table = empty("EARLYHELP_POSTCODE_DISTRICTS_FILE", settings.postcode_districts_file)
    empty_directory = empty("EARLYHELP_DIRECTORY_FILE", settings.directory_file)

    async def postcode_districts() -> str:
        if not front_door.districts:
            return f"ok: {empty_table}"
        count = len(set(front_door.districts.values()))
        return f"ok: {len(front_door.districts)} outward codes in {count} districts"

    async def directory() -> str:
        if not front_door.directory:
            return f"ok: {empty_directory}"
        return f"ok: {len(front_door.directory)} services"

    async def warn(_: Runtime) -> None:
        if not front_door.districts:
            log.warning("no postcode table, so every request is outside the area: %s", empty_table)
        if not front_door.directory:
            log.warning("no directory, so no service is signposted: %s", empty_directory)

    checks["postcode_districts"] = postcode_districts
    checks["directory"] = directory
    on_start.append(warn)


async def _record_refusal(
    refusals: Refusals, request: Request, status_code: int, refused: domain.Refused
) -> None:
    await refusals.record(
        method=request.method,
        path=request.url.path,
        status=status_code,
        reason=str(refused),
        client=request.client.host if request.client else None,
        partner_id=refused.partner_id,
        key_id=refused.key_id,
    )


def _key_view(record: PartnerKeyRecord) -> PartnerKeyView:
    return PartnerKeyView(
        key_id=record.key_id,
        partner_id=record.partner_id,
        routes=list(record.routes),
        name=record.name,
        created_at=record.created_at,
        created_by=record.created_by,
        revoked_at=record.revoked_at,
        revoked_by=record.revoked_by,
    )


def _access_record(entry: AccessEntry) -> AccessRecord:
    return AccessRecord(**asdict(entry))


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
