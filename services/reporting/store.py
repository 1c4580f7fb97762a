"""MongoDB adapters of the reporting read models: the only module that touches the driver.

One fact per thing that happened, keyed by the thing's own id, so a redelivered event
rewrites the same fact and an out-of-order one still lands in its month. Where events
disagree over time (a case's team), the newer event time wins, whatever the arrival order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.reporting.domain import ALL_DISTRICTS, MonthFacts
from services.reporting.ports import DueSnapshot, ReportingUnitOfWork
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
from shared.idempotency import PROCESSED_EVENTS, ProcessedEvents
from shared.mongo import BulkWrites, Database, Document, MongoClient, MongoUnitOfWork, Session
from shared.months import month_end, month_of, month_start
from shared.outbox import Outbox

REFERRALS = "referral_facts"
REJECTIONS = "rejection_facts"
ALLOCATIONS = "allocation_facts"
CASES = "case_facts"
CAPACITY = "capacity_facts"
AUDITS = "audit_facts"
SNAPSHOT_MARKS = "snapshot_marks"
FAMILY_ID_FIELDS: dict[str, str] = {}
"""Reporting's facts name no family: its figures need none."""
FAMILY_KEYED: tuple[str, ...] = ()
"""Per month and district, how many projections changed its figures; written by projection only."""
SNAPSHOTS_PUBLISHED = "snapshots_published"
"""Per month and district, the last snapshot's version and the changes it covered; written by
the snapshots only. Two writers never share a document, so neither can undo the other's write."""
READ_MODELS = (
    REFERRALS,
    REJECTIONS,
    ALLOCATIONS,
    CASES,
    CAPACITY,
    AUDITS,
    SNAPSHOT_MARKS,
    SNAPSHOTS_PUBLISHED,
)

MonthKey = tuple[str, str]
"""(month, district): what an event changed, for the snapshots."""


