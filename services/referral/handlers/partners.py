"""Partner keys: issue, list and revoke them, and check the one a submission comes with."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.referral.domain import Forbidden, Invalid, NotFound, Unauthenticated
from services.referral.domain.partners import (
    PartnerKey,
    PartnerKeyRecord,
    key_hash,
    new_key,
    submission_refusal,
    unknown_routes,
)
from services.referral.ports import PartnerKeys, ReferralUnitOfWork


async def issue_key(
    uow: ReferralUnitOfWork,
    *,
    partner_id: str,
    routes: list[str],
    name: str | None,
    by: str,
    now: datetime,
) -> tuple[PartnerKeyRecord, str]:
    """A new key for ``routes`` and the key itself, which is not kept: only its hash is."""
    unknown = unknown_routes(routes)
    if unknown:
        raise Invalid(f"unknown routes {unknown}; see GET /routes")
    key = new_key()
    record = PartnerKeyRecord(
        key_id=f"pk-{uuid.uuid4().hex[:16]}",
        hash=key_hash(key),
        partner_id=partner_id,
        routes=tuple(sorted(set(routes))),
        name=name,
        created_at=now,
        created_by=by,
    )
    async with uow:
        await uow.partner_keys.add(record)
        await uow.commit()
    return record, key


async def list_keys(
    uow: ReferralUnitOfWork, limit: int, *, before: int | None = None
) -> tuple[list[PartnerKeyRecord], int | None]:
    async with uow:
        return await uow.partner_keys.page(limit, before=before)


async def revoke_key(
    uow: ReferralUnitOfWork, key_id: str, *, by: str, now: datetime
) -> PartnerKeyRecord:
    """Refused from now on; revoking again keeps the first revocation."""
    async with uow:
        found = await uow.partner_keys.revoke(key_id, by=by, now=now)
        if found is None:
            raise NotFound(f"no partner key {key_id}")
        await uow.commit()
    return found


async def authenticate(keys: PartnerKeys, given: str | None) -> PartnerKey:
    """The key a request came with, or ``Unauthenticated`` saying why not. One read, on
    every submission, so it needs no transaction."""
    if not given:
        raise Unauthenticated("send your partner key as X-Partner-Key")
    found = await keys.by_hash(key_hash(given))
    if found is None:
        raise Unauthenticated("unknown partner key")
    key = found.key
    if key.revoked:
        raise Unauthenticated(
            "this partner key has been revoked", partner_id=key.partner_id, key_id=key.key_id
        )
    return key


def authorise(key: PartnerKey, document: Any) -> None:
    """``Forbidden`` when this key may not send this submission."""
    reason = submission_refusal(key, document)
    if reason is not None:
        raise Forbidden(reason, partner_id=key.partner_id, key_id=key.key_id)
