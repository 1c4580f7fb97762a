"""Use cases of the front door: take a submission, however it arrived, and answer it.

The data protection use cases are beside this: ``partners``, ``access_log``, ``erasure``
and ``retention``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral import domain, sample
from services.referral.directory import DirectoryService, find_services
from services.referral.ports import Accepted, Decided, Lookups, ReferralBatches, ReferralStore
from shared.events import (
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    ScreeningDecision,
    UndecodableEvent,
    read_envelope,
)

MAX_SIGNPOSTS = 5
"""Services offered to a signposted family: enough to choose from, few enough to read."""

UNREADABLE_TEXT_LIMIT = 20_000
STORED_SUBMISSION_LIMIT = 4_000_000
"""Characters of a rejected submission kept as JSON text, well inside a document's 16 MB."""

MAX_SUBMISSION_BYTES = 256 * 1024
"""A submission is a few kilobytes; a quarter of a megabyte leaves room for long notes."""

MAX_NESTING = 64
"""Deepest JSON nesting read. A submission nests four levels; Python's parser fails near
1000, so anything deeper is refused before it can exhaust the stack."""

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
    """The council's configuration the rules work with: its districts and local offer."""

    districts: Mapping[str, str]
    directory: Sequence[DirectoryService]

    @staticmethod
    @functools.cache
    def sample() -> FrontDoor:
        """The sample county's, for demonstrations and tests (``EARLYHELP_SAMPLE_DATA``)."""
        return FrontDoor(sample.POSTCODE_DISTRICTS, tuple(sample.load_sample_directory()))


@dataclass(frozen=True)
class Rejected:
    rejection_id: str
    reasons: list[RejectionReason]


Outcome = Accepted | Rejected


def rejection_id_for(origin: Origin) -> str:
    digest = hashlib.sha256(f"{origin.source}\0{origin.event_id}".encode()).hexdigest()
    return f"rej-{digest[:20]}"


