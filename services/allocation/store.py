"""MongoDB adapter of the allocation service: the only module that touches the driver.

Caps and "one family, one case" hold however many replicas run, because each is enforced
by a single atomic database operation inside a transaction, never by a read in Python:

- a worker is reserved by one ``find_one_and_update`` that takes a place only while the
  worker's ``spare`` is above zero, picking the most spare capacity (then the lowest id);
- a family's open case is unique by a partial unique index, so a second replica opening a
  case for the same family fails its insert, and its transaction (with the reservation)
  rolls back; the referral is then retried and joins the case the other replica opened;
- a queued case leaves the queue by an update conditional on it still being queued.

Each district's queue is also kept, in order, in one document of ``queues``, and each
family's open case in a document of ``open_cases`` keyed by the family, both changed in the
same transactions as the cases: every look-up on the way of a referral is then by ``_id``.
A range or sort over the cases would scan them on a server without range indexes
(SecantusDB's), and grow slower with every queued case.

Each change stages its events in the outbox in the same transaction.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pymongo import ReturnDocument

from services.allocation.domain import (
    DEFAULT_CAP_PER_FTE,
    QueuePlace,
    case_id_for,
    caseload_cap,
    new_case_kind,
    queue_priority,
    seconds_between,
)
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    ReferralReceived,
    TeamCapacityChanged,
)
from shared.mongo import BulkWrites, Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

TEAMS = "teams"
WORKERS = "workers"
CASES = "cases"
QUEUES = "queues"
OPEN_CASES = "open_cases"

OPEN = "open"
CLOSED = "closed"
QUEUE_ORDER = [("priority", 1), ("need_rank", 1), ("referral_received_at", 1), ("_id", 1)]
MOST_SPARE_FIRST = [("spare", -1), ("_id", 1)]


class NotFound(LookupError):
    pass


class AlreadyExists(ValueError):
    pass


class CaseNotOpen(ValueError):
    pass


class _CaseChanged(Exception):
    """Another replica moved the case first: abort this transaction and look again."""


@dataclass(frozen=True)
class TeamSpec:
    id: str
    name: str
    district: str
    cap_per_fte: int = DEFAULT_CAP_PER_FTE


@dataclass(frozen=True)
class WorkerSpec:
    id: str
    name: str
    team_id: str
    fte: float
    caseload_cap: int | None = None


@dataclass(frozen=True)
class Reallocation:
    """What a leaver's departure did with each of their open cases."""

    worker_id: str
    events: list[CaseAllocated]


