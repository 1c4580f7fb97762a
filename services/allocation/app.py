"""Allocation service: consumes referral-received; publishes case-allocated, case-closed and
team-capacity-changed; gives managers their teams, workers, caseloads and the queue over HTTP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.allocation import handlers
from services.allocation.access import POLICY
from services.allocation.domain import (
    AlreadyExists,
    CaseNotOpen,
    NotFound,
    QueuePlace,
    Team,
    Worker,
    is_for_allocation,
)
from services.allocation.ports import QueueMark
from services.allocation.sample import sample_county
from services.allocation.settings import AllocationSettings
from services.allocation.store import MongoAllocationStore
from shared import topics
from shared.auth import protect
from shared.consumer import Delivered
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseOutcome,
    LevelOfNeed,
    ReferralReceived,
)
from shared.listing import (
    ANY_PART,
    NEXT_PAGE,
    PositionCursor,
    cursor_query,
    from_micros,
    join_cursor,
    link_next,
    micros,
    split_cursor,
)
from shared.problems import answer_with
from shared.requests import RequestBody
from shared.runtime import Runtime, build_runtime, service_app
from shared.unit_of_work import ConcurrentUpdate, retrying

log = logging.getLogger(__name__)

KEBAB_CASE = r"^[a-z0-9]+(-[a-z0-9]+)*$"
TeamId = Annotated[str, Path(pattern=KEBAB_CASE, max_length=80, description="Team id.")]
WorkerId = Annotated[str, Path(pattern=KEBAB_CASE, max_length=120, description="Worker id.")]


# ---------------------------------------------------------------------------------------------
# Requests


class NewTeam(RequestBody):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=KEBAB_CASE, max_length=80, examples=["northvale-north"])
    name: str = Field(min_length=1, max_length=120, examples=["Northvale North"])
    district: str = Field(
        pattern=KEBAB_CASE, max_length=80, description="District it serves.", examples=["northvale"]
    )
    cap_per_fte: int | None = Field(
        default=None,
        ge=1,
        le=60,
        description="Families per full-time worker; service default.",
    )


class TeamChange(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    cap_per_fte: int | None = Field(
        default=None, ge=1, le=60, description="Families per full-time worker."
    )


class NewWorker(RequestBody):
    """A lead practitioner joining a team."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=KEBAB_CASE, max_length=120, examples=["northvale-north-amara-okafor"])
    name: str = Field(min_length=1, max_length=120, examples=["Amara Okafor"])
    fte: float = Field(gt=0, le=1, description="Full-time equivalent, 0-1.", examples=[0.8])
    caseload_cap: int | None = Field(
        default=None,
        ge=0,
        le=60,
        description="The worker's own cap, e.g. a protected caseload; else FTE x team figure.",
    )


class WorkerChange(RequestBody):
    model_config = ConfigDict(extra="forbid")

    fte: float | None = Field(default=None, gt=0, le=1, description="New full-time equivalent.")
    caseload_cap: int | None = Field(default=None, ge=0, le=60, description="New own cap.")


class CloseCase(RequestBody):
    model_config = ConfigDict(extra="forbid")

    outcome: CaseOutcome = Field(description="Why the case ends.")


# ---------------------------------------------------------------------------------------------
# Answers


class WorkerView(BaseModel):
    id: str = Field(description="Worker id.")
    name: str = Field(description="The lead practitioner's name.")
    team_id: str = Field(description="Their team.")
    district: str = Field(description="Their team's district.")
    fte: float = Field(description="Full-time equivalent.")
    caseload_cap: int = Field(description="Families they may hold.")
    cap_is_own: bool = Field(description="Whether the cap is their own rather than FTE-based.")
    open_cases: int = Field(description="Families they hold now.")
    spare: int = Field(description="Families they can still take.")
    active: bool = Field(description="False once they have left.")


class WorkerDetail(WorkerView):
    case_ids: list[str] = Field(description="Their open cases.")


class TeamView(BaseModel):
    id: str = Field(description="Team id.")
    name: str = Field(description="Team name.")
    district: str = Field(description="District it serves.")
    cap_per_fte: int = Field(description="Families per full-time worker.")
    fte: float = Field(description="Current workers' total FTE.")
    capacity: int = Field(description="Current workers' caps added up.")
    open_cases: int = Field(description="Families the current workers hold.")
    workers: list[WorkerView] = Field(description="Current workers first, then leavers.")


