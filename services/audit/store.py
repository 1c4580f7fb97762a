"""MongoDB adapter of the audit service: the only module that touches the driver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from services.audit.domain import (
    Audit,
    Auditor,
    AuditorRole,
    AuditStatus,
    CaseState,
    DrawRecord,
    DrawRound,
)
from services.audit.ports import AuditNotOpen, AuditPlace
from shared.mongo import (
    BulkWrites,
    Database,
    Document,
    MongoClient,
    MongoUnitOfWork,
    Session,
)
from shared.outbox import Outbox

CASES = "cases"
AUDITORS = "auditors"
AUDITS = "audits"
DRAWS = "draws"

FAMILY_ID_FIELDS = {CASES: "family_id", AUDITS: "family_id"}
"""Where this service's records name a family."""
FAMILY_KEYED: tuple[str, ...] = ()


class MongoAuditStore:
    """The audit service's database: its indexes, and a unit of work for each use case."""

    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        await self._db[CASES].create_index("first_allocated_at")
        await self._db[AUDITS].create_index(
            [("month", 1), ("case_id", 1)], unique=True, name="one_audit_per_case_a_month"
        )
        await self._db[AUDITS].create_index([("month", 1), ("auditor_id", 1), ("_id", 1)])
        await self._db[AUDITS].create_index([("auditor_id", 1), ("month", 1), ("_id", 1)])

    def unit_of_work(self, session: Session | None = None) -> MongoAuditUnitOfWork:
        """A transaction of its own, or the consumer's ``session`` joined (its owner commits).

        A new one per use case: a unit of work is never shared by concurrent requests.
        """
        return MongoAuditUnitOfWork(self._client, self._db, self._outbox, session=session)


class MongoAuditUnitOfWork(MongoUnitOfWork):
    """The audit repositories and outbox over one transaction (or the consumer's, joined)."""

    cases: MongoCases
    auditors: MongoAuditors
    audits: MongoAudits
    draws: MongoDraws

    def opened(self) -> None:
        self.cases = MongoCases(self.db, self.session)
        self.auditors = MongoAuditors(self.db, self.session)
        self.audits = MongoAudits(self.db, self.session)
        self.draws = MongoDraws(self.db, self.session)


class MongoCases:
    def __init__(self, db: Database, session: Session) -> None:
        self._db = db
        self._cases = db[CASES]
        self._session = session

    async def get_many(self, case_ids: Collection[str]) -> dict[str, CaseState]:
        found = self._cases.find({"_id": {"$in": sorted(case_ids)}}, session=self._session)
        return {document["_id"]: _case(document) async for document in found}

    async def save_many(self, cases: Sequence[CaseState]) -> None:
        """One bulk write: a batch of hundreds of changes costs about what a few single
        writes do."""
        writes = BulkWrites()
        for case in cases:
            document = asdict(case)
            del document["case_id"]
            writes.replace_one(CASES, {"_id": case.case_id}, document, upsert=True)
        await writes.send(self._db, session=self._session)

    async def allocated_before(self, at: datetime) -> list[CaseState]:
        found = self._cases.find({"first_allocated_at": {"$lt": at}}, session=self._session)
        return [_case(document) async for document in found]


class MongoAuditors:
    def __init__(self, db: Database, session: Session) -> None:
        self._auditors = db[AUDITORS]
        self._session = session

    async def all(self) -> list[Auditor]:
        found = self._auditors.find({}, session=self._session).sort("_id", 1)
        return [_auditor(document) async for document in found]

    async def get(self, auditor_id: str) -> Auditor | None:
        found = await self._auditors.find_one({"_id": auditor_id}, session=self._session)
        return None if found is None else _auditor(found)

    async def add(self, auditor: Auditor, *, now: datetime) -> bool:
        result = await self._auditors.update_one(
            {"_id": auditor.id},
            {"$setOnInsert": {**_auditor_document(auditor), "created_at": now, "updated_at": now}},
            upsert=True,
            session=self._session,
        )
        return result.upserted_id is not None

    async def save(self, auditor: Auditor, *, now: datetime) -> None:
        await self._auditors.update_one(
            {"_id": auditor.id},
            {"$set": {**_auditor_document(auditor), "updated_at": now}},
            session=self._session,
        )

    async def count(self) -> int:
        return await self._auditors.count_documents({}, session=self._session)


