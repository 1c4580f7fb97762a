"""MongoDB adapter of the front door: the only module that touches the driver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.referral.domain import FamilyHistory, FamilyKey, KnownFamilies
from services.referral.handlers import Accepted, Decided
from shared.events import ReferralRejected, ReferralSubmitted
from shared.mongo import Database, Document, MongoClient, Session, in_transaction
from shared.outbox import Outbox

log = logging.getLogger(__name__)

REFERRALS = "referrals"
REJECTIONS = "rejections"
FAMILIES = "families"
FAMILY_KEYS = "family_keys"

KEY_RACE_ATTEMPTS = 5


class FamilyKeyTaken(Exception):
    """Another request registered one of our new keys first: match again, then it is found."""


class MongoReferralStore:
    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._referrals = db[REFERRALS]
        self._rejections = db[REJECTIONS]
        self._families = db[FAMILIES]
        self._keys = db[FAMILY_KEYS]
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        await self._referrals.create_index(
            [("partner_id", 1), ("submission_id", 1)], unique=True, name="one_per_submission"
        )
        await self._referrals.create_index("family_id")
        await self._rejections.create_index([("partner_id", 1), ("submission_id", 1)])
        await self._keys.create_index("family_id")

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        found = await self._referrals.find_one(
            {"partner_id": partner_id, "submission_id": submission_id}
        )
        return None if found is None else _accepted(found, duplicate=True)

    async def accept(
        self,
        submission: ReferralSubmitted,
        keys: list[FamilyKey],
        decide: Callable[[KnownFamilies], Decided],
        *,
        correlation_id: str,
        now: datetime,
    ) -> Accepted:
        async def store(session: Session) -> Document:
            known = await self._known_families(keys, session=session)
            decided = decide(known)
            event = decided.event
            document = {
                "_id": event.referral_id,
                **event.model_dump(mode="json"),
                "received_at": event.received_at,
                "matched_existing_family": not decided.match.is_new,
                "possible_other_families": list(decided.match.other_families),
                "submission": submission.model_dump(mode="json"),
                "correlation_id": correlation_id,
            }
            await self._referrals.insert_one(document, session=session)
            await self._families.update_one(
                {"_id": event.family_id},
                {
                    "$setOnInsert": {
                        "created_at": now,
                        "open_cases": [],
                        "closed_cases": [],
                        "last_closed_at": None,
                    },
                    "$set": {"district": event.district},
                    "$max": {"last_referral_at": now},
                    # New personal data for an erased family: it is live (and retained) again.
                    "$unset": {"personal_data_erased_at": ""},
                },
                upsert=True,
                session=session,
            )
            for key in keys:
                if key.value not in known.by_key:
                    await self._register_key(key, event.family_id, now, session=session)
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{event.referral_id}.received",
            )
            return document

        for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
            try:
                document = await in_transaction(self._client, store)
            except FamilyKeyTaken:
                log.info("family key registered concurrently; matching again (%d)", attempt)
                continue
            except DuplicateKeyError:  # the same submission, accepted concurrently
                existing = await self.find_accepted(submission.partner_id, submission.submission_id)
                if existing is None:
                    raise
                return existing
            return _accepted(document, duplicate=False)
        raise RuntimeError(f"family keys kept changing for {submission.submission_id!r}")

    async def _known_families(self, keys: list[FamilyKey], *, session: Session) -> KnownFamilies:
        found = await self._keys.find(
            {"_id": {"$in": [key.value for key in keys]}}, session=session
        ).to_list()
        by_key = {document["_id"]: document["family_id"] for document in found}
        families = await self._families.find(
            {"_id": {"$in": sorted(set(by_key.values()))}}, session=session
        ).to_list()
        return KnownFamilies(
            by_key=by_key,
            histories={family["_id"]: _history(family) for family in families},
        )

    async def _register_key(
        self, key: FamilyKey, family_id: str, now: datetime, *, session: Session
    ) -> None:
        try:
            await self._keys.insert_one(
                {
                    "_id": key.value,
                    "family_id": family_id,
                    "rule": key.rule.value,
                    "registered_at": now,
                },
                session=session,
            )
        except DuplicateKeyError as error:
            raise FamilyKeyTaken() from error

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

    async def note_case_open(self, family_id: str, case_id: str) -> None:
        # A case-closed read first (another topic, so no order between them) wins.
        await self._families.update_one(
            {"_id": family_id, "closed_cases": {"$ne": case_id}},
            {"$addToSet": {"open_cases": case_id}},
        )

    async def note_case_closed(self, family_id: str, case_id: str, closed_at: datetime) -> None:
        result = await self._families.update_one(
            {"_id": family_id},
            {
                "$pull": {"open_cases": case_id},
                "$addToSet": {"closed_cases": case_id},
                "$max": {"last_closed_at": closed_at},
            },
        )
        if result.matched_count == 0:
            log.warning("case %s closed for family %s, unknown here", case_id, family_id)

    async def get_referral(self, referral_id: str) -> Document | None:
        return await self._referrals.find_one({"_id": referral_id}, {"submission": 0})

    async def get_rejection(self, rejection_id: str) -> Document | None:
        return await self._rejections.find_one({"_id": rejection_id})

    async def get_family(self, family_id: str) -> Document | None:
        return await self._families.find_one({"_id": family_id})


def _history(family: Document) -> FamilyHistory:
    return FamilyHistory(
        family_id=family["_id"],
        open_cases=tuple(family.get("open_cases") or ()),
        last_closed_at=family.get("last_closed_at"),
    )


def _accepted(document: Document, *, duplicate: bool) -> Accepted:
    return Accepted(
        referral_id=document["_id"],
        family_id=document["family_id"],
        district=document["district"],
        decision=document["decision"],
        duplicate=duplicate,
        family_match=document.get("family_match"),
        is_re_referral=document.get("is_re_referral", False),
        family_has_open_case=document.get("family_has_open_case", False),
        screening_reason=document.get("screening_reason"),
        signposted_services=tuple(document.get("signposted_services") or ()),
    )
