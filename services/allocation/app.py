"""Allocation service: consumes referral-received; publishes case-allocated, case-closed and
team-capacity-changed; gives managers their teams, workers, caseloads and the queue over HTTP.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from services.allocation.access import POLICY
from services.allocation.domain import is_for_allocation
from services.allocation.settings import AllocationSettings
from services.allocation.store import (
    AllocationStore,
    AlreadyExists,
    CaseNotOpen,
    NotFound,
    TeamSpec,
    WorkerSpec,
)
from shared import topics
from shared.auth import protect
from shared.consumer import IncomingMessage
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseOutcome,
    LevelOfNeed,
    ReferralReceived,
    decode,
)
from shared.mongo import Document, Session
from shared.runtime import build_runtime, service_app

FAMILY_RACE_ATTEMPTS = 3
"""Tries of a referral whose family's case another replica opened at the same moment."""

KEBAB_CASE = r"^[a-z0-9]+(-[a-z0-9]+)*$"
TeamId = Annotated[str, Path(pattern=KEBAB_CASE, max_length=80, description="Team id.")]
WorkerId = Annotated[str, Path(pattern=KEBAB_CASE, max_length=120, description="Worker id.")]


# ---------------------------------------------------------------------------------------------
# Requests


class NewTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=KEBAB_CASE, max_length=80, examples=["northvale-north"])
    name: str = Field(min_length=1, max_length=120, examples=["Northvale North"])
    district: str = Field(
        pattern=KEBAB_CASE, max_length=80, description="District it serves.", examples=["northvale"]
    )
    cap_per_fte: int | None = Field(
        default=None, ge=1, le=60, description="Families per full-time worker; service default."
    )


class TeamChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    cap_per_fte: int | None = Field(
        default=None, ge=1, le=60, description="Families per full-time worker."
    )


class NewWorker(BaseModel):
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


class WorkerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fte: float | None = Field(default=None, gt=0, le=1, description="New full-time equivalent.")
    caseload_cap: int | None = Field(default=None, ge=0, le=60, description="New own cap.")


class CloseCase(BaseModel):
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


# ---------------------------------------------------------------------------------------------
# The service


def sample_county() -> tuple[list[TeamSpec], list[WorkerSpec]]:
    """Wessexshire's nine locality teams and their lead practitioners."""
    data = json.loads(files("services.allocation").joinpath("data/teams.json").read_text())
    return (
        [TeamSpec(**team) for team in data["teams"]],
        [WorkerSpec(**worker) for worker in data["workers"]],
    )


