"""MongoDB adapters of the front door: the only module that touches the driver.

``MongoReferralStore`` is the entry: it takes submissions in (its own transactions, or a
batch's), records what case events say, and hands out ``MongoReferralUnitOfWork``, whose
repositories serve the data protection use cases (partner keys, access log, erasure,
retention) over one transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from pymongo.errors import DuplicateKeyError

from services.referral.domain import (
    FamilyHistory,
    FamilyKey,
    FamilyRecord,
    KnownFamilies,
    referral_id_for,
)
from services.referral.domain.erasure import (
    REFERRAL_PERSONAL_FIELDS,
    REJECTION_PERSONAL_FIELDS,
    StoredRejection,
)
from services.referral.domain.partners import PartnerKeyRecord
from services.referral.ports import (
    Accepted,
    AccessEntry,
    Decided,
    Lookups,
    Submissions,
)
from shared.access_log import ACCESS_LOG, access_page, prepare_access_log, record_access
from shared.clock import utc_now
from shared.events import EventData, ReferralReceived, ReferralRejected, ReferralSubmitted
from shared.listing import BucketedList
from shared.mongo import (
    BulkWrites,
    Database,
    Document,
    MongoClient,
    MongoUnitOfWork,
    Session,
    create_mongo_client,
    in_transaction,
)
from shared.outbox import Outbox

log = logging.getLogger(__name__)

REFERRALS = "referrals"
REJECTIONS = "rejections"
FAMILIES = "families"
FAMILY_KEYS = "family_keys"
PARTNER_KEYS = "partner_keys"
ISSUED_KEYS = BucketedList(PARTNER_KEYS)
"""Partner keys, newest issued first, a page at a time."""

FAMILY_ID_FIELDS = {REFERRALS: "family_id", FAMILY_KEYS: "family_id", ACCESS_LOG: "family_id"}
"""Where this service's records name a family (``FAMILIES`` is keyed by it)."""
FAMILY_KEYED = (FAMILIES,)

T = TypeVar("T")

KEY_RACE_ATTEMPTS = 5
REKEY_BATCH = 1000
"""Keys written per bulk write while the index is rebuilt."""


class FamilyKeyTaken(Exception):
    """Another request registered one of our new keys first: match again, then it is found."""


