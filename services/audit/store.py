"""MongoDB adapter of the audit service: the only module that touches the driver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from services.audit.domain import (
    NO_REPEAT_MONTHS,
    Auditor,
    AuditorRole,
    CaseState,
    audit_id_for,
    month_end,
    shift_month,
)
from services.audit.ports import AuditNotOpen, DrawDecision, DrawInputs, DrawRecord
from shared.events import AuditAssigned, AuditCompleted
from shared.mongo import BulkWrites, Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

CASES = "cases"
AUDITORS = "auditors"
AUDITS = "audits"
DRAWS = "draws"


class MongoAuditStore:
    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._cases = db[CASES]
        self._auditors = db[AUDITORS]
        self._audits = db[AUDITS]
        self._draws = db[DRAWS]
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        await self._cases.create_index("first_allocated_at")
        await self._audits.create_index(
            [("month", 1), ("case_id", 1)], unique=True, name="one_audit_per_case_a_month"
        )
        await self._audits.create_index([("auditor_id", 1), ("month", 1)])

    # -- cases ---------------------------------------------------------------------------------

    async def update_case(
        self,
        case_id: str,
        change: Callable[[CaseState | None], CaseState],
        *,
        session: Session,
    ) -> CaseState:
        found = await self._cases.find_one({"_id": case_id}, session=session)
        case = change(None if found is None else _case(found))
        document = asdict(case)
        del document["case_id"]
        await self._cases.replace_one({"_id": case_id}, document, upsert=True, session=session)
        return case

    async def update_cases(
        self,
        changes: Sequence[tuple[str, Callable[[CaseState | None], CaseState]]],
        *,
        session: Session,
    ) -> list[CaseState]:
        """``update_case`` for many changes, in order, with one read and one bulk write; the
        state each change left its case in."""
        ids = sorted({case_id for case_id, _ in changes})
        found = self._cases.find({"_id": {"$in": ids}}, session=session)
        cases: dict[str, CaseState] = {document["_id"]: _case(document) async for document in found}
        after: list[CaseState] = []
        for case_id, change in changes:
            cases[case_id] = change(cases.get(case_id))
            after.append(cases[case_id])
        writes = BulkWrites()
        for case_id in ids:
            document = asdict(cases[case_id])
            del document["case_id"]
            writes.replace_one(CASES, {"_id": case_id}, document, upsert=True)
        await writes.send(self._cases.database, session=session)
        return after

    async def get_case(self, case_id: str) -> CaseState | None:
        found = await self._cases.find_one({"_id": case_id})
        return None if found is None else _case(found)

    # -- auditors ------------------------------------------------------------------------------

    async def auditors(self) -> list[Auditor]:
        found = await self._auditors.find({}).sort("_id", 1).to_list()
        return [_auditor(document) for document in found]

    async def get_auditor(self, auditor_id: str) -> Auditor | None:
        found = await self._auditors.find_one({"_id": auditor_id})
        return None if found is None else _auditor(found)

    async def add_auditor(self, auditor: Auditor, *, now: datetime) -> bool:
        """False, changing nothing, when the id is taken."""
        result = await self._auditors.update_one(
            {"_id": auditor.id},
            {"$setOnInsert": {**_auditor_document(auditor), "created_at": now, "updated_at": now}},
            upsert=True,
        )
        return result.upserted_id is not None

    async def save_auditor(self, auditor: Auditor, *, now: datetime) -> None:
        await self._auditors.update_one(
            {"_id": auditor.id}, {"$set": {**_auditor_document(auditor), "updated_at": now}}
        )

    async def seed_auditors(self, auditors: list[Auditor], *, now: datetime) -> int:
        """Add ``auditors`` only to an empty register, so edits survive a restart."""
        if await self._auditors.count_documents({}, limit=1):
            return 0
        added = 0
        for auditor in auditors:
            added += await self.add_auditor(auditor, now=now)
        return added

    # -- draws ---------------------------------------------------------------------------------

    async def draw(
        self, month: str, decide: Callable[[DrawInputs], DrawDecision], *, now: datetime
    ) -> DrawRecord:
        async def work(session: Session) -> DrawRecord:
            recorded = await self._draws.find_one({"_id": month}, session=session)
            auditors = [
                _auditor(document)
                for document in await self._auditors.find({}, session=session).to_list()
            ]
            by_id = {auditor.id: auditor for auditor in auditors}
            this_month = await self._audits.find(
                {"month": month}, {"auditor_id": 1}, session=session
            ).to_list()
            window = [
                shift_month(month, step) for step in range(1 - NO_REPEAT_MONTHS, NO_REPEAT_MONTHS)
            ]
            recent = await self._audits.find(
                {"month": {"$in": window}}, {"case_id": 1}, session=session
            ).to_list()
            population = await self._cases.find(
                {"first_allocated_at": {"$lt": month_end(month)}}, session=session
            ).to_list()
            cases = {document["_id"]: _case(document) for document in population}
            decision = decide(
                DrawInputs(
                    month=month,
                    recorded_seed=None if recorded is None else recorded["seed"],
                    auditors=auditors,
                    already_assigned=dict(Counter(a["auditor_id"] for a in this_month)),
                    recently_drawn={document["case_id"] for document in recent},
                    population=list(cases.values()),
                )
            )
            documents = [
                _audit_document(
                    by_id[assignment.auditor_id],
                    cases[assignment.case_id],
                    month=month,
                    seed=decision.seed,
                    now=now,
                )
                for assignment in decision.outcome.assignments
            ]
            if documents:
                await self._audits.insert_many(documents, session=session)
            for document in documents:
                await self._outbox.stage_event(
                    _assigned(document),
                    session=session,
                    correlation_id=f"draw-{month}",
                    event_id=f"{document['_id']}.assigned",
                )
            round_ = {
                "seed": decision.seed,
                "at": now,
                "assigned": len(documents),
                "unfilled": decision.outcome.unfilled,
            }
            await self._draws.update_one(
                {"_id": month},
                {
                    "$setOnInsert": {"seed": decision.seed, "drawn_at": now},
                    "$push": {"rounds": round_},
                },
                upsert=True,
                session=session,
            )
            stored = await self._draws.find_one({"_id": month}, session=session)
            assert stored is not None
            return _draw(
                stored,
                new_audit_ids=[document["_id"] for document in documents],
                first_round=recorded is None,
            )

        return await in_transaction(self._client, work)

    async def get_draw(self, month: str) -> DrawRecord | None:
        found = await self._draws.find_one({"_id": month})
        return None if found is None else _draw(found)

    async def list_draws(self) -> list[DrawRecord]:
        found = await self._draws.find({}).sort("_id", -1).to_list()
        return [_draw(document) for document in found]

    # -- audits --------------------------------------------------------------------------------

    async def get_audit(self, audit_id: str) -> Document | None:
        return await self._audits.find_one({"_id": audit_id})

    async def month_audits(self, month: str) -> list[Document]:
        return await self._audits.find({"month": month}).to_list()

    async def find_audits(
        self,
        *,
        month: str | None,
        auditor_id: str | None,
        status: str | None,
        now: datetime,
        limit: int,
    ) -> list[Document]:
        query: dict[str, Any] = {}
        if month is not None:
            query["month"] = month
        if auditor_id is not None:
            query["auditor_id"] = auditor_id
        if status == "completed":
            query["status"] = "completed"
        elif status == "overdue":
            query |= {"status": "assigned", "due_by": {"$lte": now}}
        elif status == "assigned":
            query |= {"status": "assigned", "due_by": {"$gt": now}}
        found = self._audits.find(query).sort([("month", -1), ("auditor_id", 1), ("_id", 1)])
        return await found.limit(limit).to_list()

    async def complete(
        self,
        audit_id: str,
        changes: dict[str, Any],
        event: AuditCompleted,
        *,
        correlation_id: str,
    ) -> None:
        async def work(session: Session) -> None:
            result = await self._audits.update_one(
                {"_id": audit_id, "status": "assigned"},
                {"$set": {**changes, "status": "completed"}},
                session=session,
            )
            if result.modified_count != 1:
                raise AuditNotOpen(audit_id)
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{audit_id}.completed",
            )

        await in_transaction(self._client, work)


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


def _audit_document(
    auditor: Auditor, case: CaseState, *, month: str, seed: int, now: datetime
) -> Document:
    return {
        "_id": audit_id_for(auditor.id, case.case_id, month),
        "month": month,
        "auditor_id": auditor.id,
        "auditor_role": auditor.role.value,
        "case_id": case.case_id,
        "family_id": case.family_id,
        "district": case.district,
        "team_id": case.team_id,
        "level_of_need": case.level_of_need,
        "case_status": case.status,
        "draw_seed": seed,
        "assigned_at": now,
        "due_by": month_end(month),
        "status": "assigned",
        "completed_at": None,
        "scores": {},
        "overall_grade": None,
        "learning_points": [],
    }


def _assigned(document: Document) -> AuditAssigned:
    return AuditAssigned(
        audit_id=document["_id"],
        case_id=document["case_id"],
        family_id=document["family_id"],
        district=document["district"],
        team_id=document["team_id"],
        auditor_id=document["auditor_id"],
        month=document["month"],
        assigned_at=document["assigned_at"],
        due_by=document["due_by"],
    )


def _draw(
    document: Document, *, new_audit_ids: list[str] | None = None, first_round: bool = False
) -> DrawRecord:
    return DrawRecord(
        month=document["_id"],
        seed=document["seed"],
        drawn_at=document["drawn_at"],
        rounds=document.get("rounds", []),
        new_audit_ids=new_audit_ids or [],
        first_round=first_round,
    )