class MongoAudits:
    def __init__(self, db: Database, session: Session) -> None:
        self._db = db
        self._audits = db[AUDITS]
        self._session = session

    async def get(self, audit_id: str) -> Audit | None:
        found = await self._audits.find_one({"_id": audit_id}, session=self._session)
        return None if found is None else _audit(found)

    async def of_month(self, month: str) -> list[Audit]:
        found = self._audits.find({"month": month}, session=self._session)
        return [_audit(document) async for document in found]

    async def find(
        self,
        *,
        month: str | None,
        auditor_id: str | None,
        status: AuditStatus | None,
        now: datetime,
        limit: int,
        after: AuditPlace | None = None,
    ) -> tuple[list[Audit], AuditPlace | None]:
        # A month at a time, newest first: each read is by the month's equality (with the
        # auditor's, when asked), so a page costs the same however many months are kept.
        query: dict[str, Any] = {}
        if auditor_id is not None:
            query["auditor_id"] = auditor_id
        if status is AuditStatus.COMPLETED:
            query["status"] = "completed"
        elif status is AuditStatus.OVERDUE:
            query |= {"status": "assigned", "due_by": {"$lte": now}}
        elif status is AuditStatus.ASSIGNED:
            query |= {"status": "assigned", "due_by": {"$gt": now}}
        months = [month] if month is not None else await self._months_drawn()
        if after is not None:
            months = [drawn for drawn in months if drawn <= after[0]]
        page: list[Audit] = []
        for drawn in months:
            in_month = {**query, "month": drawn}
            mark = after[1:] if after is not None and drawn == after[0] else None
            if mark is not None and auditor_id is None:
                # A range after the month's equality, the ties stepped over here: an $or
                # would be a scan on many servers.
                in_month["auditor_id"] = {"$gte": mark[0]}
            wanted = limit - len(page)
            found = (
                self._audits.find(in_month, session=self._session)
                .sort([("auditor_id", 1), ("_id", 1)])
                .batch_size(wanted + 2)
            )
            if mark is None:
                found = found.limit(wanted + 1)
            async for document in found:
                if mark is not None and (document["auditor_id"], document["_id"]) <= mark:
                    continue
                if len(page) == limit:  # one more than the page holds: there is a next
                    await found.close()
                    last = page[-1]
                    return page, (last.month, last.auditor_id, last.id)
                page.append(_audit(document))
        return page, None

    async def _months_drawn(self) -> list[str]:
        found = self._db[DRAWS].find({}, {"_id": 1}, session=self._session).sort("_id", -1)
        return [document["_id"] async for document in found]

    async def assigned_per_auditor(self, month: str) -> dict[str, int]:
        found = self._audits.find({"month": month}, {"auditor_id": 1}, session=self._session)
        return dict(Counter([document["auditor_id"] async for document in found]))

    async def cases_drawn(self, months: Sequence[str]) -> set[str]:
        found = self._audits.find(
            {"month": {"$in": list(months)}}, {"case_id": 1}, session=self._session
        )
        return {document["case_id"] async for document in found}

    async def add(self, audits: Sequence[Audit]) -> None:
        if audits:
            await self._audits.insert_many(
                [_audit_document(audit) for audit in audits], session=self._session
            )

    async def complete(self, audit: Audit) -> None:
        result = await self._audits.update_one(
            {"_id": audit.id, "status": "assigned"},
            {
                "$set": {
                    "scores": audit.scores,
                    "overall_grade": audit.overall_grade,
                    "overall_grade_given": audit.overall_grade_given,
                    "learning_points": audit.learning_points,
                    "completed_at": audit.completed_at,
                    "status": "completed",
                }
            },
            session=self._session,
        )
        if result.modified_count != 1:
            raise AuditNotOpen(audit.id)


