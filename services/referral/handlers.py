"""Use cases of the front door: take a submission, however it arrived, and answer it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral import domain
from services.referral.ports import ReferralStore
from shared.events import ReferralReceived, ReferralRejected, RejectionReason


@dataclass(frozen=True)
class Origin:
    """Where a submission came from: its event identity and correlation id."""

    source: str
    event_id: str
    correlation_id: str


@dataclass(frozen=True)
class Accepted:
    referral_id: str
    family_id: str
    district: str
    decision: str
    duplicate: bool = False


@dataclass(frozen=True)
class Rejected:
    rejection_id: str
    reasons: list[RejectionReason]


Outcome = Accepted | Rejected


def referral_id_for(partner_id: str, submission_id: str) -> str:
    """Deterministic, so a duplicate submission converges on the same referral."""
    digest = hashlib.sha256(f"{partner_id}\0{submission_id}".encode()).hexdigest()
    return f"ref-{digest[:20]}"


def rejection_id_for(origin: Origin) -> str:
    digest = hashlib.sha256(f"{origin.source}\0{origin.event_id}".encode()).hexdigest()
    return f"rej-{digest[:20]}"


async def receive_submission(
    document: Any, *, origin: Origin, store: ReferralStore, now: datetime
) -> Outcome:
    """Validate, screen and record a Request for Early Help Support.

    The same partner and submission id always gives the same referral and one
    ``referral-received``; anything that cannot be accepted is stored and answered with
    ``referral-rejected``, never dropped.
    """
    parsed = domain.parse_submission(document)
    if isinstance(parsed, list):
        return await _reject(document, parsed, origin=origin, store=store, now=now)
    existing = await store.find_accepted(parsed.partner_id, parsed.submission_id)
    if existing is not None:
        return existing
    screened = domain.screen_submission(parsed)
    if not isinstance(screened, domain.Screened):
        return await _reject(document, list(screened), origin=origin, store=store, now=now)
    submission = screened.submission
    event = ReferralReceived(
        referral_id=referral_id_for(submission.partner_id, submission.submission_id),
        family_id=f"fam-{screened.family_key}",
        partner_id=submission.partner_id,
        submission_id=submission.submission_id,
        route=submission.route,
        referral_source=screened.referral_source,
        district=screened.district,
        level_of_need=submission.level_of_need,
        decision=screened.decision,
        needs=submission.needs,
        child_count=len(submission.children),
        is_step_down=screened.is_step_down,
        open_to_social_care=submission.open_to_social_care,
        social_care_case_reference=submission.social_care_case_reference,
        received_at=now,
    )
    return await store.accept(submission, event, correlation_id=origin.correlation_id)


async def receive_unreadable(
    raw: bytes, problem: str, *, origin: Origin, store: ReferralStore, now: datetime
) -> Rejected:
    """Bytes that are not even a submission still get stored and answered."""
    reason = RejectionReason(field="", code="unreadable", message=problem)
    return await _reject(
        {"raw": raw.decode(errors="replace")[:20_000]},
        [reason],
        origin=origin,
        store=store,
        now=now,
    )


async def _reject(
    document: Any,
    reasons: list[RejectionReason],
    *,
    origin: Origin,
    store: ReferralStore,
    now: datetime,
) -> Rejected:
    def read(name: str) -> str | None:
        value = document.get(name) if isinstance(document, dict) else None
        return value if isinstance(value, str) and value else None

    event = ReferralRejected(
        rejection_id=rejection_id_for(origin),
        partner_id=read("partner_id"),
        submission_id=read("submission_id"),
        route=read("route"),
        reasons=reasons,
        received_at=now,
    )
    await store.reject(_storable(document), event, correlation_id=origin.correlation_id)
    return Rejected(rejection_id=event.rejection_id, reasons=reasons)


def _storable(document: Any) -> dict[str, Any]:
    """The submission as it came, safe to store whatever its shape."""
    if isinstance(document, dict):
        return {"submission": json.loads(json.dumps(document, default=str))}
    return {"submission": json.dumps(document, default=str)[:20_000]}
