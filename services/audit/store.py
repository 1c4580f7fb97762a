"""MongoDB adapter of the audit service: the only module that touches the driver."""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from shared.events import AuditCompleted, CaseAllocated, CaseClosed
from shared.mongo import Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

CASES = "cases"
AUDITS = "audits"


class MongoAuditStore:
    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._cases = db[CASES]
        self._audits = db[AUDITS]
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        await self._cases.create_index([("district", 1), ("status", 1)])
        await self._audits.create_index([("auditor_id", 1), ("month", 1)])

    async def record_allocation(self, allocation: CaseAllocated, *, session: Session) -> None:
        """Remember the case as one that can be audited."""
        await self._cases.update_one(
            {"_id": allocation.case_id},
            {
                "$setOnInsert": {"status": "open", "opened_at": allocation.allocated_at},
                "$set": {
                    "family_id": allocation.family_id,
                    "district": allocation.district,
                    "team_id": allocation.team_id,
                    "worker_id": allocation.worker_id,
                    "level_of_need": int(allocation.level_of_need),
                },
            },
            upsert=True,
            session=session,
        )

    async def record_closure(self, closure: CaseClosed, *, session: Session) -> None:
        await self._cases.update_one(
            {"_id": closure.case_id},
            {"$set": {"status": "closed", "closed_at": closure.closed_at}},
            session=session,
        )

    async def get_case(self, case_id: str) -> Document | None:
        return await self._cases.find_one({"_id": case_id})

    async def get_audit(self, audit_id: str) -> Document | None:
        return await self._audits.find_one({"_id": audit_id})

    async def complete(self, audit: AuditCompleted, *, correlation_id: str) -> bool:
        """Store the audit and stage ``audit-completed``; False when it already existed."""
        document = {"_id": audit.audit_id, **audit.model_dump(mode="json")}

        async def store(session: Session) -> None:
            await self._audits.insert_one(document, session=session)
            await self._outbox.stage_event(
                audit,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{audit.audit_id}.completed",
            )

        try:
            await in_transaction(self._client, store)
        except DuplicateKeyError:
            return False
        return True

    async def list_audits(self, filters: dict[str, Any], limit: int) -> list[Document]:
        return await self._audits.find(filters).sort("completed_at", -1).limit(limit).to_list()