class MongoProjections:
    """The facts and the snapshot marks, written in the caller's session (a transaction)."""

    def __init__(self, db: Database, session: Session | None) -> None:
        self._db = db
        self._session = session

    async def project(self, events: Sequence[EventData], *, now: datetime) -> None:
        """Record the facts the events state, in order, and mark the figures they moved."""
        writes = BulkWrites()
        touched: set[MonthKey] = set()
        for data in events:
            touched.update(self._record(data, writes))
        self._mark_changed(touched, writes, now=now)
        await writes.send(self._db, session=self._session)

    def _record(self, data: EventData, writes: BulkWrites) -> list[MonthKey]:
        """Queue the writes of the fact an event states; the months and districts it moves."""
        match data:
            case ReferralReceived():
                return self._referral(data, writes)
            case ReferralRejected():
                month = month_of(data.received_at)
                writes.update_one(
                    REJECTIONS,
                    {"_id": data.rejection_id},
                    {
                        "$set": {
                            "month": month,
                            "partner_id": data.partner_id,
                            "codes": sorted({reason.code for reason in data.reasons}),
                            "received_at": data.received_at,
                        }
                    },
                    upsert=True,
                )
                return [(month, ALL_DISTRICTS)]
            case CaseAllocated():
                return self._allocation(data, writes)
            case CaseClosed():
                writes.update_one(
                    CASES,
                    {"_id": data.case_id},
                    {
                        "$set": {
                            "district": data.district,
                            "closed_at": data.closed_at,
                            "outcome": data.outcome.value,
                        }
                    },
                    upsert=True,
                )
                return _touched(data.closed_at, data.district)
            case TeamCapacityChanged():
                writes.update_one(
                    CAPACITY,
                    {"_id": f"{data.team_id}|{data.changed_at.isoformat()}"},
                    {
                        "$set": {
                            "team_id": data.team_id,
                            "district": data.district,
                            "capacity": data.capacity,
                            "changed_at": data.changed_at,
                        }
                    },
                    upsert=True,
                )
                return _touched(data.changed_at, data.district)
            case AuditAssigned():
                writes.update_one(
                    AUDITS,
                    {"_id": data.audit_id},
                    {
                        "$set": {
                            "month": data.month,
                            "district": data.district,
                            "team_id": data.team_id,
                            "assigned_at": data.assigned_at,
                            "due_by": data.due_by,
                        }
                    },
                    upsert=True,
                )
                return [(data.month, data.district), (data.month, ALL_DISTRICTS)]
            case AuditCompleted():
                writes.update_one(
                    AUDITS,
                    {"_id": data.audit_id},
                    {
                        "$set": {
                            "month": data.month,
                            "district": data.district,
                            "team_id": data.team_id,
                            "completed_at": data.completed_at,
                            "overall_grade": data.overall_grade.value,
                        }
                    },
                    upsert=True,
                )
                return [(data.month, data.district), (data.month, ALL_DISTRICTS)]
        raise TypeError(f"no projection for {type(data).__name__}")

    def _referral(self, data: ReferralReceived, writes: BulkWrites) -> list[MonthKey]:
        writes.update_one(
            REFERRALS,
            {"_id": data.referral_id},
            {
                "$set": {
                    "month": month_of(data.received_at),
                    "district": data.district,
                    "source": data.referral_source,
                    "route": data.route,
                    "decision": data.decision.value,
                    "re_referral": data.is_re_referral,
                    "step_down": data.is_step_down,
                    "received_at": data.received_at,
                }
            },
            upsert=True,
        )
        return _touched(data.received_at, data.district)

    def _allocation(self, data: CaseAllocated, writes: BulkWrites) -> list[MonthKey]:
        at = data.allocated_at
        first = "allocated_at" if data.status is AllocationStatus.ALLOCATED else "queued_at"
        facts: dict[str, Any] = {"district": data.district}
        if data.team_id is not None:
            # Every team the case had, by time: the newest is read as its team, whatever
            # order the events came in (no conditional update, which scans on some servers).
            facts[f"teams.{_time_key(at)}"] = data.team_id
        writes.update_one(
            CASES, {"_id": data.case_id}, {"$set": facts, "$min": {first: at}}, upsert=True
        )
        if data.kind is AllocationKind.CO_WORKING and data.reallocated_from_worker_id is None:
            # Co-working is allocation's decision: the referral counts as it says, whenever
            # either event arrives first.
            writes.update_one(
                REFERRALS, {"_id": data.referral_id}, {"$set": {"co_working": True}}, upsert=True
            )
        is_allocation = (
            data.status is AllocationStatus.ALLOCATED and data.reallocated_from_worker_id is None
        )
        if is_allocation:
            writes.update_one(
                ALLOCATIONS,
                {"_id": f"{data.case_id}|{data.referral_id}"},
                {
                    "$setOnInsert": {
                        "month": month_of(at),
                        "district": data.district,
                        "team_id": data.team_id,
                        "kind": data.kind.value,
                        "seconds": data.time_to_allocation_seconds,
                        "allocated_at": at,
                    }
                },
                upsert=True,
            )
        return _touched(at, data.district)

    def _mark_changed(self, keys: set[MonthKey], writes: BulkWrites, *, now: datetime) -> None:
        """Count one change for each figure the events moved, with ``$inc`` on the mark: the
        snapshots never write it, so a snapshot's commit cannot undo the count."""
        current = month_of(now)
        marked = set(keys)
        # A month-end figure (open cases, capacity) also moves every later month's.
        marked |= {(current, district) for month, district in keys if month < current}
        marked |= {(month, ALL_DISTRICTS) for month, _ in marked}
        for month, district in sorted(marked):
            writes.update_one(
                SNAPSHOT_MARKS,
                {"_id": f"{month}|{district}"},
                {"$set": {"month": month, "district": district}, "$inc": {"changes": 1}},
                upsert=True,
            )