class QueueEntry(BaseModel):
    place: int = Field(description="Place in the district's queue, 1 is next.")
    case_id: str = Field(description="The waiting case.")
    family_id: str = Field(description="Its family.")
    district: str = Field(description="Its district.")
    kind: AllocationKind = Field(description="Step-downs go first.")
    level_of_need: LevelOfNeed = Field(description="Higher need goes first.")
    referral_received_at: datetime = Field(description="Oldest goes first.")
    waiting_since: datetime = Field(description="When the case was queued.")


class CaseView(BaseModel):
    id: str = Field(description="Case id.")
    family_id: str = Field(description="The family.")
    district: str = Field(description="The family's district.")
    team_id: str | None = Field(description="Team holding the case, null while queued.")
    worker_id: str | None = Field(description="Lead practitioner, null while queued.")
    status: str = Field(description="open or closed.")
    allocation: AllocationStatus = Field(description="allocated or queued, while open.")
    kind: AllocationKind = Field(description="The rule that opened the case.")
    level_of_need: LevelOfNeed = Field(description="Level of need at referral.")
    social_care_case_reference: str | None = Field(description="For step-downs, co-working.")
    referral_ids: list[str] = Field(description="Every referral that opened or joined it.")
    opened_at: datetime = Field(description="When the case opened.")
    allocated_at: datetime | None = Field(description="When it was last given a worker.")
    outcome: CaseOutcome | None = Field(default=None, description="Why it closed.")
    closed_at: datetime | None = Field(default=None, description="When it closed.")


class Departure(BaseModel):
    worker_id: str = Field(description="The leaver.")
    reallocated: list[CaseAllocated] = Field(description="Each of their cases' new allocation.")


QUEUE_CURSOR = f"^{ANY_PART}~-?[0-9]{{1,2}}~-?[0-9]{{1,2}}~[0-9]{{1,16}}~{ANY_PART}~[0-9]{{1,9}}$"
"""District, priority, need rank, received (microseconds), case id, place number."""


def queue_cursor(mark: QueueMark) -> str:
    place = mark.place
    return join_cursor(
        mark.district,
        place.priority,
        place.need_rank,
        micros(place.referral_received_at),
        place.case_id,
        mark.number,
    )


def queue_mark(cursor: str) -> QueueMark:
    district, priority, need_rank, received, case_id, number = split_cursor(cursor)
    place = QueuePlace(int(priority), int(need_rank), from_micros(int(received)), case_id)
    return QueueMark(district, place, int(number))


# ---------------------------------------------------------------------------------------------
# The service


BUSY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Overtaken by other writes after every retry; try again (Retry-After)"}
}


