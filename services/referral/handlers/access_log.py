"""The record of every look at a family's data: written before the data leaves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.referral.domain import NotFound
from services.referral.ports import ReferralUnitOfWork
from shared.access_log import AccessEntry, Reader


async def read_referral(
    uow: ReferralUnitOfWork, referral_id: str, *, reader: Reader, now: datetime
) -> dict[str, Any]:
    """The referral as received (without the submission), once the look is recorded."""
    async with uow:
        found = await uow.referrals.get(referral_id)
        if found is None:
            raise NotFound(f"no referral {referral_id}")
        await uow.access_log.record(
            AccessEntry.of(reader, "read_referral", found["family_id"], referral_id, now)
        )
        await uow.commit()
    return found


async def read_rejection(
    uow: ReferralUnitOfWork, rejection_id: str, *, reader: Reader, now: datetime
) -> dict[str, Any]:
    """A stored rejection, once the look is recorded (it names no family: it may have none)."""
    async with uow:
        found = await uow.rejections.get(rejection_id)
        if found is None:
            raise NotFound(f"no rejection {rejection_id}")
        await uow.access_log.record(
            AccessEntry.of(reader, "read_rejection", None, rejection_id, now)
        )
        await uow.commit()
    return found


async def access_log(
    uow: ReferralUnitOfWork,
    *,
    family_id: str | None,
    sub: str | None,
    limit: int,
    before: int | None = None,
) -> tuple[list[AccessEntry], int | None]:
    async with uow:
        return await uow.access_log.find(family_id, sub, limit, before=before)
