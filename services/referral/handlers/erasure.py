"""Erasing a family's personal data (the rules are in ``services.referral.domain.erasure``)."""

from __future__ import annotations

from datetime import datetime

from services.referral.domain import MatchKeys
from services.referral.domain.erasure import (
    Erased,
    FamilyHasOpenCase,
    FamilyNotFound,
    concerns_family,
)
from services.referral.ports import AccessEntry, ReferralUnitOfWork
from shared.events import FamilyErased
from shared.unit_of_work import retrying


async def erase_family(
    uow: ReferralUnitOfWork,
    family_id: str,
    *,
    by: str,
    role: str,
    reason: str,
    now: datetime,
    match_keys: MatchKeys,
) -> Erased:
    """Remove the family's personal data, record who did it and why, and tell every service
    (``family-erased``), in one transaction; refuse while a case is open
    (``FamilyHasOpenCase``)."""

    async def erase() -> Erased:
        async with uow:
            family = await uow.families.get(family_id)
            if family is None:
                raise FamilyNotFound(family_id)
            if family.open_cases:
                raise FamilyHasOpenCase(family_id)
            submissions = await uow.referrals.submissions_of(family_id)
            keys = await uow.families.key_values(family_id)
            rejection_ids = [
                rejection.rejection_id
                for rejection in await uow.rejections.unerased()
                if concerns_family(rejection, set(submissions), keys, match_keys)
            ]
            await uow.referrals.erase_personal_data(family_id, now=now)
            await uow.rejections.erase_personal_data(rejection_ids, now=now)
            removed = await uow.families.erase(family_id, by=by, reason=reason, now=now)
            await uow.access_log.record(
                AccessEntry(
                    at=now,
                    sub=by,
                    role=role,
                    action="erase_family",
                    family_id=family_id,
                    resource=family_id,
                    reason=reason,
                )
            )
            # Every service erases what it keeps of the family when it reads this.
            await uow.events.stage(
                FamilyErased(family_id=family_id, erased_at=now),
                correlation_id=f"erasure-{family_id}",
                event_id=f"{family_id}.erased",
            )
            await uow.commit()
            return Erased(family_id, len(submissions), len(rejection_ids), removed, now)

    return await retrying(erase)
