"""Use cases of the front door: take a submission, however it arrived, and answer it.

The data protection use cases are beside this: ``partners``, ``access_log``, ``erasure``
and ``retention``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral import domain, sample
from services.referral.directory import DirectoryService, find_services
from services.referral.ports import Accepted, Decided, Lookups, ReferralStore, Submissions
from shared.consumer import Delivered, Record, Refused
from shared.events import (
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    ScreeningDecision,
)
from shared.strict_json import Unreadable, read_json

MAX_SIGNPOSTS = 5
"""Services offered to a signposted family: enough to choose from, few enough to read."""

UNREADABLE_TEXT_LIMIT = 20_000
STORED_SUBMISSION_LIMIT = 4_000_000
"""Characters of a rejected submission kept as JSON text, well inside a document's 16 MB."""

MAX_SUBMISSION_BYTES = 256 * 1024
"""A submission is a few kilobytes; a quarter of a megabyte leaves room for long notes."""

MAX_REASONS = 50
REASON_TEXT_LIMIT = 1000
"""A rejection names at most 50 problems of at most 1000 characters (room for the list of
valid routes): a document with thousands of unknown fields must still give a
``referral-rejected`` small enough for the broker to carry."""


@dataclass(frozen=True)
class Origin:
    """Where a submission came from: its event identity and correlation id."""

    source: str
    event_id: str
    correlation_id: str


@dataclass(frozen=True)
class FrontDoor:
    """The council's configuration the rules work with: its districts, its local offer,
    and the keys its families are matched by."""

    districts: Mapping[str, str]
    directory: Sequence[DirectoryService]
    match_keys: domain.MatchKeys

    @staticmethod
    @functools.cache
    def sample(match_keys: domain.MatchKeys) -> FrontDoor:
        """The sample county's, for demonstrations and tests (``EARLYHELP_SAMPLE_DATA``)."""
        return FrontDoor(
            sample.POSTCODE_DISTRICTS, tuple(sample.load_sample_directory()), match_keys
        )


def new_family_id() -> str:
    """A family id that is random: nothing about the family can be read from it."""
    return f"fam-{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Rejected:
    rejection_id: str
    reasons: list[RejectionReason]
    duplicate: bool = False
    """The same request was rejected before: the same answer, and no second event."""


Outcome = Accepted | Rejected


def rejection_id_for(document: Any) -> str:
    """One rejection per request: its partner, its submission id and a hash of all it said.

    The same bad request resent is answered with the rejection it had, and no second event;
    one that is wrong in a new way is a new request, answered anew.
    """

    def named(name: str) -> str:
        value = document.get(name) if isinstance(document, dict) else None
        return value if isinstance(value, str) else ""

    content = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    digest = hashlib.sha256(
        "\0".join((named("partner_id"), named("submission_id"), content)).encode()
    ).hexdigest()
    return f"rej-{digest[:20]}"


def rejection_id_of_bytes(raw: bytes) -> str:
    """One rejection per unreadable body or record: its bytes' SHA-256."""
    digest = hashlib.sha256(b"unreadable\0" + raw).hexdigest()
    return f"rej-{digest[:20]}"


async def receive_submission(
    document: Any,
    *,
    origin: Origin,
    store: Submissions,
    now: datetime,
    front_door: FrontDoor,
) -> Outcome:
    """Validate, screen, match and record a Request for Early Help Support.

    The same partner and submission id always gives the same referral and one
    ``referral-received``; anything that cannot be accepted is stored and answered with
    ``referral-rejected``, never dropped.
    """
    parsed = domain.parse_submission(document)
    if isinstance(parsed, list):
        return await _reject(document, parsed, origin=origin, store=store, now=now)
    return await receive_parsed(
        parsed, document, origin=origin, store=store, now=now, front_door=front_door
    )


