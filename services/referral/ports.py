"""What the front door's use cases need from storage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from services.referral.domain import FamilyKey, KnownFamilies
from shared.events import ReferralRejected, ReferralSubmitted

if TYPE_CHECKING:
    from services.referral.handlers import Accepted, Decided


class ReferralStore(Protocol):
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
    ) -> None:
        """Store the rejected submission and stage ``referral-rejected``, together."""

    async def note_case_open(self, family_id: str, case_id: str) -> None:
        """Record an allocated or queued case, unless it is already known to be closed."""

    async def note_case_closed(self, family_id: str, case_id: str, closed_at: datetime) -> None:
        """Record a closed case and keep the family's latest closure time."""
