"""What the front door's use cases need from storage, and the values that cross that line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from services.referral.domain import FamilyKey, FamilyMatch, FamilyRecord, KnownFamilies
from services.referral.domain.erasure import StoredRejection
from services.referral.domain.partners import PartnerKeyRecord
from shared.access_log import AccessEntry
from shared.events import ReferralReceived, ReferralRejected, ReferralSubmitted
from shared.unit_of_work import OutgoingEvents, UnitOfWork

T = TypeVar("T")

__all__ = ["AccessEntry"]  # the access log's entry, as the ports use it


@dataclass(frozen=True)
class Accepted:
    referral_id: str
    family_id: str
    district: str
    decision: str
    duplicate: bool = False
    family_match: str | None = None
    is_re_referral: bool = False
    family_has_open_case: bool = False
    screening_reason: str | None = None
    signposted_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decided:
    """What matching decided for a referral, for the store to record with it."""

    event: ReferralReceived
    match: FamilyMatch
    keys: list[FamilyKey] = field(default_factory=list)


@dataclass(frozen=True)
class Lookups:
    """What answering a submission will look up: its referral and its family keys."""

    referral_id: str
    family_keys: list[FamilyKey]


class Submissions(Protocol):
    """Taking submissions in: the store's own transaction for each, or a batch's for many."""

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        """The earlier answer to this partner's submission, if it was accepted."""

    async def accept(
        self,
        submission: ReferralSubmitted,
        keys: list[FamilyKey],
        decide: Callable[[KnownFamilies], Decided],
        *,
        correlation_id: str,
        now: datetime,
    ) -> Accepted:
        """Match and store the referral and stage ``referral-received``, all together.

        ``decide`` sees the families the keys point to as the transaction reads them, so
        two requests for one new family at once cannot create two families. Idempotent:
        a submission accepted before gives its first answer.
        """

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        """Store the rejected submission and stage ``referral-rejected``, together; a
        rejection id stored before keeps its first record and event, and gives False."""


class ReferralStore(Submissions, Protocol):
    """The front door's records: submissions one at a time or in batches, what it learns of
    cases, and units of work for the data protection use cases."""

    @property
    def partner_keys(self) -> PartnerKeys:
        """The keys outside any transaction: one read on every submission."""

    async def in_batch(
        self, lookups: Sequence[Lookups], work: Callable[[Submissions], Awaitable[T]]
    ) -> T:
        """Run ``work`` over submissions in one transaction: ``lookups`` read up front,
        every write sent together when ``work`` is done, so a later submission sees what
        an earlier one in the batch decided."""

    async def note_cases_open(self, cases: Sequence[tuple[str, str]]) -> None:
        """Record allocated or queued cases, as (family id, case id), together; a case
        already known to be closed stays closed (case-closed may be read first)."""

    async def note_cases_closed(self, closures: Sequence[tuple[str, str, datetime]]) -> None:
        """Record closed cases, as (family id, case id, closed at), together, keeping each
        family's latest closure time; a family unknown here is logged and left unknown."""

    def unit_of_work(self) -> ReferralUnitOfWork:
        """A new unit of work over the records, for one use case."""


class PartnerKeys(Protocol):
    async def add(self, record: PartnerKeyRecord) -> None: ...

    async def by_hash(self, digest: str) -> PartnerKeyRecord | None: ...

    async def page(
        self, limit: int, *, before: int | None = None
    ) -> tuple[list[PartnerKeyRecord], int | None]:
        """A page of keys, newest issued first from cursor ``before``; and the cursor of the
        next page, None after the last."""

    async def revoke(self, key_id: str, *, by: str, now: datetime) -> PartnerKeyRecord | None:
        """Revoke the key unless it already is; the key as it is then, None if unknown."""


class AccessLog(Protocol):
    async def record(self, entry: AccessEntry) -> None: ...

    async def find(
        self, family_id: str | None, sub: str | None, limit: int, *, before: int | None = None
    ) -> tuple[list[AccessEntry], int | None]:
        """A page of entries, newest first from cursor ``before``, of one family or member
        of staff when given; and the cursor of the next page, None after the last."""


class Referrals(Protocol):
    async def get(self, referral_id: str) -> dict[str, Any] | None:
        """The referral as stored, without the submission."""

    async def submissions_of(self, family_id: str) -> list[tuple[str, str]]:
        """(partner id, submission id) of each of the family's referrals."""

    async def erase_personal_data(self, family_id: str, *, now: datetime) -> None:
        """Remove the personal fields of the family's referrals, keeping the rest."""


class Rejections(Protocol):
    async def get(self, rejection_id: str) -> dict[str, Any] | None: ...

    async def unerased(self) -> list[StoredRejection]:
        """Every rejection whose personal data is still held."""

    async def erase_personal_data(self, rejection_ids: Collection[str], *, now: datetime) -> None:
        """Remove the stored submission of these rejections, keeping the reasons."""


class Families(Protocol):
    async def get(self, family_id: str) -> FamilyRecord | None: ...

    async def key_values(self, family_id: str) -> set[str]:
        """The hashes that recognise the family's children."""

    async def erase(self, family_id: str, *, by: str, reason: str, now: datetime) -> int:
        """Forget the family's keys and mark it erased, by whom and why; the keys removed."""

    async def closed_by(self, cutoff: datetime) -> list[FamilyRecord]:
        """Families not erased whose last case closed at or before ``cutoff``."""


class ReferralUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the front door's records: what a use case changes in it is
    kept together by ``commit``, or not at all. The repositories are bound to it while open."""

    @property
    def referrals(self) -> Referrals: ...

    @property
    def rejections(self) -> Rejections: ...

    @property
    def families(self) -> Families: ...

    @property
    def partner_keys(self) -> PartnerKeys: ...

    @property
    def access_log(self) -> AccessLog: ...

    @property
    def events(self) -> OutgoingEvents: ...