async def receive_submission(
    document: Any,
    *,
    origin: Origin,
    store: ReferralStore,
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


async def note_case_open(family_id: str, case_id: str, *, store: ReferralStore) -> None:
    """A case was allocated or queued: the family has an open case until it closes."""
    await store.note_case_open(family_id, case_id)


async def note_cases_open(cases: Sequence[tuple[str, str]], *, store: ReferralBatches) -> None:
    """``note_case_open`` for a poll's (family id, case id), written together."""
    await store.note_cases_open(cases)


async def note_case_closed(
    family_id: str, case_id: str, closed_at: datetime, *, store: ReferralStore
) -> None:
    """A case closed: a request within 12 months of the last closure is a re-referral."""
    await store.note_case_closed(family_id, case_id, closed_at)


async def receive_unreadable(
    raw: bytes,
    problem: str,
    *,
    origin: Origin,
    store: ReferralStore,
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
        stored={
            "raw_base64": base64.b64encode(kept).decode(),
            "raw_text": kept.decode(errors="replace")[:UNREADABLE_TEXT_LIMIT],
            "raw_size": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "raw_truncated": len(kept) < len(raw),
        },
    )


class Unreadable(ValueError):
    """Bytes the front door will not read as JSON, with the reason code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def read_json(raw: bytes, *, max_bytes: int = MAX_SUBMISSION_BYTES) -> Any:
    """Strict JSON from untrusted bytes, or ``Unreadable`` saying why not.

    Stricter than ``json.loads``: UTF-8 only; no NaN or Infinity; no key twice in an object
    (which value would a person have meant?); no lone surrogate escapes (they cannot be
    stored or hashed); at most ``MAX_NESTING`` levels; and nothing over ``max_bytes``.
    """
    if len(raw) > max_bytes:
        raise Unreadable(
            "too_large", f"{len(raw)} bytes is over the limit of {max_bytes} bytes a submission"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unreadable("unreadable", f"not UTF-8: {error}") from error
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object_without_repeats,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except RecursionError as error:
        raise Unreadable("too_deep", f"nested deeper than {MAX_NESTING} levels") from error
    except Unreadable:
        raise
    except ValueError as error:  # JSONDecodeError, and ints over Python's 4300 digits
        raise Unreadable("unreadable", f"not JSON: {error}") from error
    _check_shape(document)
    return document


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Unreadable("unreadable", f"not JSON we accept: key {key[:100]!r} repeated")
            seen.add(key)
    return document


def _refuse_constant(name: str) -> Any:
    raise Unreadable("unreadable", f"not JSON: {name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise Unreadable("unreadable", f"not JSON we accept: {literal[:40]} is out of range")
    return value


def _check_shape(document: Any) -> None:
    """Depth and lone surrogates, walked without recursion."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            strings: list[str] = [value]
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise Unreadable("too_deep", f"nested deeper than {MAX_NESTING} levels")
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
            strings = list(value) if isinstance(value, dict) else []
        else:
            continue
        if any(_LONE_SURROGATE.search(text) for text in strings):
            raise Unreadable("unreadable", "not JSON we accept: a string holds a lone surrogate")


async def receive_body(
    raw: bytes,
    *,
    origin: Origin,
    store: ReferralStore,
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


def lookups_of(raw: bytes, *, max_bytes: int = MAX_SUBMISSION_BYTES) -> Lookups | None:
    """The look-ups ``receive_message`` will make for these bytes, when they hold a valid
    submission (None otherwise): so a batch can make them all at once beforehand."""
    try:
        read_json(raw, max_bytes=max_bytes)
        event = read_envelope(raw)
    except (Unreadable, UndecodableEvent):
        return None
    if event.type != ReferralSubmitted.event_type:
        return None
    parsed = domain.parse_submission(event.data)
    if isinstance(parsed, list):
        return None
    return Lookups(
        referral_id=domain.referral_id_for(parsed.partner_id, parsed.submission_id),
        family_keys=domain.family_keys(parsed),
    )


async def receive_message(
    raw: bytes,
    *,
    position: Origin,
    store: ReferralStore,
    now: datetime,
    front_door: FrontDoor,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> Outcome:
    """A ``referral-submitted`` record: whatever its bytes, exactly one answer.

    Bytes that are not a readable CloudEvent are answered as from ``position`` (the record's
    place in the log, so a redelivery gives the same rejection); an envelope of another type
    or a newer schema is refused as from the envelope's own source and id, with its bytes.
    """
    try:
        read_json(raw, max_bytes=max_bytes)
        event = read_envelope(raw)
    except (Unreadable, UndecodableEvent) as problem:
        code = problem.code if isinstance(problem, Unreadable) else "unreadable"
        return await receive_unreadable(
            raw,
            str(problem),
            code=code,
            keep_bytes=max_bytes,
            origin=position,
            store=store,
            now=now,
        )
    origin = Origin(source=event.source, event_id=event.id, correlation_id=event.correlationid)
    misaddressed: tuple[str, str] | None = None
    if event.type != ReferralSubmitted.event_type:
        misaddressed = (
            "unexpected_event_type",
            f"type {event.type[:100]!r} on the referral-submitted topic; expected"
            f" {ReferralSubmitted.event_type!r}",
        )
    elif event.schemaversion != ReferralSubmitted.schema_version:
        misaddressed = (
            "unsupported_schema_version",
            f"schema version {event.schemaversion} of referral-submitted; this front door"
            f" reads version {ReferralSubmitted.schema_version}",
        )
    if misaddressed is not None:
        code, message = misaddressed
        return await receive_unreadable(
            raw, message, code=code, origin=origin, store=store, now=now
        )
    return await receive_submission(
        event.data, origin=origin, store=store, now=now, front_door=front_door
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

    reasons = _bounded(reasons)
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


async def receive_messages(
    messages: Sequence[tuple[bytes, Origin]],
    *,
    store: ReferralBatches,
    now: datetime,
    front_door: FrontDoor,
    max_bytes: int = MAX_SUBMISSION_BYTES,
) -> int:
    """A poll's ``referral-submitted`` records (bytes and position) in one transaction: a
    few reads each, a few writes in all. The new answers, duplicates not counted."""
    lookups = [lookups_of(raw, max_bytes=max_bytes) for raw, _ in messages]

    async def receive_all(batch: ReferralStore) -> int:
        fresh = 0
        for raw, position in messages:
            outcome = await receive_message(
                raw,
                position=position,
                store=batch,
                now=now,
                front_door=front_door,
                max_bytes=max_bytes,
            )
            fresh += not (isinstance(outcome, Accepted) and outcome.duplicate)
        return fresh

    return await store.in_batch([found for found in lookups if found is not None], receive_all)