class MongoReferralStore:
    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._db = db
        self._referrals = db[REFERRALS]
        self._rejections = db[REJECTIONS]
        self._families = db[FAMILIES]
        self._keys = db[FAMILY_KEYS]
        self._outbox = outbox
        self._partner_keys = MongoPartnerKeys(db)

    async def ensure_indexes(self) -> None:
        await self._referrals.create_index(
            [("partner_id", 1), ("submission_id", 1)], unique=True, name="one_per_submission"
        )
        await self._referrals.create_index("family_id")
        await self._rejections.create_index([("partner_id", 1), ("submission_id", 1)])
        await self._keys.create_index("family_id")
        await self._partner_keys.ensure_indexes()
        await MongoAccessLog(self._db).ensure_indexes()

    @property
    def partner_keys(self) -> MongoPartnerKeys:
        return self._partner_keys

    def unit_of_work(self, session: Session | None = None) -> MongoReferralUnitOfWork:
        """A fresh one per use case: it holds its transaction's session while open (or
        joins ``session``'s transaction)."""
        return MongoReferralUnitOfWork(self._client, self._db, self._outbox, session=session)

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        # By id, which the submission decides: a look-up by two fields scans on some servers.
        found = await self._referrals.find_one({"_id": referral_id_for(partner_id, submission_id)})
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
            document = _referral_document(submission, decided, correlation_id)
            await self._referrals.insert_one(document, session=session)
            await self._families.update_one(
                {"_id": event.family_id}, _family_update(event, now), upsert=True, session=session
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
            await self._keys.insert_one(_key_document(key, family_id, now), session=session)
        except DuplicateKeyError as error:
            raise FamilyKeyTaken() from error

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        record = _rejection_document(document, event, correlation_id)

        async def store(session: Session) -> bool:
            stored = await self._rejections.update_one(
                {"_id": event.rejection_id}, {"$setOnInsert": record}, upsert=True, session=session
            )
            if stored.upserted_id is None:
                return False
            await self._outbox.stage_event(
                event,
                session=session,
                correlation_id=correlation_id,
                event_id=f"{event.rejection_id}.rejected",
            )
            return True

        return await in_transaction(self._client, store)

    def batch(self, session: Session) -> ReferralBatch:
        """A store for many submissions in ``session``'s transaction, written at ``flush``."""
        return ReferralBatch(self, session)

    async def in_batch(
        self, lookups: Sequence[Lookups], work: Callable[[Submissions], Awaitable[T]]
    ) -> T:
        async def run(session: Session) -> T:
            batch = self.batch(session)
            await batch.prefetch(lookups)
            result = await work(batch)
            await batch.flush()
            return result

        return await in_transaction(self._client, run)

    async def note_cases_open(self, cases: Sequence[tuple[str, str]]) -> None:
        """In one bulk write."""
        writes = BulkWrites()
        for family_id, case_id in cases:
            # A case-closed read first (another topic, so no order between them) wins.
            writes.update_one(
                FAMILIES,
                {"_id": family_id, "closed_cases": {"$ne": case_id}},
                {"$addToSet": {"open_cases": case_id}},
            )
        await writes.send(self._families.database, session=None)

    async def note_cases_closed(self, closures: Sequence[tuple[str, str, datetime]]) -> None:
        """One read of which families are known (to log the others), then one bulk write."""
        if not closures:
            return
        family_ids = sorted({family_id for family_id, _, _ in closures})
        found = self._families.find({"_id": {"$in": family_ids}}, {"_id": 1})
        known = {document["_id"] async for document in found}
        writes = BulkWrites()
        for family_id, case_id, closed_at in closures:
            if family_id not in known:
                log.warning("case %s closed for family %s, unknown here", case_id, family_id)
            writes.update_one(
                FAMILIES,
                {"_id": family_id},
                {
                    "$pull": {"open_cases": case_id},
                    "$addToSet": {"closed_cases": case_id},
                    "$max": {"last_closed_at": closed_at},
                },
            )
        await writes.send(self._families.database, session=None)


class ReferralBatch:
    """The store as a batch of submissions sees it: reads go to the database through the
    batch's transaction, with what the batch has decided so far laid over them; writes are
    gathered and sent as a few bulk writes by ``flush``.

    So a sibling or a repeat family later in the batch matches the family an earlier
    submission created, and a resend finds the referral an earlier one accepted, exactly as
    one at a time. A clash with another replica's write fails the flush with
    ``DuplicateKeyError``; the consumer then takes the submissions one at a time.
    """

    def __init__(self, store: MongoReferralStore, session: Session) -> None:
        self._store = store
        self._session = session
        self._referrals: dict[str, Document] = {}
        self._family_of_key: dict[str, str] = {}
        self._new_keys: list[Document] = []
        self._histories: dict[str, FamilyHistory] = {}
        self._writes = BulkWrites()
        self._outgoing: list[tuple[EventData, str, str]] = []
        self._rejected: set[str] = set()
        # What ``prefetch`` read: absent from the ``found`` maps means not in the database.
        self._fetched_referrals: set[str] = set()
        self._found_referrals: dict[str, Document] = {}
        self._fetched_keys: set[str] = set()
        self._found_keys: dict[str, str] = {}
        self._found_histories: dict[str, FamilyHistory] = {}

    async def prefetch(self, lookups: Sequence[Lookups]) -> None:
        """Read the batch's referrals, family keys and families in three queries, instead of
        three for each submission."""
        session = self._session
        referral_ids = sorted({lookup.referral_id for lookup in lookups})
        keys = list({key.value: key for lookup in lookups for key in lookup.family_keys}.values())
        found = self._store._referrals.find(
            {"_id": {"$in": referral_ids}}, {"submission": 0}, session=session
        )
        self._found_referrals = {document["_id"]: document async for document in found}
        known = await self._store._known_families(keys, session=session)
        self._found_keys = dict(known.by_key)
        self._found_histories = dict(known.histories)
        self._fetched_referrals = set(referral_ids)
        self._fetched_keys = {key.value for key in keys}

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        referral_id = referral_id_for(partner_id, submission_id)
        found = self._referrals.get(referral_id) or self._found_referrals.get(referral_id)
        if found is None and referral_id not in self._fetched_referrals:
            found = await self._store._referrals.find_one(
                {"_id": referral_id}, session=self._session
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
        unread = [
            key
            for key in keys
            if key.value not in self._family_of_key and key.value not in self._fetched_keys
        ]
        stored = (
            await self._store._known_families(unread, session=self._session)
            if unread
            else KnownFamilies()
        )
        by_key = dict(stored.by_key)
        histories = dict(stored.histories)
        for key in keys:
            family_id = self._family_of_key.get(key.value) or self._found_keys.get(key.value)
            if family_id is None:
                continue
            by_key[key.value] = family_id
            history = self._histories.get(family_id) or self._found_histories.get(family_id)
            if history is not None:
                histories[family_id] = history
        decided = decide(KnownFamilies(by_key=by_key, histories=histories))
        event = decided.event
        document = _referral_document(submission, decided, correlation_id)
        self._referrals[event.referral_id] = document
        self._writes.update_one(
            FAMILIES, {"_id": event.family_id}, _family_update(event, now), upsert=True
        )
        self._histories.setdefault(
            event.family_id,
            histories.get(event.family_id) or FamilyHistory(family_id=event.family_id),
        )
        for key in keys:
            if key.value not in by_key:
                self._family_of_key[key.value] = event.family_id
                self._new_keys.append(_key_document(key, event.family_id, now))
        self._outgoing.append((event, correlation_id, f"{event.referral_id}.received"))
        return _accepted(document, duplicate=False)

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        # A resent bad request has its rejection already: looked up by id, as answers are.
        if event.rejection_id in self._rejected or await self._store._rejections.find_one(
            {"_id": event.rejection_id}, {"_id": 1}, session=self._session
        ):
            return False
        self._rejected.add(event.rejection_id)
        record = _rejection_document(document, event, correlation_id)
        self._writes.update_one(
            REJECTIONS, {"_id": event.rejection_id}, {"$setOnInsert": record}, upsert=True
        )
        self._outgoing.append((event, correlation_id, f"{event.rejection_id}.rejected"))
        return True

    async def flush(self) -> None:
        """Write everything the batch decided, in the caller's transaction."""
        session = self._session
        if self._referrals:
            await self._store._referrals.insert_many(
                list(self._referrals.values()), session=session
            )
        if self._new_keys:
            await self._store._keys.insert_many(self._new_keys, session=session)
        await self._writes.send(self._store._referrals.database, session=session)
        await self._store._outbox.stage_events(self._outgoing, session=session)


def _referral_document(
    submission: ReferralSubmitted, decided: Decided, correlation_id: str
) -> Document:
    event = decided.event
    return {
        "_id": event.referral_id,
        **event.model_dump(mode="json"),
        "received_at": event.received_at,
        "matched_existing_family": not decided.match.is_new,
        "possible_other_families": list(decided.match.other_families),
        "submission": submission.model_dump(mode="json"),
        "correlation_id": correlation_id,
    }


def _family_update(event: ReferralReceived, now: datetime) -> Document:
    return {
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
    }


def _key_document(key: FamilyKey, family_id: str, now: datetime) -> Document:
    return {"_id": key.value, "family_id": family_id, "rule": key.rule.value, "registered_at": now}


def _rejection_document(
    document: dict[str, Any], event: ReferralRejected, correlation_id: str
) -> Document:
    return {
        **document,
        **event.model_dump(mode="json"),
        "received_at": event.received_at,
        "correlation_id": correlation_id,
    }


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


# ---------------------------------------------------------------------------------------------
# The data protection side: repositories over one unit of work's session


class MongoReferrals:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._referrals = db[REFERRALS]
        self._session = session

    async def get(self, referral_id: str) -> Document | None:
        return await self._referrals.find_one(
            {"_id": referral_id}, {"submission": 0}, session=self._session
        )

    async def submissions_of(self, family_id: str) -> list[tuple[str, str]]:
        found = self._referrals.find(
            {"family_id": family_id}, {"partner_id": 1, "submission_id": 1}, session=self._session
        )
        return [(document["partner_id"], document["submission_id"]) async for document in found]

    async def erase_personal_data(self, family_id: str, *, now: datetime) -> None:
        await self._referrals.update_many(
            {"family_id": family_id},
            {
                "$unset": dict.fromkeys(REFERRAL_PERSONAL_FIELDS, ""),
                "$set": {"personal_data_erased_at": now},
            },
            session=self._session,
        )


class MongoRejections:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._rejections = db[REJECTIONS]
        self._session = session

    async def get(self, rejection_id: str) -> Document | None:
        return await self._rejections.find_one({"_id": rejection_id}, session=self._session)

    async def unerased(self) -> list[StoredRejection]:
        found = self._rejections.find({"personal_data_erased_at": None}, session=self._session)
        return [
            StoredRejection(
                rejection_id=document["_id"],
                partner_id=document.get("partner_id"),
                submission_id=document.get("submission_id"),
                submission=_submission_of(document),
            )
            async for document in found
        ]

    async def erase_personal_data(self, rejection_ids: Collection[str], *, now: datetime) -> None:
        await self._rejections.update_many(
            {"_id": {"$in": list(rejection_ids)}},
            {
                "$unset": dict.fromkeys(REJECTION_PERSONAL_FIELDS, ""),
                "$set": {"personal_data_erased_at": now},
            },
            session=self._session,
        )


class MongoFamilies:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._families = db[FAMILIES]
        self._keys = db[FAMILY_KEYS]
        self._session = session

    async def get(self, family_id: str) -> FamilyRecord | None:
        found = await self._families.find_one({"_id": family_id}, session=self._session)
        return None if found is None else _family_record(found)

    async def key_values(self, family_id: str) -> set[str]:
        found = self._keys.find({"family_id": family_id}, {"_id": 1}, session=self._session)
        return {document["_id"] async for document in found}

    async def erase(self, family_id: str, *, by: str, reason: str, now: datetime) -> int:
        removed = await self._keys.delete_many({"family_id": family_id}, session=self._session)
        await self._families.update_one(
            {"_id": family_id},
            {"$set": {"personal_data_erased_at": now, "erasure": {"by": by, "reason": reason}}},
            session=self._session,
        )
        return removed.deleted_count

    async def closed_by(self, cutoff: datetime) -> list[FamilyRecord]:
        found = self._families.find(
            {"last_closed_at": {"$ne": None, "$lte": cutoff}, "personal_data_erased_at": None},
            session=self._session,
        )
        return [_family_record(document) async for document in found]


class MongoPartnerKeys:
    """The ``partner_keys`` collection: hashes only, never a key."""

    def __init__(self, db: Database, session: Session | None = None) -> None:
        self._db = db
        self._keys = db[PARTNER_KEYS]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._keys.create_index("hash", unique=True)
        await ISSUED_KEYS.ensure_index(self._db, PARTNER_KEYS)
        await ISSUED_KEYS.list_existing(self._db, PARTNER_KEYS, "created_at")

    async def add(self, record: PartnerKeyRecord) -> None:
        document = asdict(record)
        document["_id"] = document.pop("key_id")
        document["routes"] = list(record.routes)
        await self._keys.insert_one(
            await ISSUED_KEYS.listed(self._db, document), session=self._session
        )

    async def by_hash(self, digest: str) -> PartnerKeyRecord | None:
        found = await self._keys.find_one({"hash": digest}, session=self._session)
        return None if found is None else _partner_key_record(found)

    async def page(
        self, limit: int, *, before: int | None = None
    ) -> tuple[list[PartnerKeyRecord], int | None]:
        found, following = await ISSUED_KEYS.page(
            self._db, PARTNER_KEYS, limit, before=before, session=self._session
        )
        return [_partner_key_record(document) for document in found], following

    async def revoke(self, key_id: str, *, by: str, now: datetime) -> PartnerKeyRecord | None:
        await self._keys.update_one(
            {"_id": key_id, "revoked_at": None},
            {"$set": {"revoked_at": now, "revoked_by": by}},
            session=self._session,
        )
        found = await self._keys.find_one({"_id": key_id}, session=self._session)
        return None if found is None else _partner_key_record(found)


class MongoAccessLog:
    """The ``access_log`` collection: written before personal data leaves the service."""

    def __init__(self, db: Database, session: Session | None = None) -> None:
        self._db = db
        self._session = session

    async def ensure_indexes(self) -> None:
        await prepare_access_log(self._db)

    async def record(self, entry: AccessEntry) -> None:
        await record_access(self._db, entry, session=self._session)

    async def find(
        self, family_id: str | None, sub: str | None, limit: int, *, before: int | None = None
    ) -> tuple[list[AccessEntry], int | None]:
        return await access_page(
            self._db,
            family_id=family_id,
            sub=sub,
            limit=limit,
            before=before,
            session=self._session,
        )


class MongoReferralUnitOfWork(MongoUnitOfWork):
    """The front door's records in one transaction (or in the one ``session`` is in)."""

    referrals: MongoReferrals
    rejections: MongoRejections
    families: MongoFamilies
    partner_keys: MongoPartnerKeys
    access_log: MongoAccessLog

    def opened(self) -> None:
        session = self.session
        self.referrals = MongoReferrals(self.db, session)
        self.rejections = MongoRejections(self.db, session)
        self.families = MongoFamilies(self.db, session)
        self.partner_keys = MongoPartnerKeys(self.db, session)
        self.access_log = MongoAccessLog(self.db, session)


@asynccontextmanager
async def connected(
    uri: str, database: str, *, app_name: str, topic_namespace: str = ""
) -> AsyncIterator[Callable[[], MongoReferralUnitOfWork]]:
    """Units of work over their own connection, for a command run outside the service; what
    they stage is published by the service's relay, as the service's own events."""
    client = create_mongo_client(uri, app_name=app_name)
    db = client[database]
    outbox = Outbox(
        db, source="/earlyhelp/referral", topic_namespace=topic_namespace, clock=utc_now
    )
    try:
        yield lambda: MongoReferralUnitOfWork(client, db, outbox)
    finally:
        await client.close()


def _submission_of(rejection: Document) -> Any:
    text = rejection.get("submission_json")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _family_record(family: Document) -> FamilyRecord:
    return FamilyRecord(
        family_id=family["_id"],
        district=family.get("district"),
        open_cases=tuple(family.get("open_cases") or ()),
        last_closed_at=family.get("last_closed_at"),
        last_referral_at=family.get("last_referral_at"),
        personal_data_erased_at=family.get("personal_data_erased_at"),
    )


def _partner_key_record(document: Document) -> PartnerKeyRecord:
    return PartnerKeyRecord(
        key_id=document["_id"],
        hash=document["hash"],
        partner_id=document["partner_id"],
        routes=tuple(document["routes"]),
        name=document.get("name"),
        created_at=document["created_at"],
        created_by=document["created_by"],
        revoked_at=document.get("revoked_at"),
        revoked_by=document.get("revoked_by"),
    )


async def rekey_family_index(
    db: Database, keys_of: Callable[[Any], Sequence[FamilyKey]], *, now: datetime
) -> tuple[int, int]:
    """Rebuild the family-match index from the stored submissions, with ``keys_of``.

    Each referral's submission gives its family's keys again, oldest first, so a key two
    families share stays with the first; then every key of the old index goes. Family ids
    are random, so they do not change. Returns (keys written, referrals read).
    """
    generation = f"{now.isoformat()}-{uuid.uuid4().hex[:8]}"
    referrals = (
        db[REFERRALS]
        .find({"submission": {"$ne": None}}, {"family_id": 1, "submission": 1, "received_at": 1})
        .sort("received_at", 1)
    )
    writes = BulkWrites()
    written = read = 0
    async for referral in referrals:
        read += 1
        for key in keys_of(referral["submission"]):
            writes.update_one(
                FAMILY_KEYS,
                {"_id": key.value},
                {
                    "$setOnInsert": {
                        "family_id": referral["family_id"],
                        "rule": key.rule.value,
                        "registered_at": now,
                    },
                    "$set": {"generation": generation},
                },
                upsert=True,
            )
            written += 1
        if len(writes) >= REKEY_BATCH:
            await writes.send(db, session=None)
            writes = BulkWrites()
    if len(writes):
        await writes.send(db, session=None)
    await db[FAMILY_KEYS].delete_many({"generation": {"$ne": generation}})
    return written, read


async def rekey_families(
    uri: str, database: str, keys_of: Callable[[Any], Sequence[FamilyKey]], *, now: datetime
) -> tuple[int, int]:
    """``rekey_family_index`` over a connection of its own, for the operators' command."""
    client = create_mongo_client(uri, app_name="referral-rekey")
    try:
        return await rekey_family_index(client[database], keys_of, now=now)
    finally:
        await client.close()