class AllocationStore:
    def __init__(
        self,
        client: MongoClient,
        db: Database,
        outbox: Outbox,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._teams = db[TEAMS]
        self._workers = db[WORKERS]
        self._cases = db[CASES]
        self._queues = db[QUEUES]
        self._open_cases = db[OPEN_CASES]
        self._outbox = outbox
        self._clock = clock

    async def ensure_indexes(self) -> None:
        # One open (allocated or queued) case per family: "one family, one worker".
        await self._cases.create_index(
            "family_id",
            unique=True,
            partialFilterExpression={"status": OPEN},
            name="one_open_case_per_family",
        )
        await self._cases.create_index([("worker_id", 1), ("status", 1)])
        await self._workers.create_index(
            [("district", 1), ("active", 1), *MOST_SPARE_FIRST], name="most_spare_first"
        )
        await self._workers.create_index("team_id")
        await self.rebuild_lookups()

    # -----------------------------------------------------------------------------------------
    # Teams and workers

    async def seed(self, teams: Sequence[TeamSpec], workers: Sequence[WorkerSpec]) -> bool:
        """Load the sample county once; False when teams already exist (or another replica won)."""
        if await self._teams.count_documents({}, limit=1):
            return False

        async def load(session: Session) -> None:
            for team in teams:
                await self._insert_team(team, session)
            for worker in workers:
                await self._insert_worker(worker, session)
            for team in teams:
                await self._stage_capacity(team.id, session, correlation_id="seed")

        try:
            await in_transaction(self._client, load)
        except AlreadyExists:
            return False
        return True

    async def create_team(self, team: TeamSpec) -> Document:
        async def create(session: Session) -> Document:
            document = await self._insert_team(team, session)
            await self._stage_capacity(team.id, session, correlation_id=_admin_correlation())
            return document

        return await in_transaction(self._client, create)

    async def change_team(
        self, team_id: str, *, name: str | None, cap_per_fte: int | None
    ) -> Document:
        """Rename a team or change its cap per FTE; its workers' caps follow the new figure."""

        async def change(session: Session) -> Document:
            team = await self._team(team_id, session)
            changes: dict[str, Any] = {}
            if name is not None:
                changes["name"] = name
            if cap_per_fte is not None:
                changes["cap_per_fte"] = cap_per_fte
                async for worker in self._workers.find(
                    {"team_id": team_id, "active": True}, session=session
                ):
                    await self._set_cap(
                        worker, worker["fte"], worker.get("cap_override"), cap_per_fte, session
                    )
            if changes:
                await self._teams.update_one({"_id": team_id}, {"$set": changes}, session=session)
            await self._stage_capacity(team_id, session, correlation_id=_admin_correlation())
            return {**team, **changes}

        team = await in_transaction(self._client, change)
        await self.drain_queue(team["district"])
        return team

    async def add_worker(self, worker: WorkerSpec) -> Document:
        """A worker joins a team; the district's queue is allocated to their free capacity."""

        async def join(session: Session) -> Document:
            document = await self._insert_worker(worker, session)
            await self._stage_capacity(worker.team_id, session, correlation_id=_admin_correlation())
            return document

        document = await in_transaction(self._client, join)
        await self.drain_queue(document["district"])
        return await self._worker_now(worker.id)

    async def change_worker(
        self, worker_id: str, *, fte: float | None, caseload_cap: int | None
    ) -> Document:
        """Change a worker's FTE or own cap; more capacity allocates the district's queue."""

        async def change(session: Session) -> Document:
            worker = await self._active_worker(worker_id, session)
            team = await self._team(worker["team_id"], session)
            override = caseload_cap if caseload_cap is not None else worker.get("cap_override")
            await self._set_cap(
                worker, fte if fte is not None else worker["fte"], override,
                team["cap_per_fte"], session,
            )  # fmt: skip
            await self._stage_capacity(team["_id"], session, correlation_id=_admin_correlation())
            return worker

        worker = await in_transaction(self._client, change)
        await self.drain_queue(worker["district"])
        return await self._worker_now(worker_id)

    async def worker_leaves(self, worker_id: str) -> Reallocation:
        """A worker leaves: their open cases are reallocated by the usual rules, or queued.

        Safe to repeat: a departure cut short (a crash between cases) is finished by
        asking again, as each case moves in its own transaction.
        """
        now = self._clock()

        async def leave(session: Session) -> Document:
            worker = await self._workers.find_one({"_id": worker_id}, session=session)
            if worker is None:
                raise NotFound(f"no worker {worker_id}")
            if worker["active"]:
                await self._workers.update_one(
                    {"_id": worker_id},
                    {"$set": {"active": False, "left_at": now, "spare": 0}},
                    session=session,
                )
                await self._stage_capacity(
                    worker["team_id"], session, correlation_id=_admin_correlation()
                )
            return worker

        worker = await in_transaction(self._client, leave)
        events: list[CaseAllocated] = []
        cases = self._cases.find({"worker_id": worker_id, "status": OPEN}, projection=["_id"])
        for case_id in [case["_id"] async for case in cases]:
            moved = await in_transaction(self._client, partial(self._move, case_id, worker))
            if moved is not None:
                events.append(moved)
        await self.drain_queue(worker["district"])
        return Reallocation(worker_id, events)

    async def _move(self, case_id: str, leaver: Document, session: Session) -> CaseAllocated | None:
        case = await self._cases.find_one(
            {"_id": case_id, "worker_id": leaver["_id"], "status": OPEN}, session=session
        )
        if case is None:
            return None
        now = self._clock()
        worker = await self._reserve_worker(case["district"], session)
        await self._workers.update_one(
            {"_id": leaver["_id"]}, {"$inc": {"open_cases": -1}}, session=session
        )
        allocation = AllocationStatus.QUEUED if worker is None else AllocationStatus.ALLOCATED
        case = await self._set_allocation(case, worker, allocation, now, session)
        event = self._case_allocated(
            case,
            referral_id=case["opening_referral_id"],
            referral_received_at=case["referral_received_at"],
            kind=AllocationKind(case["kind"]),
            now=now,
            queue_position=(
                await self._enqueue(case, await self._queued(case["district"], session), session)
                if worker is None
                else None
            ),
            reallocated_from_worker_id=leaver["_id"],
        )
        await self._stage(event, case, session)
        return event

    async def list_teams(self, district: str | None = None) -> list[Document]:
        """Each team with its workers, their open cases against cap, and the team's totals."""
        query = {} if district is None else {"district": district}
        teams = await self._teams.find(query).sort([("district", 1), ("_id", 1)]).to_list()
        workers = await self._workers.find(
            {"team_id": {"$in": [team["_id"] for team in teams]}}
        ).to_list()
        return [_team_view(team, workers) for team in teams]

    async def get_team(self, team_id: str) -> Document | None:
        team = await self._teams.find_one({"_id": team_id})
        if team is None:
            return None
        return _team_view(team, await self._workers.find({"team_id": team_id}).to_list())

    async def get_worker(self, worker_id: str) -> Document | None:
        worker = await self._workers.find_one({"_id": worker_id})
        if worker is None:
            return None
        cases = await self._cases.find(
            {"worker_id": worker_id, "status": OPEN}, projection=["_id"]
        ).to_list()
        return {**_worker_view(worker), "case_ids": sorted(case["_id"] for case in cases)}

    # -----------------------------------------------------------------------------------------
    # Referrals and the queue

    async def place_referral(
        self, referral: ReferralReceived, *, session: Session, correlation_id: str
    ) -> CaseAllocated:
        """Rule 1, else a new case with a worker, else a new case in the district's queue.

        Raises ``DuplicateKeyError`` when another replica opened the family's case meanwhile;
        the caller retries, and the retry joins that case.
        """
        [placed] = await self.place_referrals([(referral, correlation_id)], session=session)
        return placed

    async def place_referrals(
        self, referrals: Sequence[tuple[ReferralReceived, str]], *, session: Session
    ) -> list[CaseAllocated]:
        """``place_referral`` for each (referral, correlation id) in order, as if one at a
        time, with a few reads and one bulk write per collection.

        A later referral sees what an earlier one did: a family's second referral joins the
        case its first opened, and a new case waits behind those queued before it.
        """
        now = self._clock()
        families = sorted({referral.family_id for referral, _ in referrals})
        found = self._open_cases.find({"_id": {"$in": families}}, session=session)
        case_of_family = {document["_id"]: document["case_id"] async for document in found}
        found = self._cases.find({"_id": {"$in": sorted(case_of_family.values())}}, session=session)
        cases = {document["_id"]: document async for document in found}
        districts = {referral.district for referral, _ in referrals}
        districts |= {case["district"] for case in cases.values()}
        found = self._queues.find({"_id": {"$in": sorted(districts)}}, session=session)
        queues = {document["_id"]: list(document["entries"]) async for document in found}
        opened: list[str] = []
        joined: dict[str, list[str]] = {}
        requeued: set[str] = set()
        outgoing: list[tuple[EventData, str, str]] = []
        placed: list[CaseAllocated] = []
        for referral, correlation_id in referrals:
            case_id = case_of_family.get(referral.family_id)
            if case_id is not None:
                case = cases[case_id]
                joining = joined.setdefault(case_id, [])
                if referral.referral_id not in case["referral_ids"]:
                    case["referral_ids"] = [*case["referral_ids"], referral.referral_id]
                    joining.append(referral.referral_id)
                case["version"] += 1
                kind = AllocationKind.EXISTING_CASE
                queued = case["allocation"] == QUEUED
                entries = queues.setdefault(case["district"], [])
                place = bisect_left([_place(entry) for entry in entries], _place_of(case))
            else:
                entries = queues.setdefault(referral.district, [])
                kind = new_case_kind(referral)
                # Nobody jumps the queue: while cases wait, a new one waits behind them.
                worker = None if entries else await self._reserve_worker(referral.district, session)
                case = _new_case(referral, kind, worker, correlation_id, now)
                cases[case["_id"]] = case
                case_of_family[referral.family_id] = case["_id"]
                opened.append(case["_id"])
                queued = worker is None
                place = bisect_left([_place(entry) for entry in entries], _place_of(case))
                if queued:
                    entries.insert(place, _entry(case))
                    requeued.add(referral.district)
            event = self._case_allocated(
                case,
                referral_id=referral.referral_id,
                referral_received_at=referral.received_at,
                kind=kind,
                now=now,
                queue_position=place + 1 if queued else None,
            )
            placed.append(event)
            outgoing.append((event, correlation_id, f"{case['_id']}.{case['version']}"))

        if opened:
            await self._cases.insert_many([cases[case_id] for case_id in opened], session=session)
            await self._open_cases.insert_many(
                [{"_id": cases[case_id]["family_id"], "case_id": case_id} for case_id in opened],
                session=session,
            )
        writes = BulkWrites()
        for case_id, referral_ids in joined.items():
            if case_id not in opened:
                writes.update_one(
                    CASES,
                    {"_id": case_id},
                    {
                        "$addToSet": {"referral_ids": {"$each": referral_ids}},
                        "$set": {"version": cases[case_id]["version"]},
                    },
                )
        for district in sorted(requeued):
            writes.update_one(
                QUEUES, {"_id": district}, {"$set": {"entries": queues[district]}}, upsert=True
            )
        await writes.send(self._cases.database, session=session)
        await self._outbox.stage_events(outgoing, session=session)
        return placed

    async def drain_queue(self, district: str) -> list[CaseAllocated]:
        """Allocate the district's queue, in order, while any worker there has spare capacity."""
        allocated: list[CaseAllocated] = []
        if await self._workers.find_one(_with_spare(district), {"_id": 1}) is None:
            return allocated  # most often, under load: no transaction for nothing
        while True:
            try:
                event = await in_transaction(
                    self._client, lambda session: self._allocate_queue_head(district, session)
                )
            except _CaseChanged:
                continue
            if event is None:
                return allocated
            allocated.append(event)

    async def drain_all_queues(self) -> int:
        """Allocate every district's queue to any free capacity; how many cases moved.

        A replica killed between committing a closure and draining leaves a place free beside
        a queue; this, run at start and now and then, gives that place away.
        """
        districts = await self._queues.distinct("_id", {"entries.0": {"$exists": True}})
        return sum([len(await self.drain_queue(district)) for district in sorted(districts)])

    async def _allocate_queue_head(self, district: str, session: Session) -> CaseAllocated | None:
        # Nobody may have a place any more: say so from the workers, before the queue.
        if await self._workers.find_one(_with_spare(district), {"_id": 1}, session=session) is None:
            return None
        entries = await self._queued(district, session)
        if not entries:
            return None
        head = await self._cases.find_one({"_id": entries[0]["case_id"]}, session=session)
        if head is None or head["status"] != OPEN or head["allocation"] != QUEUED:
            raise RuntimeError(f"the queue of {district} names {entries[0]['case_id']}, not queued")
        worker = await self._reserve_worker(district, session)
        if worker is None:
            return None
        now = self._clock()
        case = await self._set_allocation(head, worker, AllocationStatus.ALLOCATED, now, session)
        await self._queues.update_one({"_id": district}, {"$pop": {"entries": -1}}, session=session)
        event = self._case_allocated(
            case,
            referral_id=case["opening_referral_id"],
            referral_received_at=case["referral_received_at"],
            kind=AllocationKind(case["kind"]),
            now=now,
        )
        await self._stage(event, case, session)
        return event

    async def queue(self, district: str | None = None) -> list[Document]:
        """The waiting cases in the order they will be allocated, numbered per district."""
        query: dict[str, Any] = {"status": OPEN, "allocation": AllocationStatus.QUEUED.value}
        if district is not None:
            query["district"] = district
        cases = await self._cases.find(query).sort([("district", 1), *QUEUE_ORDER]).to_list()
        places: dict[str, int] = {}
        for case in cases:
            places[case["district"]] = places.get(case["district"], 0) + 1
            case["place"] = places[case["district"]]
        return cases

    # -----------------------------------------------------------------------------------------
    # Cases

    async def close(self, case_id: str, outcome: CaseOutcome) -> CaseClosed:
        """Close an open case and stage ``case-closed``; the freed place goes to the queue."""
        now = self._clock()

        async def close_case(session: Session) -> CaseClosed:
            case = await self._cases.find_one_and_update(
                {"_id": case_id, "status": OPEN},
                {"$set": {"status": CLOSED, "outcome": outcome.value, "closed_at": now}},
                session=session,
            )
            if case is None:
                raise CaseNotOpen(case_id)
            await self._open_cases.delete_one(
                {"_id": case["family_id"], "case_id": case_id}, session=session
            )
            if case["allocation"] == QUEUED:
                await self._dequeue(case, session)
            if case["worker_id"] is not None:
                await self._workers.update_one(
                    {"_id": case["worker_id"]},
                    {"$inc": {"open_cases": -1, "spare": 1}},
                    session=session,
                )
            event = CaseClosed(
                case_id=case_id,
                family_id=case["family_id"],
                district=case["district"],
                team_id=case.get("team_id"),
                worker_id=case.get("worker_id"),
                outcome=outcome,
                closed_at=now,
            )
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=case.get("correlation_id") or case_id,
                event_id=f"{case_id}.closed",
            )
            return event

        closed = await in_transaction(self._client, close_case)
        await self.drain_queue(closed.district)
        return closed

    async def list_cases(self, filters: dict[str, Any], limit: int) -> list[Document]:
        return await self._cases.find(filters).sort("opened_at", -1).limit(limit).to_list()

    async def get_case(self, case_id: str) -> Document | None:
        return await self._cases.find_one({"_id": case_id})

    # -----------------------------------------------------------------------------------------
    # Building blocks, all inside the caller's transaction

    async def _reserve_worker(self, district: str, session: Session) -> Document | None:
        """Take one place from the district's worker with the most spare capacity."""
        return await self._workers.find_one_and_update(
            _with_spare(district),
            {"$inc": {"spare": -1, "open_cases": 1}},
            sort=MOST_SPARE_FIRST,
            session=session,
            return_document=ReturnDocument.AFTER,
        )

    async def _set_allocation(
        self,
        case: Document,
        worker: Document | None,
        allocation: AllocationStatus,
        now: datetime,
        session: Session,
    ) -> Document:
        changes: dict[str, Any] = {
            "allocation": allocation.value,
            "worker_id": None if worker is None else worker["_id"],
            "team_id": None if worker is None else worker["team_id"],
        }
        if worker is not None:
            changes["allocated_at"] = now
        updated = await self._cases.find_one_and_update(
            {"_id": case["_id"], "status": OPEN, "allocation": case["allocation"]},
            {"$set": changes, "$inc": {"version": 1}},
            session=session,
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise _CaseChanged(case["_id"])
        return updated

    async def _queued(self, district: str, session: Session) -> list[Document]:
        """The district's queue, in order: one entry (its place and case id) per case."""
        queue = await self._queues.find_one({"_id": district}, session=session)
        return [] if queue is None else list(queue["entries"])

    async def _enqueue(self, case: Document, entries: list[Document], session: Session) -> int:
        """Put a just-queued case in its place in ``entries``, its district's queue as read in
        this transaction; its place, 1 for next."""
        index = bisect_left([_place(entry) for entry in entries], _place_of(case))
        await self._queues.update_one(
            {"_id": case["district"]},
            {"$push": {"entries": {"$each": [_entry(case)], "$position": index}}},
            upsert=True,
            session=session,
        )
        return index + 1

    async def _dequeue(self, case: Document, session: Session) -> None:
        await self._queues.update_one(
            {"_id": case["district"]},
            {"$pull": {"entries": {"case_id": case["_id"]}}},
            session=session,
        )

    async def _queue_position(self, case: Document, session: Session) -> int:
        entries = await self._queued(case["district"], session)
        return bisect_left([_place(entry) for entry in entries], _place_of(case)) + 1

    async def rebuild_lookups(self) -> bool:
        """Build the queues and the open-case look-up from the cases, once: for a database
        written before they were kept. False when they exist already."""

        async def rebuild(session: Session) -> bool:
            if await self._queues.find_one({}, session=session) is not None:
                return False
            if await self._open_cases.find_one({}, session=session) is not None:
                return False
            open_cases = await self._cases.find({"status": OPEN}, session=session).to_list()
            queues: dict[str, list[Document]] = {}
            for case in sorted(open_cases, key=_place_of):
                if case["allocation"] == QUEUED:
                    queues.setdefault(case["district"], []).append(_entry(case))
            for district, entries in queues.items():
                await self._queues.insert_one(
                    {"_id": district, "entries": entries}, session=session
                )
            if open_cases:
                await self._open_cases.insert_many(
                    [{"_id": case["family_id"], "case_id": case["_id"]} for case in open_cases],
                    session=session,
                )
            return bool(open_cases)

        return await in_transaction(self._client, rebuild)

    def _case_allocated(
        self,
        case: Document,
        *,
        referral_id: str,
        referral_received_at: datetime,
        kind: AllocationKind,
        now: datetime,
        queue_position: int | None = None,
        reallocated_from_worker_id: str | None = None,
    ) -> CaseAllocated:
        allocated = case["allocation"] == AllocationStatus.ALLOCATED
        return CaseAllocated(
            case_id=case["_id"],
            family_id=case["family_id"],
            referral_id=referral_id,
            district=case["district"],
            team_id=case["team_id"],
            worker_id=case["worker_id"],
            status=AllocationStatus(case["allocation"]),
            kind=kind,
            level_of_need=case["level_of_need"],
            social_care_case_reference=case.get("social_care_case_reference"),
            referral_received_at=referral_received_at,
            allocated_at=now,
            queue_position=queue_position,
            time_to_allocation_seconds=(
                seconds_between(referral_received_at, now) if allocated else None
            ),
            reallocated_from_worker_id=reallocated_from_worker_id,
        )

    async def _stage(
        self,
        event: CaseAllocated,
        case: Document,
        session: Session,
        *,
        correlation_id: str | None = None,
    ) -> None:
        # The case's version makes each of its events' ids unique and stable on retry.
        await self._outbox.stage_event(
            event,
            session=session,
            correlation_id=correlation_id or case["correlation_id"],
            event_id=f"{case['_id']}.{case['version']}",
        )

    async def _insert_team(self, team: TeamSpec, session: Session) -> Document:
        document = {
            "_id": team.id,
            "name": team.name,
            "district": team.district,
            "cap_per_fte": team.cap_per_fte,
            "capacity_version": 0,
            "created_at": self._clock(),
        }
        if await self._teams.find_one({"_id": team.id}, session=session):
            raise AlreadyExists(f"team {team.id} already exists")
        await self._teams.insert_one(document, session=session)
        return document

    async def _insert_worker(self, worker: WorkerSpec, session: Session) -> Document:
        team = await self._team(worker.team_id, session)
        if await self._workers.find_one({"_id": worker.id}, session=session):
            raise AlreadyExists(f"worker {worker.id} already exists")
        cap = caseload_cap(worker.fte, team["cap_per_fte"], worker.caseload_cap)
        document = {
            "_id": worker.id,
            "name": worker.name,
            "team_id": worker.team_id,
            "district": team["district"],
            "fte": worker.fte,
            "cap_override": worker.caseload_cap,
            "cap": cap,
            "open_cases": 0,
            "spare": cap,
            "active": True,
            "joined_at": self._clock(),
        }
        await self._workers.insert_one(document, session=session)
        return document

    async def _set_cap(
        self,
        worker: Document,
        fte: float,
        cap_override: int | None,
        cap_per_fte: int,
        session: Session,
    ) -> None:
        # Spare moves by the change in cap, so places taken meanwhile are kept; a cap cut
        # below the caseload leaves spare negative: no new cases until it is back above zero.
        cap = caseload_cap(fte, cap_per_fte, cap_override)
        await self._workers.update_one(
            {"_id": worker["_id"]},
            {
                "$set": {"fte": fte, "cap_override": cap_override, "cap": cap},
                "$inc": {"spare": cap - worker["cap"]},
            },
            session=session,
        )

    async def _stage_capacity(self, team_id: str, session: Session, *, correlation_id: str) -> None:
        team = await self._teams.find_one_and_update(
            {"_id": team_id},
            {"$inc": {"capacity_version": 1}},
            session=session,
            return_document=ReturnDocument.AFTER,
        )
        assert team is not None
        workers = await self._workers.find(
            {"team_id": team_id, "active": True}, session=session
        ).to_list()
        event = TeamCapacityChanged(
            team_id=team_id,
            team_name=team["name"],
            district=team["district"],
            workers=len(workers),
            fte=round(sum(worker["fte"] for worker in workers), 2),
            capacity=sum(worker["cap"] for worker in workers),
            changed_at=self._clock(),
        )
        await self._outbox.stage_event(
            event,
            session=session,
            correlation_id=correlation_id,
            event_id=f"{team_id}.capacity.{team['capacity_version']}",
        )

    async def _team(self, team_id: str, session: Session) -> Document:
        team = await self._teams.find_one({"_id": team_id}, session=session)
        if team is None:
            raise NotFound(f"no team {team_id}")
        return team

    async def _active_worker(self, worker_id: str, session: Session) -> Document:
        worker = await self._workers.find_one({"_id": worker_id, "active": True}, session=session)
        if worker is None:
            raise NotFound(f"no current worker {worker_id}")
        return worker

    async def _worker_now(self, worker_id: str) -> Document:
        found = await self.get_worker(worker_id)
        assert found is not None
        return found


QUEUED = AllocationStatus.QUEUED.value


def _new_case(
    referral: ReferralReceived,
    kind: AllocationKind,
    worker: Document | None,
    correlation_id: str,
    now: datetime,
) -> Document:
    return {
        "_id": case_id_for(referral.referral_id),
        "family_id": referral.family_id,
        "district": referral.district,
        "team_id": None if worker is None else worker["team_id"],
        "worker_id": None if worker is None else worker["_id"],
        "status": OPEN,
        "allocation": (
            AllocationStatus.QUEUED if worker is None else AllocationStatus.ALLOCATED
        ).value,
        "kind": kind.value,
        "level_of_need": int(referral.level_of_need),
        "priority": queue_priority(kind),
        "need_rank": -int(referral.level_of_need),
        "referral_received_at": referral.received_at,
        "opening_referral_id": referral.referral_id,
        "referral_ids": [referral.referral_id],
        "social_care_case_reference": referral.social_care_case_reference,
        "correlation_id": correlation_id,
        "opened_at": now,
        "allocated_at": None if worker is None else now,
        "version": 0,
    }


def _entry(case: Document) -> Document:
    return {
        "priority": case["priority"],
        "need_rank": case["need_rank"],
        "referral_received_at": _stored(case["referral_received_at"]),
        "case_id": case["_id"],
    }


def _place(entry: Document) -> QueuePlace:
    return QueuePlace(
        entry["priority"],
        entry["need_rank"],
        _stored(entry["referral_received_at"]),
        entry["case_id"],
    )


def _place_of(case: Document) -> QueuePlace:
    return _place(_entry(case))


def _stored(at: datetime) -> datetime:
    """``at`` as the database keeps it (to the millisecond), so places compare alike."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _with_spare(district: str) -> dict[str, Any]:
    return {"district": district, "active": True, "spare": {"$gt": 0}}


def _worker_view(worker: Document) -> Document:
    return {
        "id": worker["_id"],
        "name": worker["name"],
        "team_id": worker["team_id"],
        "district": worker["district"],
        "fte": worker["fte"],
        "caseload_cap": worker["cap"],
        "cap_is_own": worker.get("cap_override") is not None,
        "open_cases": worker["open_cases"],
        "spare": max(0, worker["spare"]) if worker["active"] else 0,
        "active": worker["active"],
    }


def _team_view(team: Document, workers: list[Document]) -> Document:
    members = sorted(
        (_worker_view(worker) for worker in workers if worker["team_id"] == team["_id"]),
        key=lambda worker: (not worker["active"], worker["id"]),
    )
    current = [worker for worker in members if worker["active"]]
    return {
        "id": team["_id"],
        "name": team["name"],
        "district": team["district"],
        "cap_per_fte": team["cap_per_fte"],
        "fte": round(sum(worker["fte"] for worker in current), 2),
        "capacity": sum(worker["caseload_cap"] for worker in current),
        "open_cases": sum(worker["open_cases"] for worker in current),
        "workers": members,
    }


def _admin_correlation() -> str:
    return f"admin-{uuid.uuid4()}"
