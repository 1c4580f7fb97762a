"""The front door's ports over plain dicts, held to the Mongo adapters by
``tests/contract/test_referral_store.py``.

``InMemoryReferralStore`` is the entry, as ``MongoReferralStore`` is: each submission (or
batch, or note of cases) is its own transaction over the committed state, and
``unit_of_work()`` hands out the data protection repositories over one. A commit keeps what
others committed since it opened unless it changed the same record, which, as in the
database, is a ``ConcurrentUpdate``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

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
from services.referral.ports import Accepted, AccessEntry, Decided, Lookups, Submissions
from shared.events import EventT, ReferralReceived, ReferralRejected, ReferralSubmitted
from shared.unit_of_work import ConcurrentUpdate
from tests.fakes.units import (
    InMemoryOutgoingEvents,
    InMemoryStore,
    InMemoryUnitOfWork,
    StagedEvent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Document = dict[str, Any]


@dataclass
class FamilyState:
    family_id: str
    district: str | None
    created_at: datetime
    last_referral_at: datetime | None = None
    open_cases: list[str] = field(default_factory=list)
    closed_cases: list[str] = field(default_factory=list)
    last_closed_at: datetime | None = None
    personal_data_erased_at: datetime | None = None
    erasure: tuple[str, str] | None = None
    """Who erased the family's personal data, and why."""

    def record(self) -> FamilyRecord:
        return FamilyRecord(
            family_id=self.family_id,
            district=self.district,
            open_cases=tuple(self.open_cases),
            last_closed_at=self.last_closed_at,
            last_referral_at=self.last_referral_at,
            personal_data_erased_at=self.personal_data_erased_at,
        )

    def history(self) -> FamilyHistory:
        return FamilyHistory(self.family_id, tuple(self.open_cases), self.last_closed_at)


@dataclass
class RejectionRecord:
    """A rejection as ``reject`` was given it: the stored submission, its event and
    correlation id."""

    document: Document
    event: ReferralRejected
    correlation_id: str
    personal_data_erased_at: datetime | None = None

    def as_stored(self) -> Document:
        stored = {
            "_id": self.event.rejection_id,
            **copy.deepcopy(self.document),
            **self.event.model_dump(mode="json"),
            "received_at": self.event.received_at,
            "correlation_id": self.correlation_id,
        }
        if self.personal_data_erased_at is not None:
            stored["personal_data_erased_at"] = self.personal_data_erased_at
        return stored


@dataclass
class ReferralState:
    referrals: dict[str, Document] = field(default_factory=dict)
    rejections: dict[str, RejectionRecord] = field(default_factory=dict)
    families: dict[str, FamilyState] = field(default_factory=dict)
    family_keys: dict[str, str] = field(default_factory=dict)
    """Family key hash -> family id."""
    partner_keys: dict[str, PartnerKeyRecord] = field(default_factory=dict)
    access_log: list[AccessEntry] = field(default_factory=list)


RECORDS = ("referrals", "rejections", "families", "family_keys", "partner_keys")
"""The state's collections of records by id: two commits clash on one record."""


class InMemorySubmissions:
    """``Submissions`` over one transaction's state and events."""

    def __init__(self, state: ReferralState, events: InMemoryOutgoingEvents) -> None:
        self._state = state
        self._events = events

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        found = self._state.referrals.get(referral_id_for(partner_id, submission_id))
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
        state = self._state
        earlier = await self.find_accepted(submission.partner_id, submission.submission_id)
        if earlier is not None:
            return earlier
        by_key = {
            key.value: state.family_keys[key.value]
            for key in keys
            if key.value in state.family_keys
        }
        histories = {
            family_id: state.families[family_id].history()
            for family_id in sorted(set(by_key.values()))
            if family_id in state.families
        }
        decided = decide(KnownFamilies(by_key=by_key, histories=histories))
        event = decided.event
        document = _referral_document(submission, decided, correlation_id)
        state.referrals[event.referral_id] = document
        _note_referral(state, event, now)
        for key in keys:
            if key.value not in by_key:
                state.family_keys[key.value] = event.family_id
        await self._events.stage(
            event, correlation_id=correlation_id, event_id=f"{event.referral_id}.received"
        )
        return _accepted(document, duplicate=False)

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        if event.rejection_id in self._state.rejections:
            return False
        self._state.rejections[event.rejection_id] = RejectionRecord(
            copy.deepcopy(document), event, correlation_id
        )
        await self._events.stage(
            event, correlation_id=correlation_id, event_id=f"{event.rejection_id}.rejected"
        )
        return True