def create_app(settings: AllocationSettings | None = None) -> FastAPI:
    settings = settings or AllocationSettings()
    runtime = build_runtime(
        settings,
        produces=(topics.CASE_ALLOCATED, topics.CASE_CLOSED, topics.TEAM_CAPACITY_CHANGED),
    )
    store = AllocationStore(runtime.client, runtime.db, runtime.outbox, runtime.clock)

    runtime.on_start.append(lambda _: store.ensure_indexes())
    if settings.seed_sample_teams:

        async def seed(_: object) -> None:
            await store.seed(*sample_county())

        runtime.on_start.append(seed)

    async def on_referral_received(message: IncomingMessage) -> None:
        event, referral = decode(message.value, ReferralReceived)
        if not is_for_allocation(referral):
            return
        placed: list[CaseAllocated] = []

        async def place(session: Session) -> dict[str, Any]:
            placed.clear()
            allocation = await store.place_referral(
                referral, session=session, correlation_id=event.correlationid
            )
            placed.append(allocation)
            return {"case_id": allocation.case_id, "status": allocation.status.value}

        for attempt in range(1, FAMILY_RACE_ATTEMPTS + 1):
            try:
                await runtime.processed.process_once(event, place)
                break
            except DuplicateKeyError:
                # Another replica opened this family's case at the same moment: try again,
                # and this referral joins it.
                if attempt == FAMILY_RACE_ATTEMPTS:
                    raise
        if placed and placed[0].status is AllocationStatus.QUEUED:
            await store.drain_queue(referral.district)

    async def on_referrals_received(messages: list[IncomingMessage]) -> int:
        """A poll's referrals placed in order in one transaction, with bulk writes.

        A clash with another replica fails the batch, and the consumer takes the referrals
        one at a time, each with its own retry.
        """
        decoded = [decode(message.value, ReferralReceived) for message in messages]
        wanted = [(event, referral) for event, referral in decoded if is_for_allocation(referral)]
        queued_in: set[str] = set()

        async def place_all(session: Session, fresh: list[int]) -> list[dict[str, Any]]:
            placed = await store.place_referrals(
                [(wanted[index][1], wanted[index][0].correlationid) for index in fresh],
                session=session,
            )
            queued_in.clear()
            queued_in.update(
                allocation.district
                for allocation in placed
                if allocation.status is AllocationStatus.QUEUED
            )
            return [
                {"case_id": allocation.case_id, "status": allocation.status.value}
                for allocation in placed
            ]

        events = [event for event, _ in wanted]
        placed = await runtime.processed.process_many(events, place_all) if wanted else 0
        for district in sorted(queued_in):
            await store.drain_queue(district)
        return placed + len(messages) - len(wanted)

    runtime.subscribe(topics.REFERRAL_RECEIVED, on_referral_received, many=on_referrals_received)

    async def drain_queues() -> None:
        await store.drain_all_queues()

    runtime.every(settings.queue_sweep_interval_s, "queue-sweep", drain_queues)

    app = service_app(
        runtime,
        title="Early Help allocation service",
        description="One family, one worker: cases allocated to locality teams and lead"
        " practitioners within their caseload caps, or queued until a place frees.",
    )
    protect(app, settings, runtime.db, POLICY, clock=runtime.clock)

    # -----------------------------------------------------------------------------------------
    # Teams and workers

    @app.get("/teams", tags=["teams"], summary="Teams, with each worker's open cases against cap")
    async def list_teams(district: str | None = None) -> list[TeamView]:
        return [TeamView.model_validate(team) for team in await store.list_teams(district)]

    @app.post("/teams", tags=["teams"], status_code=201, summary="Create a locality team")
    async def create_team(request: NewTeam) -> TeamView:
        spec = TeamSpec(
            request.id,
            request.name,
            request.district,
            request.cap_per_fte or settings.default_cap_per_fte,
        )
        try:
            await store.create_team(spec)
        except AlreadyExists as error:
            raise HTTPException(409, str(error)) from None
        return await _team(request.id)

    @app.get("/teams/{team_id}", tags=["teams"], summary="One team and its workers")
    async def get_team(team_id: TeamId) -> TeamView:
        return await _team(team_id)

    @app.patch("/teams/{team_id}", tags=["teams"], summary="Rename a team or change its cap")
    async def change_team(team_id: TeamId, request: TeamChange) -> TeamView:
        try:
            await store.change_team(team_id, name=request.name, cap_per_fte=request.cap_per_fte)
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        return await _team(team_id)

    @app.post(
        "/teams/{team_id}/workers",
        tags=["teams"],
        status_code=201,
        summary="A worker joins the team; the district's queue is allocated to them",
    )
    async def add_worker(team_id: TeamId, request: NewWorker) -> WorkerDetail:
        spec = WorkerSpec(request.id, request.name, team_id, request.fte, request.caseload_cap)
        try:
            worker = await store.add_worker(spec)
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        except AlreadyExists as error:
            raise HTTPException(409, str(error)) from None
        return WorkerDetail.model_validate(worker)

    @app.get("/workers/{worker_id}", tags=["teams"], summary="One worker and their cases")
    async def get_worker(worker_id: WorkerId) -> WorkerDetail:
        worker = await store.get_worker(worker_id)
        if worker is None:
            raise HTTPException(404, f"no worker {worker_id}")
        return WorkerDetail.model_validate(worker)

    @app.patch("/workers/{worker_id}", tags=["teams"], summary="Change a worker's FTE or own cap")
    async def change_worker(worker_id: WorkerId, request: WorkerChange) -> WorkerDetail:
        try:
            worker = await store.change_worker(
                worker_id, fte=request.fte, caseload_cap=request.caseload_cap
            )
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        return WorkerDetail.model_validate(worker)

    @app.post(
        "/workers/{worker_id}/leave",
        tags=["teams"],
        summary="A worker leaves; their open cases are reallocated or queued",
    )
    async def worker_leaves(worker_id: WorkerId) -> Departure:
        try:
            departure = await store.worker_leaves(worker_id)
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        return Departure(worker_id=departure.worker_id, reallocated=departure.events)

    async def _team(team_id: str) -> TeamView:
        team = await store.get_team(team_id)
        if team is None:
            raise HTTPException(404, f"no team {team_id}")
        return TeamView.model_validate(team)

    # -----------------------------------------------------------------------------------------
    # Queue and cases

    @app.get("/queue", tags=["cases"], summary="Cases waiting for a worker, in allocation order")
    async def queue(district: str | None = None) -> list[QueueEntry]:
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
            for case in await store.queue(district)
        ]

    @app.get("/cases", tags=["cases"], summary="Cases, newest first")
    async def list_cases(
        family_id: str | None = None,
        district: str | None = None,
        worker_id: str | None = None,
        status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
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
        return [_case_view(case) for case in await store.list_cases(filters, limit)]

    @app.get("/cases/{case_id}", tags=["cases"], summary="One case")
    async def get_case(case_id: str) -> CaseView:
        case = await store.get_case(case_id)
        if case is None:
            raise HTTPException(404, f"no case {case_id}")
        return _case_view(case)

    @app.post("/cases/{case_id}/close", tags=["cases"], summary="Close a case with its outcome")
    async def close_case(case_id: str, request: CloseCase) -> dict[str, Any]:
        try:
            closed = await store.close(case_id, request.outcome)
        except CaseNotOpen:
            if await store.get_case(case_id) is None:
                raise HTTPException(404, f"no case {case_id}") from None
            raise HTTPException(409, f"case {case_id} is already closed") from None
        return closed.model_dump(mode="json")

    return app


def _case_view(case: Document) -> CaseView:
    return CaseView.model_validate({**case, "id": case["_id"]})
