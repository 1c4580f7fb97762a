"""What the front door's use cases need from storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from shared.events import ReferralReceived, ReferralRejected, ReferralSubmitted

if TYPE_CHECKING:
    from services.referral.handlers import Accepted


class ReferralStore(Protocol):
    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        """The earlier answer to this partner's submission, if it was accepted."""

    async def accept(
        self, submission: ReferralSubmitted, event: ReferralReceived, *, correlation_id: str
    ) -> Accepted:
        """Store the referral and stage ``referral-received``, together; idempotent."""

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> None:
        """Store the rejected submission and stage ``referral-rejected``, together."""
