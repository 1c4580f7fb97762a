"""The retention review: which closed families a person should now decide about."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from services.referral.domain.retention import due_for_review, review_due_since, years_before
from services.referral.ports import ReferralUnitOfWork


@dataclass(frozen=True)
class DueForReview:
    family_id: str
    district: str | None
    last_closed_at: datetime
    last_referral_at: datetime | None
    review_due_since: datetime


async def review(uow: ReferralUnitOfWork, *, now: datetime, years: int) -> list[DueForReview]:
    """Families due for review, the longest closed first."""
    async with uow:
        candidates = await uow.families.closed_by(years_before(now, years))
    due = sorted(
        (family for family in candidates if due_for_review(asdict(family), now, years)),
        key=lambda family: family.last_closed_at or now,
    )
    return [
        DueForReview(
            family_id=family.family_id,
            district=family.district,
            last_closed_at=family.last_closed_at,
            last_referral_at=family.last_referral_at,
            review_due_since=review_due_since(
                family.last_closed_at, family.last_referral_at, years
            ),
        )
        for family in due
        if family.last_closed_at is not None
    ]