class InMemoryReferrals:
    def __init__(self, state: ReferralState) -> None:
        self._state = state

    async def get(self, referral_id: str) -> Document | None:
        found = self._state.referrals.get(referral_id)
        if found is None:
            return None
        return {name: copy.deepcopy(value) for name, value in found.items() if name != "submission"}

    async def submissions_of(self, family_id: str) -> list[tuple[str, str]]:
        return [
            (referral["partner_id"], referral["submission_id"])
            for referral in self._state.referrals.values()
            if referral["family_id"] == family_id
        ]

    async def erase_personal_data(self, family_id: str, *, now: datetime) -> None:
        for referral in self._state.referrals.values():
            if referral["family_id"] == family_id:
                for name in REFERRAL_PERSONAL_FIELDS:
                    referral.pop(name, None)
                referral["personal_data_erased_at"] = now


class InMemoryRejections:
    def __init__(self, state: ReferralState) -> None:
        self._state = state

    async def get(self, rejection_id: str) -> Document | None:
        found = self._state.rejections.get(rejection_id)
        return None if found is None else found.as_stored()

    async def unerased(self) -> list[StoredRejection]:
        return [
            StoredRejection(
                rejection_id=rejection_id,
                partner_id=record.event.partner_id,
                submission_id=record.event.submission_id,
                submission=_submission_of(record.document),
            )
            for rejection_id, record in self._state.rejections.items()
            if record.personal_data_erased_at is None
        ]

    async def erase_personal_data(self, rejection_ids: Collection[str], *, now: datetime) -> None:
        for rejection_id in rejection_ids:
            record = self._state.rejections.get(rejection_id)
            if record is None:
                continue
            for name in REJECTION_PERSONAL_FIELDS:
                record.document.pop(name, None)
            record.personal_data_erased_at = now


class InMemoryFamilies:
    def __init__(self, state: ReferralState) -> None:
        self._state = state

    async def get(self, family_id: str) -> FamilyRecord | None:
        found = self._state.families.get(family_id)
        return None if found is None else found.record()

    async def key_values(self, family_id: str) -> set[str]:
        return {key for key, family in self._state.family_keys.items() if family == family_id}

    async def erase(self, family_id: str, *, by: str, reason: str, now: datetime) -> int:
        keys = await self.key_values(family_id)
        for key in keys:
            del self._state.family_keys[key]
        family = self._state.families.get(family_id)
        if family is not None:
            family.personal_data_erased_at = now
            family.erasure = (by, reason)
        return len(keys)

    async def closed_by(self, cutoff: datetime) -> list[FamilyRecord]:
        return [
            family.record()
            for family in self._state.families.values()
            if family.last_closed_at is not None
            and family.last_closed_at <= cutoff
            and family.personal_data_erased_at is None
        ]


class InMemoryPartnerKeys:
    def __init__(self, state: ReferralState) -> None:
        self._state = state

    async def add(self, record: PartnerKeyRecord) -> None:
        keys = self._state.partner_keys
        if record.key_id in keys or any(key.hash == record.hash for key in keys.values()):
            raise ValueError(f"partner key {record.key_id} or its hash is taken")
        keys[record.key_id] = record

    async def by_hash(self, digest: str) -> PartnerKeyRecord | None:
        return next((key for key in self._state.partner_keys.values() if key.hash == digest), None)

    async def page(
        self, limit: int, *, before: int | None = None
    ) -> tuple[list[PartnerKeyRecord], int | None]:
        """Positions are places in the order issued."""
        issued = sorted(self._state.partner_keys.values(), key=lambda key: key.created_at)
        last = len(issued) - 1 if before is None else before
        found = list(enumerate(issued[: last + 1]))[::-1]
        page = found[:limit]
        following = page[-1][0] - 1 if len(found) > limit else None
        return [record for _, record in page], following

    async def revoke(self, key_id: str, *, by: str, now: datetime) -> PartnerKeyRecord | None:
        found = self._state.partner_keys.get(key_id)
        if found is not None and found.revoked_at is None:
            found = self._state.partner_keys[key_id] = replace(found, revoked_at=now, revoked_by=by)
        return found


class InMemoryAccessLog:
    def __init__(self, state: ReferralState) -> None:
        self._state = state

    async def record(self, entry: AccessEntry) -> None:
        self._state.access_log.append(entry)

    async def find(
        self, family_id: str | None, sub: str | None, limit: int, *, before: int | None = None
    ) -> tuple[list[AccessEntry], int | None]:
        """Positions are places in the list as written."""
        last = len(self._state.access_log) - 1 if before is None else before
        found = [
            (position, entry)
            for position, entry in enumerate(self._state.access_log[: last + 1])
            if (not family_id or entry.family_id == family_id) and (not sub or entry.sub == sub)
        ][::-1]
        page = found[:limit]
        following = page[-1][0] - 1 if len(found) > limit else None
        return [entry for _, entry in page], following


class InMemoryReferralUnitOfWork(InMemoryUnitOfWork[ReferralState]):
    referrals: InMemoryReferrals
    rejections: InMemoryRejections
    families: InMemoryFamilies
    partner_keys: InMemoryPartnerKeys
    access_log: InMemoryAccessLog

    def opened(self) -> None:
        self.referrals = InMemoryReferrals(self.state)
        self.rejections = InMemoryRejections(self.state)
        self.families = InMemoryFamilies(self.state)
        self.partner_keys = InMemoryPartnerKeys(self.state)
        self.access_log = InMemoryAccessLog(self.state)


