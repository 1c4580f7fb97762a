"""MongoDB adapter of the allocation service: the only module that touches the driver."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.allocation.domain import OpenCase
from shared.events import CaseAllocated, CaseClosed, CaseOutcome
from shared.mongo import Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

CASES = "cases"


class CaseNotOpen(Exception):
    pass


class MongoCaseStore:
    def __init__(
        self,
        client: MongoClient,
        db: Database,
        outbox: Outbox,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._cases = db[CASES]
        self._outbox = outbox
        self._clock = clock

    async def ensure_indexes(self) -> None:
        # One open case per family: the database enforces "one family, one worker".
        await self._cases.create_index(
            "family_id",
            unique=True,
            partialFilterExpression={"status": "open"},
            name="one_open_case_per_family",
        )
        await self._cases.create_index([("district", 1), ("status", 1)])

    async def open_case_for(self, family_id: str, *, session: Session) -> OpenCase | None:
        found = await self._cases.find_one(
            {"family_id": family_id, "status": "open"}, session=session
        )
        if found is None:
            return None
        return OpenCase(
            case_id=found["_id"],
            family_id=found["family_id"],
            district=found["district"],
            team_id=found.get("team_id"),
            worker_id=found.get("worker_id"),
        )

    async def save_allocation(
        self, allocation: CaseAllocated, *, session: Session, correlation_id: str
    ) -> None:
        await self._cases.update_one(
            {"_id": allocation.case_id},
            {
                "$setOnInsert": {
                    "family_id": allocation.family_id,
                    "district": allocation.district,
                    "status": "open",
                    "opened_at": allocation.allocated_at,
                },
                "$set": {
                    "team_id": allocation.team_id,
                    "worker_id": allocation.worker_id,
                    "kind": allocation.kind.value,
                    "level_of_need": int(allocation.level_of_need),
                    "social_care_case_reference": allocation.social_care_case_reference,
                    "correlation_id": correlation_id,
                },
                "$addToSet": {"referral_ids": allocation.referral_id},
            },
            upsert=True,
            session=session,
        )
        await self._outbox.stage_event(
            allocation,
            session=session,
            correlation_id=correlation_id,
            event_id=f"{allocation.case_id}.allocated.{allocation.referral_id}",
        )

    async def close(self, case_id: str, outcome: CaseOutcome) -> CaseClosed:
        """Close an open case and stage ``case-closed``; closing it again is refused."""
        now = self._clock()

        async def close_case(session: Session) -> CaseClosed:
            case = await self._cases.find_one_and_update(
                {"_id": case_id, "status": "open"},
                {"$set": {"status": "closed", "outcome": outcome.value, "closed_at": now}},
                session=session,
            )
            if case is None:
                raise CaseNotOpen(case_id)
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

        return await in_transaction(self._client, close_case)

    async def list_cases(self, filters: dict[str, Any], limit: int) -> list[Document]:
        return await self._cases.find(filters).sort("opened_at", -1).limit(limit).to_list()

    async def get(self, case_id: str) -> Document | None:
        return await self._cases.find_one({"_id": case_id})
