"""MongoDB adapter of the front door: the only module that touches the driver."""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from services.referral.handlers import Accepted
from shared.events import ReferralReceived, ReferralRejected, ReferralSubmitted
from shared.mongo import Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

REFERRALS = "referrals"
REJECTIONS = "rejections"


class MongoReferralStore:
    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._referrals = db[REFERRALS]
        self._rejections = db[REJECTIONS]
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        await self._referrals.create_index(
            [("partner_id", 1), ("submission_id", 1)], unique=True, name="one_per_submission"
        )
        await self._referrals.create_index("family_id")
        await self._rejections.create_index([("partner_id", 1), ("submission_id", 1)])

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        found = await self._referrals.find_one(
            {"partner_id": partner_id, "submission_id": submission_id}
        )
        return None if found is None else _accepted(found, duplicate=True)

    async def accept(
        self, submission: ReferralSubmitted, event: ReferralReceived, *, correlation_id: str
    ) -> Accepted:
        document = {
            "_id": event.referral_id,
            **event.model_dump(mode="json"),
            "received_at": event.received_at,
            "submission": submission.model_dump(mode="json"),
            "correlation_id": correlation_id,
        }

        async def store(session: Session) -> None:
            await self._referrals.insert_one(document, session=session)
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{event.referral_id}.received",
            )

        try:
            await in_transaction(self._client, store)
        except DuplicateKeyError:  # the same submission, accepted concurrently
            existing = await self.find_accepted(event.partner_id, event.submission_id)
            if existing is None:
                raise
            return existing
        return _accepted(document, duplicate=False)

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> None:
        record = {
            **document,
            **event.model_dump(mode="json"),
            "received_at": event.received_at,
            "correlation_id": correlation_id,
        }

        async def store(session: Session) -> None:
            await self._rejections.update_one(
                {"_id": event.rejection_id}, {"$setOnInsert": record}, upsert=True, session=session
            )
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{event.rejection_id}.rejected",
            )

        await in_transaction(self._client, store)

    async def get_referral(self, referral_id: str) -> Document | None:
        return await self._referrals.find_one({"_id": referral_id}, {"submission": 0})


def _accepted(document: Document, *, duplicate: bool) -> Accepted:
    return Accepted(
        referral_id=document["_id"],
        family_id=document["family_id"],
        district=document["district"],
        decision=document["decision"],
        duplicate=duplicate,
    )