class MongoReadModels:
    """The read models as the reports read them, outside any transaction."""

    def __init__(self, db: Database) -> None:
        self._referrals = db[REFERRALS]
        self._rejections = db[REJECTIONS]
        self._allocations = db[ALLOCATIONS]
        self._cases = db[CASES]
        self._capacity = db[CAPACITY]
        self._audits = db[AUDITS]

    async def ensure_indexes(self) -> None:
        for collection in (self._referrals, self._allocations, self._audits):
            await collection.create_index([("month", 1), ("district", 1)])
        await self._rejections.create_index("month")
        await self._cases.create_index([("district", 1), ("allocated_at", 1)])
        await self._cases.create_index([("district", 1), ("queued_at", 1)])
        await self._cases.create_index("closed_at")
        await self._capacity.create_index([("district", 1), ("changed_at", 1)])

    async def month_facts(self, month: str, district: str | None, *, now: datetime) -> MonthFacts:
        start, end = month_start(month), month_end(month)
        where: dict[str, Any] = {} if district is None else {"district": district}
        in_month = {"month": month, **where}
        closed_after_end = {"$or": [{"closed_at": None}, {"closed_at": {"$gte": end}}]}
        return MonthFacts(
            month=month,
            district=district,
            referrals=await self._referrals.find(in_month).to_list(),
            rejections=(
                await self._rejections.find({"month": month}).to_list() if district is None else []
            ),
            allocations=await self._allocations.find(in_month).to_list(),
            closures=_with_teams(
                await self._cases.find(
                    {"closed_at": {"$gte": start, "$lt": end}, **where}
                ).to_list()
            ),
            open_at_end=_with_teams(
                await self._cases.find(
                    {"allocated_at": {"$lt": end}, **closed_after_end, **where}
                ).to_list()
            ),
            queued_at_end=await self._cases.find(
                {
                    "queued_at": {"$lt": end},
                    "$and": [
                        {"$or": [{"allocated_at": None}, {"allocated_at": {"$gte": end}}]},
                        closed_after_end,
                    ],
                    **where,
                }
            ).to_list(),
            capacity_at_end=await self._capacity_at(end, where),
            audits=await self._audits.find(in_month).to_list(),
            now=now,
        )

    async def _capacity_at(self, end: datetime, where: dict[str, Any]) -> dict[str, Document]:
        changes = (
            await self._capacity.find({"changed_at": {"$lt": end}, **where})
            .sort("changed_at", 1)
            .to_list()
        )
        return {change["team_id"]: change for change in changes}

    async def months(self) -> list[str]:
        """Every month with a fact, ascending, for the dashboard's picker."""
        found: set[str] = set()
        for collection in (self._referrals, self._rejections, self._allocations, self._audits):
            found.update(await collection.distinct("month"))
        return sorted(found)

    async def districts(self) -> list[str]:
        found: set[str] = set()
        for collection in (self._referrals, self._cases, self._capacity):
            found.update(district for district in await collection.distinct("district") if district)
        return sorted(found)