async def receive_parsed(
    parsed: ReferralSubmitted,
    document: Any,
    *,
    origin: Origin,
    store: Submissions,
    now: datetime,
    front_door: FrontDoor,
) -> Outcome:
    """A submission that has its schema's shape: screened, matched and recorded, or
    rejected with ``document`` (the submission as sent) kept."""
    existing = await store.find_accepted(parsed.partner_id, parsed.submission_id)
    if existing is not None:
        return existing
    screened = domain.screen_submission(parsed, front_door.districts, today=now.date())
    if not isinstance(screened, domain.Screened):
        return await _reject(document, list(screened), origin=origin, store=store, now=now)
    signposts = _signposts(screened, front_door.directory)
    keys = domain.family_keys(parsed, front_door.match_keys)

    def decide(known: domain.KnownFamilies) -> Decided:
        match = domain.match_family(keys, known, new_family_id=new_family_id())
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
        referral_id=domain.referral_id_for(submission.partner_id, submission.submission_id),
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


async def note_cases_open(cases: Sequence[tuple[str, str]], *, store: ReferralStore) -> None:
    """Cases were allocated or queued, as (family id, case id): each family has an open
    case until it closes."""
    await store.note_cases_open(cases)


async def note_cases_closed(
    closures: Sequence[tuple[str, str, datetime]], *, store: ReferralStore
) -> None:
    """Cases closed, as (family id, case id, closed at): a request within 12 months of a
    family's last closure is a re-referral."""
    await store.note_cases_closed(closures)


async def receive_unreadable(
    raw: bytes,
    problem: str,
    *,
    origin: Origin,
    store: Submissions,
    now: datetime,
    code: str = "unreadable",
    keep_bytes: int | None = None,
) -> Rejected:
    """Bytes that are not even a submission still get stored and answered.

    They are kept whole, or their first ``keep_bytes`` when that is given (an oversize
    message), with the size and SHA-256 of the whole so an operator can tell what came.
    """
    reason = RejectionReason(field="", code=code, message=problem)
    kept = raw if keep_bytes is None else raw[:keep_bytes]
    return await _reject(
        None,
        [reason],
        origin=origin,
        store=store,
        now=now,
        rejection_id=rejection_id_of_bytes(raw),
        stored={
            "raw_base64": base64.b64encode(kept).decode(),
            "raw_text": kept.decode(errors="replace")[:UNREADABLE_TEXT_LIMIT],
            "raw_size": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "raw_truncated": len(kept) < len(raw),
        },
    )