class MongoDraws:
    def __init__(self, db: Database, session: Session) -> None:
        self._draws = db[DRAWS]
        self._session = session

    async def get(self, month: str) -> DrawRecord | None:
        found = await self._draws.find_one({"_id": month}, session=self._session)
        return None if found is None else _draw(found)

    async def newest_first(self) -> list[DrawRecord]:
        found = self._draws.find({}, session=self._session).sort("_id", -1)
        return [_draw(document) async for document in found]

    async def add_round(self, month: str, round_: DrawRound) -> DrawRecord:
        await self._draws.update_one(
            {"_id": month},
            {
                "$setOnInsert": {"seed": round_.seed, "drawn_at": round_.at},
                "$push": {"rounds": asdict(round_)},
            },
            upsert=True,
            session=self._session,
        )
        stored = await self._draws.find_one({"_id": month}, session=self._session)
        assert stored is not None
        return _draw(stored)


def _case(document: Document) -> CaseState:
    return CaseState(
        case_id=document["_id"],
        family_id=document["family_id"],
        district=document["district"],
        team_id=document.get("team_id"),
        worker_id=document.get("worker_id"),
        level_of_need=document.get("level_of_need"),
        first_allocated_at=document.get("first_allocated_at"),
        as_of=document.get("as_of"),
        closed_at=document.get("closed_at"),
    )


def _auditor(document: Document) -> Auditor:
    return Auditor(
        id=document["_id"],
        name=document["name"],
        role=AuditorRole(document["role"]),
        district=document["district"],
        team_id=document.get("team_id"),
        active=document.get("active", True),
        audits_per_month=document.get("audits_per_month"),
    )


def _auditor_document(auditor: Auditor) -> Document:
    document = asdict(auditor)
    del document["id"]
    document["role"] = auditor.role.value
    return document


def _audit(document: Document) -> Audit:
    return Audit(
        id=document["_id"],
        month=document["month"],
        auditor_id=document["auditor_id"],
        auditor_role=AuditorRole(document["auditor_role"]),
        case_id=document["case_id"],
        family_id=document["family_id"],
        district=document["district"],
        team_id=document.get("team_id"),
        level_of_need=document.get("level_of_need"),
        case_status=document.get("case_status"),
        draw_seed=document.get("draw_seed"),
        assigned_at=document["assigned_at"],
        due_by=document["due_by"],
        completed_at=document.get("completed_at"),
        scores=document.get("scores") or {},
        overall_grade=document.get("overall_grade"),
        overall_grade_given=document.get("overall_grade_given"),
        learning_points=document.get("learning_points") or [],
    )


def _audit_document(audit: Audit) -> Document:
    """An audit as the audits collection holds one: its status kept for the queries."""
    return {
        "_id": audit.id,
        "month": audit.month,
        "auditor_id": audit.auditor_id,
        "auditor_role": audit.auditor_role.value,
        "case_id": audit.case_id,
        "family_id": audit.family_id,
        "district": audit.district,
        "team_id": audit.team_id,
        "level_of_need": audit.level_of_need,
        "case_status": audit.case_status,
        "draw_seed": audit.draw_seed,
        "assigned_at": audit.assigned_at,
        "due_by": audit.due_by,
        "status": "completed" if audit.completed_at else "assigned",
        "completed_at": audit.completed_at,
        "scores": audit.scores,
        "overall_grade": audit.overall_grade,
        "overall_grade_given": audit.overall_grade_given,
        "learning_points": audit.learning_points,
    }


def _draw(document: Document) -> DrawRecord:
    return DrawRecord(
        month=document["_id"],
        seed=document["seed"],
        drawn_at=document["drawn_at"],
        rounds=[
            DrawRound(
                seed=round_["seed"],
                at=round_["at"],
                assigned=round_["assigned"],
                unfilled=round_.get("unfilled") or {},
            )
            for round_ in document.get("rounds", [])
        ],
    )