class MongoSnapshots:
    """Which figures changed since their last ``performance-snapshot``: the marks the
    projection counts, against the record of what each published snapshot covered."""

    def __init__(self, db: Database, session: Session | None) -> None:
        self._marks = db[SNAPSHOT_MARKS]
        self._published = db[SNAPSHOTS_PUBLISHED]
        self._session = session

    async def due(self, interval_s: float, *, now: datetime) -> list[DueSnapshot]:
        """Marks with changes no snapshot has covered, whose last snapshot is ``interval_s``
        old: each with ``changes`` as read now, before the figures are computed, so a
        change committed later is left for the next snapshot."""
        quiet_since = now - timedelta(seconds=interval_s)
        marks = await self._marks.find(session=self._session).to_list()
        published = {
            document["_id"]: document
            async for document in self._published.find(
                {"_id": {"$in": [m["_id"] for m in marks]}}, session=self._session
            )
        }
        due = []
        for mark in marks:
            last = published.get(mark["_id"])
            if last is None:
                # Marks written before the two were kept apart carry the last version.
                due.append(_due(mark, first=True, version=mark.get("version", 0)))
            elif mark.get("changes", 0) > last["changes"] and last["published_at"] <= quiet_since:
                due.append(_due(mark, first=False, version=last["version"]))
        return due

    async def claim(self, due: DueSnapshot, *, now: datetime) -> int | None:
        """Take a due snapshot (from ``due``) for publication: its version, or None when
        another replica took it first, the version it read having moved on.

        A first snapshot is an insert, so two replicas racing for it meet a
        ``DuplicateKeyError``, which ends the loser's transaction: it is left uncommitted.
        """
        version = due.version + 1
        claimed = {"version": version, "changes": due.changes, "published_at": now}
        if due.first:
            try:
                await self._published.insert_one({"_id": due.key, **claimed}, session=self._session)
            except DuplicateKeyError:
                return None
            return version
        taken = await self._published.find_one_and_update(
            {"_id": due.key, "version": due.version},
            {"$set": claimed},
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return None if taken is None else version


class MongoReportingUnitOfWork(MongoUnitOfWork):
    """The projection's, the snapshots' and the outbox's writes in one transaction: its own,
    or (given ``session``) the one that records the applied events."""

    projections: MongoProjections
    snapshots: MongoSnapshots

    def opened(self) -> None:
        self.projections = MongoProjections(self.db, self.session)
        self.snapshots = MongoSnapshots(self.db, self.session)


class MongoAppliedEvents:
    """The runtime's record of processed events as the reporting use cases see it.

    The record runs the transaction (the driver retries it on a conflict, as projections
    racing for one month's mark often conflict) and the use case's unit of work joins it,
    so the figures and the record of the events that made them commit together.
    """

    def __init__(
        self,
        processed: ProcessedEvents,
        db: Database,
        joined: Callable[[Session], MongoReportingUnitOfWork],
    ) -> None:
        self._processed = processed
        self._db = db
        self._joined = joined

    async def apply_new(
        self,
        events: Sequence[RawEvent],
        apply: Callable[[ReportingUnitOfWork, list[int]], Awaitable[None]],
    ) -> int:
        async def work(session: Session, fresh: list[int]) -> None:
            await apply(self._joined(session), fresh)

        return await self._processed.process_many(events, work)

    async def forget_all(self) -> None:
        await self._db.drop_collection(PROCESSED_EVENTS)


class MongoReportingStore:
    """Everything the reporting service keeps in its database, built once by the
    composition root: the read side outside any transaction, units of work for the writes,
    and the record of applied events that runs the projection's transactions."""

    def __init__(
        self, client: MongoClient, db: Database, outbox: Outbox, processed: ProcessedEvents
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox
        self.read_models = MongoReadModels(db)
        self.snapshots = MongoSnapshots(db, None)
        self.applied = MongoAppliedEvents(processed, db, self.unit_of_work)

    def unit_of_work(self, session: Session | None = None) -> MongoReportingUnitOfWork:
        """A unit of work of its own transaction, or (given ``session``) joined to that one."""
        return MongoReportingUnitOfWork(self._client, self._db, self._outbox, session=session)

    async def ensure_indexes(self) -> None:
        await self.read_models.ensure_indexes()

    async def drop_all(self) -> None:
        for name in READ_MODELS:
            await self._db.drop_collection(name)


def _due(mark: Document, *, first: bool, version: int) -> DueSnapshot:
    return DueSnapshot(
        key=mark["_id"],
        month=mark["month"],
        district=mark["district"],
        changes=mark.get("changes", 0),
        version=version,
        first=first,
    )


def _time_key(at: datetime) -> str:
    """A field name that sorts as the time does (no dots: they would nest the field)."""
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")


def _with_teams(cases: list[Document]) -> list[Document]:
    """Each case fact with ``team_id``: its newest team."""
    for case in cases:
        teams = case.get("teams")
        if teams:
            case["team_id"] = teams[max(teams)]
    return cases


def _touched(at: datetime, district: str) -> list[MonthKey]:
    return [(month_of(at), district)]