async def receive_body(
    raw: bytes,
    *,
    origin: Origin,
    store: Submissions,
    now: datetime,
    front_door: FrontDoor,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> Outcome:
    """A submission as bytes (an HTTP body): read strictly, then received."""
    try:
        document = read_json(raw, max_bytes=max_bytes)
    except Unreadable as problem:
        return await receive_unreadable(
            raw,
            str(problem),
            code=problem.code,
            keep_bytes=max_bytes,
            origin=origin,
            store=store,
            now=now,
        )
    return await receive_submission(
        document, origin=origin, store=store, now=now, front_door=front_door
    )


def lookups_for(submission: ReferralSubmitted, match_keys: domain.MatchKeys) -> Lookups:
    """The look-ups answering ``submission`` will make, so a batch can make them all at
    once beforehand."""
    return Lookups(
        referral_id=domain.referral_id_for(submission.partner_id, submission.submission_id),
        family_keys=domain.family_keys(submission, match_keys),
    )


UNREADABLE_CODES = frozenset({"too_large", "too_deep", "unreadable"})
"""The strict reader's reasons, answered as they are; any other envelope problem is
``unreadable``."""


SubmittedRecord = Delivered[ReferralSubmitted] | Refused
"""A ``referral-submitted`` record as the consumer's edge read it."""


def position_of(record: Record) -> Origin:
    """Where a record sits in the log: the identity of bytes too broken to have their own,
    so a redelivery gives the same rejection."""
    return Origin(
        source=f"kafka:{record.topic}",
        event_id=f"{record.partition}/{record.offset}",
        correlation_id=str(uuid.uuid4()),
    )


def _origin_of(event: RawEvent) -> Origin:
    return Origin(source=event.source, event_id=event.id, correlation_id=event.correlationid)


async def receive_record(
    item: SubmittedRecord,
    *,
    store: Submissions,
    now: datetime,
    front_door: FrontDoor,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> Outcome:
    """A ``referral-submitted`` record: whatever its bytes, exactly one answer.

    Bytes that are not a readable CloudEvent are answered as from their position in the log;
    an envelope whose data is not a valid submission is rejected with a reason per problem
    and its data kept; an envelope of another type or a newer schema is refused as from the
    envelope's own source and id, with its bytes.
    """
    if isinstance(item, Delivered):
        return await receive_parsed(
            item.event,
            item.envelope.data,
            origin=_origin_of(item.envelope),
            store=store,
            now=now,
            front_door=front_door,
        )
    error = item.error
    if item.envelope is None:
        return await receive_unreadable(
            item.record.value,
            str(error),
            code=error.code if error.code in UNREADABLE_CODES else "unreadable",
            keep_bytes=max_bytes,
            origin=position_of(item.record),
            store=store,
            now=now,
        )
    origin = _origin_of(item.envelope)
    if error.validation is not None:
        reasons = domain.reasons_of(error.validation)
        return await _reject(item.envelope.data, reasons, origin=origin, store=store, now=now)
    return await receive_unreadable(
        item.record.value, str(error), code=error.code, origin=origin, store=store, now=now
    )


async def _reject(
    document: Any,
    reasons: list[RejectionReason],
    *,
    origin: Origin,
    store: Submissions,
    now: datetime,
    stored: dict[str, Any] | None = None,
    rejection_id: str | None = None,
) -> Rejected:
    def read(name: str) -> str | None:
        value = document.get(name) if isinstance(document, dict) else None
        return value[:200] if isinstance(value, str) and value else None

    reasons = _bounded(reasons)
    event = ReferralRejected(
        rejection_id=rejection_id or rejection_id_for(document),
        partner_id=read("partner_id"),
        submission_id=read("submission_id"),
        route=read("route"),
        reasons=reasons,
        received_at=now,
    )
    new = await store.reject(
        stored if stored is not None else _storable(document),
        event,
        correlation_id=origin.correlation_id,
    )
    return Rejected(rejection_id=event.rejection_id, reasons=reasons, duplicate=not new)


def _bounded(reasons: list[RejectionReason]) -> list[RejectionReason]:
    """At most ``MAX_REASONS`` reasons, each of bounded length, and a count of the rest."""

    def short(text: str) -> str:
        return text if len(text) <= REASON_TEXT_LIMIT else text[: REASON_TEXT_LIMIT - 3] + "..."

    kept = [
        RejectionReason(field=short(reason.field), code=reason.code, message=short(reason.message))
        for reason in reasons[:MAX_REASONS]
    ]
    if len(reasons) > MAX_REASONS:
        kept.append(
            RejectionReason(
                field="",
                code="too_many_problems",
                message=f"{len(reasons) - MAX_REASONS} more problems not listed",
            )
        )
    return kept


def _storable(document: Any) -> dict[str, Any]:
    """The submission as it came, as JSON text: safe to store whatever its shape or depth."""
    text = json.dumps(document, default=str, ensure_ascii=False)
    return {
        "submission_json": text[:STORED_SUBMISSION_LIMIT],
        "submission_truncated": len(text) > STORED_SUBMISSION_LIMIT,
    }


async def receive_records(
    items: Sequence[SubmittedRecord],
    *,
    store: ReferralStore,
    now: datetime,
    front_door: FrontDoor,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> int:
    """A poll's ``referral-submitted`` records in one transaction: a few reads each, a few
    writes in all. The new answers, duplicates not counted."""
    lookups = [
        lookups_for(item.event, front_door.match_keys)
        for item in items
        if isinstance(item, Delivered)
    ]

    async def receive_all(batch: Submissions) -> int:
        fresh = 0
        for item in items:
            outcome = await receive_record(
                item, store=batch, now=now, front_door=front_door, max_bytes=max_bytes
            )
            fresh += not outcome.duplicate
        return fresh

    return await store.in_batch(lookups, receive_all)