class InMemoryReferralStore(InMemoryStore[ReferralState]):
    def __init__(self) -> None:
        super().__init__(ReferralState())

    @property
    def partner_keys(self) -> InMemoryPartnerKeys:
        return InMemoryPartnerKeys(self.state)

    def unit_of_work(self) -> InMemoryReferralUnitOfWork:
        return InMemoryReferralUnitOfWork(self)

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        return await InMemorySubmissions(self.state, InMemoryOutgoingEvents()).find_accepted(
            partner_id, submission_id
        )

    async def accept(
        self,
        submission: ReferralSubmitted,
        keys: list[FamilyKey],
        decide: Callable[[KnownFamilies], Decided],
        *,
        correlation_id: str,
        now: datetime,
    ) -> Accepted:
        async def accept(submissions: Submissions) -> Accepted:
            return await submissions.accept(
                submission, keys, decide, correlation_id=correlation_id, now=now
            )

        return await self.in_batch([], accept)

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        async def reject(submissions: Submissions) -> bool:
            return await submissions.reject(document, event, correlation_id=correlation_id)

        return await self.in_batch([], reject)

    async def in_batch(
        self, lookups: Sequence[Lookups], work: Callable[[Submissions], Awaitable[T]]
    ) -> T:
        async with self.unit_of_work() as uow:
            result = await work(InMemorySubmissions(uow.state, uow.events))
            await uow.commit()
        return result

    async def note_cases_open(self, cases: Sequence[tuple[str, str]]) -> None:
        async with self.unit_of_work() as uow:
            for family_id, case_id in cases:
                family = uow.state.families.get(family_id)
                if family is None or case_id in family.closed_cases:
                    continue
                if case_id not in family.open_cases:
                    family.open_cases.append(case_id)
            await uow.commit()

    async def note_cases_closed(self, closures: Sequence[tuple[str, str, datetime]]) -> None:
        async with self.unit_of_work() as uow:
            for family_id, case_id, closed_at in closures:
                family = uow.state.families.get(family_id)
                if family is None:
                    log.warning("case %s closed for family %s, unknown here", case_id, family_id)
                    continue
                family.open_cases = [case for case in family.open_cases if case != case_id]
                if case_id not in family.closed_cases:
                    family.closed_cases.append(case_id)
                if family.last_closed_at is None or closed_at > family.last_closed_at:
                    family.last_closed_at = closed_at
            await uow.commit()

    def check(self, read: ReferralState, mine: ReferralState) -> None:
        for name in RECORDS:
            before, since, after = (getattr(state, name) for state in (read, self.state, mine))
            for record_id in before.keys() | after.keys():
                changed = after.get(record_id) != before.get(record_id)
                if changed and since.get(record_id) != before.get(record_id):
                    raise ConcurrentUpdate(f"{name} {record_id} changed since it was read")

    def committed(
        self, mine: ReferralState, events: Sequence[StagedEvent], *, read: ReferralState
    ) -> None:
        """Lay this commit's changes over what others committed since it opened."""
        self.check(read, mine)
        merged = copy.deepcopy(self.state)
        for name in RECORDS:
            before, after, into = (getattr(state, name) for state in (read, mine, merged))
            for record_id in before.keys() | after.keys():
                if record_id not in after:
                    into.pop(record_id, None)
                elif after[record_id] != before.get(record_id):
                    into[record_id] = copy.deepcopy(after[record_id])
        merged.access_log.extend(mine.access_log[len(read.access_log) :])
        self.state = merged
        self.version += 1
        for event in events:
            self.published.keep(event)

    @property
    def received(self) -> list[ReferralReceived]:
        """Every ``referral-received`` committed, in order."""
        return self._committed(ReferralReceived)

    @property
    def rejected(self) -> list[ReferralRejected]:
        """Every ``referral-rejected`` committed, in order."""
        return self._committed(ReferralRejected)

    def _committed(self, kind: type[EventT]) -> list[EventT]:
        return [event.data for event in self.published.staged if isinstance(event.data, kind)]

    @property
    def rejections(self) -> dict[str, RejectionRecord]:
        """The committed rejections by id."""
        return self.state.rejections


def _note_referral(state: ReferralState, event: ReferralReceived, now: datetime) -> None:
    """The family as a new referral leaves it: created if new, in the referral's district,
    and live again if its personal data had been erased."""
    family = state.families.setdefault(
        event.family_id, FamilyState(event.family_id, event.district, created_at=now)
    )
    family.district = event.district
    if family.last_referral_at is None or now > family.last_referral_at:
        family.last_referral_at = now
    family.personal_data_erased_at = None


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


def _submission_of(document: Document) -> Any:
    text = document.get("submission_json")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
