"""Use cases of the front door: take a submission, however it arrived, and answer it."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.referral import domain
from services.referral.directory import DirectoryService, find_services, load_sample_directory
from services.referral.ports import ReferralStore
from shared.events import (
    ReferralReceived,
    ReferralRejected,
    RejectionReason,
    ScreeningDecision,
)

MAX_SIGNPOSTS = 5
"""Services offered to a signposted family: enough to choose from, few enough to read."""

UNREADABLE_TEXT_LIMIT = 20_000
STORED_SUBMISSION_LIMIT = 4_000_000
"""Characters of a rejected submission kept as JSON text, well inside a document's 16 MB."""


@dataclass(frozen=True)
class Origin:
    """Where a submission came from: its event identity and correlation id."""

    source: str
    event_id: str
    correlation_id: str


@dataclass(frozen=True)
class FrontDoor:
    """The council's configuration the rules work with: its districts and local offer."""

    districts: Mapping[str, str]
    directory: Sequence[DirectoryService]

    @staticmethod
    @functools.cache
    def sample() -> FrontDoor:
        return FrontDoor(domain.POSTCODE_DISTRICTS, tuple(load_sample_directory()))


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
class Rejected:
    rejection_id: str
    reasons: list[RejectionReason]


Outcome = Accepted | Rejected


@dataclass(frozen=True)
class Decided:
    """What matching decided for a referral, for the store to record with it."""

    event: ReferralReceived
    match: domain.FamilyMatch
    keys: list[domain.FamilyKey] = field(default_factory=list)


def referral_id_for(partner_id: str, submission_id: str) -> str:
    """Deterministic, so a duplicate submission converges on the same referral."""
    digest = hashlib.sha256(f"{partner_id}\0{submission_id}".encode()).hexdigest()
    return f"ref-{digest[:20]}"


def rejection_id_for(origin: Origin) -> str:
    digest = hashlib.sha256(f"{origin.source}\0{origin.event_id}".encode()).hexdigest()
    return f"rej-{digest[:20]}"


async def receive_submission(
    document: Any,
    *,
    origin: Origin,
    store: ReferralStore,
    now: datetime,
    front_door: FrontDoor | None = None,
) -> Outcome:
    """Validate, screen, match and record a Request for Early Help Support.

    The same partner and submission id always gives the same referral and one
    ``referral-received``; anything that cannot be accepted is stored and answered with
    ``referral-rejected``, never dropped.
    """
    front_door = front_door or FrontDoor.sample()
    parsed = domain.parse_submission(document)
    if isinstance(parsed, list):
        return await _reject(document, parsed, origin=origin, store=store, now=now)
    existing = await store.find_accepted(parsed.partner_id, parsed.submission_id)
    if existing is not None:
        return existing
    screened = domain.screen_submission(parsed, front_door.districts, today=now.date())
    if not isinstance(screened, domain.Screened):
        return await _reject(document, list(screened), origin=origin, store=store, now=now)
    signposts = _signposts(screened, front_door.directory)
    keys = domain.family_keys(parsed)

    def decide(known: domain.KnownFamilies) -> Decided:
        match = domain.match_family(parsed, known)
        history = known.histories.get(match.family_id)
        return Decided(
            event=_referral_received(screened, match, history, signposts, now),
            match=match,
            keys=keys,
        )

    return await store.accept(parsed, keys, decide, correlation_id=origin.correlation_id, now=now)


def _referral_received(
    screened: domain.Screened,
    match: domain.FamilyMatch,
    history: domain.FamilyHistory | None,
    signposts: tuple[str, ...],
    now: datetime,
) -> ReferralReceived:
    submission = screened.submission
    return ReferralReceived(
        referral_id=referral_id_for(submission.partner_id, submission.submission_id),
        family_id=match.family_id,
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
        is_re_referral=domain.is_re_referral(history, now),
        received_at=now,
        child_ages=list(screened.child_ages),
        family_match=match.rule,
        family_has_open_case=bool(history and history.open_cases),
        safeguarding_concern=submission.safeguarding_concern,
        without_consent=not submission.consent.given,
        screening_reason=screened.screening.reason,
        screening_rules_version=screened.screening.rules_version,
        signposted_services=list(signposts),
    )


def _signposts(screened: domain.Screened, directory: Sequence[DirectoryService]) -> tuple[str, ...]:
    if screened.decision is not ScreeningDecision.SIGNPOST:
        return ()
    matches = find_services(
        directory,
        needs=screened.submission.needs,
        ages=screened.child_ages,
        district=screened.district,
    )
    return tuple(service.id for service in matches[:MAX_SIGNPOSTS])


async def note_case_open(family_id: str, case_id: str, *, store: ReferralStore) -> None:
    """A case was allocated or queued: the family has an open case until it closes."""
    await store.note_case_open(family_id, case_id)


async def note_case_closed(
    family_id: str, case_id: str, closed_at: datetime, *, store: ReferralStore
) -> None:
    """A case closed: a request within 12 months of the last closure is a re-referral."""
    await store.note_case_closed(family_id, case_id, closed_at)


async def receive_unreadable(
    raw: bytes, problem: str, *, origin: Origin, store: ReferralStore, now: datetime
) -> Rejected:
    """Bytes that are not even a submission still get stored, whole, and answered."""
    reason = RejectionReason(field="", code="unreadable", message=problem)
    return await _reject(
        None,
        [reason],
        origin=origin,
        store=store,
        now=now,
        stored={
            "raw_base64": base64.b64encode(raw).decode(),
            "raw_text": raw.decode(errors="replace")[:UNREADABLE_TEXT_LIMIT],
        },
    )


async def _reject(
    document: Any,
    reasons: list[RejectionReason],
    *,
    origin: Origin,
    store: ReferralStore,
    now: datetime,
    stored: dict[str, Any] | None = None,
) -> Rejected:
    def read(name: str) -> str | None:
        value = document.get(name) if isinstance(document, dict) else None
        return value[:200] if isinstance(value, str) and value else None

    event = ReferralRejected(
        rejection_id=rejection_id_for(origin),
        partner_id=read("partner_id"),
        submission_id=read("submission_id"),
        route=read("route"),
        reasons=reasons,
        received_at=now,
    )
    await store.reject(
        stored if stored is not None else _storable(document),
        event,
        correlation_id=origin.correlation_id,
    )
    return Rejected(rejection_id=event.rejection_id, reasons=reasons)


def _storable(document: Any) -> dict[str, Any]:
    """The submission as it came, as JSON text: safe to store whatever its shape or depth."""
    text = json.dumps(document, default=str, ensure_ascii=False)
    return {
        "submission_json": text[:STORED_SUBMISSION_LIMIT],
        "submission_truncated": len(text) > STORED_SUBMISSION_LIMIT,
    }