def create_app(settings: AllocationSettings | None = None) -> FastAPI:
    settings = settings or AllocationSettings()
    runtime = build_runtime(
        settings,
        produces=(topics.CASE_ALLOCATED, topics.CASE_CLOSED, topics.TEAM_CAPACITY_CHANGED),
    )
    runtime.erase_families_on_request()
    store = MongoAllocationStore(runtime.client, runtime.db, runtime.outbox)
    views = store.views()

    async def prepare(_: Runtime) -> None:
        await store.ensure_indexes()
        if built := await store.rebuild_districts():
            log.info("built %d district aggregates from the cases", built)
        if listed := await store.list_existing_cases():
            log.info("listed %d cases kept before the lists were", listed)
        if settings.sample_data:
            await handlers.seed(
                store.unit_of_work, *sample_county(runtime.clock()), now=runtime.clock()
            )
        elif not await views.count_teams():
            log.warning(
                "no teams configured: referrals will queue until teams and workers are added"
                " with POST /teams (EARLYHELP_SAMPLE_DATA=true loads the sample county's)"
            )

    runtime.on_start.append(prepare)

    async def teams_check() -> str:
        teams = await views.count_teams()
        if teams:
            return f"ok: {teams} teams"
        return "ok: empty: no teams configured; add them with POST /teams"

    runtime.reference_checks["teams"] = teams_check

    async def on_referral_received(batch: Sequence[Delivered[ReferralReceived]]) -> int:
        """A poll's referrals placed in order in one transaction (a batch of one is the same
        path); overtaken by another replica, the batch is decided again."""
        wanted = [item for item in batch if is_for_allocation(item.event)]
        to_allocate: set[str] = set()

        async def place_all(session: Any, fresh: list[int]) -> None:
            placed = await handlers.place_referrals(
                store.unit_of_work(session),
                [(wanted[index].event, wanted[index].envelope.correlationid) for index in fresh],
                now=runtime.clock(),
            )
            to_allocate.clear()
            to_allocate.update(placed.to_allocate)

        events = [item.envelope for item in wanted]
        placed = (
            await retrying(lambda: runtime.processed.process_many(events, place_all))
            if wanted
            else 0
        )
        for district in sorted(to_allocate):
            await handlers.allocate_queue(store.unit_of_work, district, now=runtime.clock())
        return placed + len(batch) - len(wanted)

    runtime.subscribe(ReferralReceived, on_referral_received)

    async def allocate_queues() -> None:
        await handlers.allocate_all_queues(store.unit_of_work, now=runtime.clock())

    runtime.every(settings.queue_sweep_interval_s, "queue-sweep", allocate_queues)

    app = service_app(
        runtime,
        title="Early Help allocation service",
        description="One family, one worker: cases allocated to locality teams and lead"
        " practitioners within their caseload caps, or queued until a place frees.",
    )
    protect(app, settings, runtime.db, POLICY, on_start=runtime.on_start, clock=runtime.clock)

    app.add_exception_handler(NotFound, answer_with(404))
    app.add_exception_handler(AlreadyExists, answer_with(409))
    app.add_exception_handler(CaseNotOpen, answer_with(409))
    # Overtaken by other replicas after every retry: busy, not broken.
    app.add_exception_handler(ConcurrentUpdate, answer_with(503, headers={"Retry-After": "1"}))

    # -----------------------------------------------------------------------------------------
    # Teams and workers

    @app.get("/teams", tags=["teams"], summary="Teams, with each worker's open cases against cap")
    async def list_teams(district: str | None = None) -> list[TeamView]:
        return [TeamView.model_validate(team) for team in await views.list_teams(district)]

    @app.post(
        "/teams",
        tags=["teams"],
        status_code=201,
        summary="Create a locality team",
        responses={409: {"description": "A team with this id exists"}, **BUSY},
    )
    async def create_team(request: NewTeam) -> TeamView:
        team = Team(
            request.id,
            request.name,
            request.district,
            request.cap_per_fte or settings.default_cap_per_fte,
        )
        await handlers.create_team(
            store.unit_of_work, team, now=runtime.clock(), correlation_id=_admin_correlation()
        )
        return await _team(request.id)

    @app.get("/teams/{team_id}", tags=["teams"], summary="One team and its workers")
    async def get_team(team_id: TeamId) -> TeamView:
        return await _team(team_id)

    @app.patch(
        "/teams/{team_id}",
        tags=["teams"],
        summary="Rename a team or change its cap",
        responses=BUSY,
    )
    async def change_team(team_id: TeamId, request: TeamChange) -> TeamView:
        await handlers.change_team(
            store.unit_of_work,
            team_id,
            name=request.name,
            cap_per_fte=request.cap_per_fte,
            now=runtime.clock(),
            correlation_id=_admin_correlation(),
        )
        return await _team(team_id)

    @app.post(
        "/teams/{team_id}/workers",
        tags=["teams"],
        status_code=201,
        summary="A worker joins the team; the district's queue is allocated to them",
        responses={409: {"description": "A worker with this id exists"}, **BUSY},
    )
    async def add_worker(team_id: TeamId, request: NewWorker) -> WorkerDetail:
        now = runtime.clock()
        worker = Worker(
            id=request.id,
            name=request.name,
            team_id=team_id,
            district="",
            fte=request.fte,
            cap_override=request.caseload_cap,
            active=True,
            joined_at=now,
        )
        await handlers.add_worker(
            store.unit_of_work, worker, now=now, correlation_id=_admin_correlation()
        )
        return await _worker(request.id)

    @app.get("/workers/{worker_id}", tags=["teams"], summary="One worker and their cases")
    async def get_worker(worker_id: WorkerId) -> WorkerDetail:
        return await _worker(worker_id)

    @app.patch(
        "/workers/{worker_id}",
        tags=["teams"],
        summary="Change a worker's FTE or own cap",
        responses=BUSY,
    )
    async def change_worker(worker_id: WorkerId, request: WorkerChange) -> WorkerDetail:
        await handlers.change_worker(
            store.unit_of_work,
            worker_id,
            fte=request.fte,
            caseload_cap=request.caseload_cap,
            now=runtime.clock(),
            correlation_id=_admin_correlation(),
        )
        return await _worker(worker_id)

    @app.post(
        "/workers/{worker_id}/leave",
        tags=["teams"],
        summary="A worker leaves; their open cases are reallocated or queued",
        responses=BUSY,
    )
    async def worker_leaves(worker_id: WorkerId) -> Departure:
        moved = await handlers.worker_leaves(
            store.unit_of_work, worker_id, now=runtime.clock(), correlation_id=_admin_correlation()
        )
        return Departure(worker_id=worker_id, reallocated=moved)

    async def _team(team_id: str) -> TeamView:
        team = await views.get_team(team_id)
        if team is None:
            raise HTTPException(404, f"no team {team_id}")
        return TeamView.model_validate(team)

    async def _worker(worker_id: str) -> WorkerDetail:
        worker = await views.get_worker(worker_id)
        if worker is None:
            raise HTTPException(404, f"no worker {worker_id}")
        return WorkerDetail.model_validate(worker)

    # -----------------------------------------------------------------------------------------
    # Queue and cases

    @app.get(
        "/queue",
        tags=["cases"],
        summary="Cases waiting for a worker, in allocation order, a page at a time",
        description="By district, then in the order cases will be allocated; `place` is a"
        " case's place in its district's queue (1 is next), as it stood when the page was"
        " read." + NEXT_PAGE,
    )
    async def queue(
        request: Request,
        response: Response,
        district: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Cases in the page.")] = 100,
        cursor: Annotated[str | None, cursor_query(QUEUE_CURSOR)] = None,
    ) -> list[QueueEntry]:
        page, following = await views.queue(
            district, limit=limit, after=None if cursor is None else queue_mark(cursor)
        )
        link_next(request, response, None if following is None else queue_cursor(following))
        return [
            QueueEntry(
                place=case["place"],
                case_id=case["_id"],
                family_id=case["family_id"],
                district=case["district"],
                kind=case["kind"],
                level_of_need=case["level_of_need"],
                referral_received_at=case["referral_received_at"],
                waiting_since=case["opened_at"],
            )
            for case in page
        ]

    @app.get(
        "/cases",
        tags=["cases"],
        summary="Cases, newest first, a page at a time",
        description="Newest opened first." + NEXT_PAGE,
    )
    async def list_cases(
        request: Request,
        response: Response,
        family_id: str | None = None,
        district: str | None = None,
        worker_id: str | None = None,
        status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
        cursor: PositionCursor = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CaseView]:
        filters = {
            name: value
            for name, value in (
                ("family_id", family_id),
                ("district", district),
                ("worker_id", worker_id),
                ("status", status),
            )
            if value is not None
        }
        page, following = await views.list_cases(filters, limit, before=cursor)
        link_next(request, response, following)
        return [_case_view(case) for case in page]

    @app.get("/cases/{case_id}", tags=["cases"], summary="One case")
    async def get_case(case_id: str) -> CaseView:
        case = await views.get_case(case_id)
        if case is None:
            raise HTTPException(404, f"no case {case_id}")
        return _case_view(case)

    @app.post(
        "/cases/{case_id}/close",
        tags=["cases"],
        summary="Close a case with its outcome",
        responses={409: {"description": "The case is closed already"}, **BUSY},
    )
    async def close_case(case_id: str, request: CloseCase) -> dict[str, Any]:
        closed = await handlers.close_case(
            store.unit_of_work, case_id, request.outcome, now=runtime.clock()
        )
        return closed.model_dump(mode="json")

    return app


def _case_view(case: dict[str, Any]) -> CaseView:
    return CaseView.model_validate({**case, "id": case["_id"]})


def _admin_correlation() -> str:
    return f"admin-{uuid.uuid4()}"
