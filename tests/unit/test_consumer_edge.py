"""The consumer's edge: each record is read once, into a typed event or a refusal that says
at which step and why, so no handler ever sees bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.consumer import Delivered, Record, Refused, read_record
from shared.events import (
    PLATFORM_EVENTS,
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    envelope,
)

AT = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)

CLOSED = CaseClosed(
    case_id="case-1",
    family_id="fam-1",
    district="eastmere",
    team_id="eastmere-coast",
    worker_id="w-1",
    outcome=CaseOutcome.NEEDS_MET,
    closed_at=AT,
)


def closed_document(**changes: Any) -> dict[str, Any]:
    document = json.loads(
        envelope(
            CLOSED, event_id="evt-1", source="/earlyhelp/allocation", time=AT, correlation_id="c-1"
        ).to_bytes()
    )
    return {**document, **changes}


def read(value: bytes, model: type[Any] = CaseClosed, **options: Any) -> Delivered[Any] | Refused:
    record = Record("case-closed", 2, 17, b"fam-1", value, {"trace": "t"})
    return read_record(record, model, PLATFORM_EVENTS, **options)


def test_an_event_arrives_typed_with_its_envelope_and_where_it_came_from() -> None:
    item = read(json.dumps(closed_document()).encode())

    assert isinstance(item, Delivered)
    assert item.event == CLOSED
    assert (item.envelope.id, item.envelope.correlationid) == ("evt-1", "c-1")
    assert item.envelope.data["case_id"] == "case-1"
    assert item.record.position == "case-closed/2/17"


@pytest.mark.parametrize(
    ("value", "code", "has_envelope"),
    [
        (b"\xff{", "unreadable", False),
        (b'{"a": 1, "a": 2}', "unreadable", False),
        (b"[" * 100 + b"]" * 100, "too_deep", False),
        (b'{"specversion": "1.0"}', "not_an_envelope", False),
        (
            json.dumps(closed_document(type="case-allocated")).encode(),
            "unexpected_event_type",
            True,
        ),
        (json.dumps(closed_document(schemaversion=9)).encode(), "unsupported_schema_version", True),
        (
            json.dumps(closed_document(data={**CLOSED.model_dump(mode="json"), "outcome": "?"})),
            "invalid_data",
            True,
        ),
    ],
    ids=[
        "not UTF-8",
        "a key twice",
        "too deep",
        "not an envelope",
        "another type",
        "a newer version",
        "invalid data",
    ],
)
def test_a_record_that_is_not_the_event_is_refused_saying_at_which_step(
    value: bytes | str, code: str, has_envelope: bool
) -> None:
    raw = value.encode() if isinstance(value, str) else value
    item = read(raw)

    assert isinstance(item, Refused)
    assert item.error.code == code
    assert (item.envelope is not None) == has_envelope
    assert item.record.value == raw


def test_invalid_data_keeps_the_field_level_problems() -> None:
    data = {**CLOSED.model_dump(mode="json"), "outcome": "vanished"}
    del data["district"]
    item = read(json.dumps(closed_document(data=data)).encode())

    assert isinstance(item, Refused)
    assert item.error.validation is not None
    assert sorted(str(error["loc"][0]) for error in item.error.validation.errors()) == [
        "district",
        "outcome",
    ]


def test_a_record_over_the_subscription_limit_is_refused_too_large() -> None:
    raw = json.dumps(closed_document()).encode()

    assert isinstance(read(raw, max_bytes=len(raw)), Delivered)
    refused = read(raw, max_bytes=len(raw) - 1)
    assert isinstance(refused, Refused)
    assert refused.error.code == "too_large"


def test_an_older_schema_version_is_upcast_at_the_edge() -> None:
    allocated = CaseAllocated(
        case_id="case-1",
        family_id="fam-1",
        referral_id="ref-1",
        district="eastmere",
        team_id="eastmere-coast",
        worker_id="w-1",
        status=AllocationStatus.ALLOCATED,
        kind=AllocationKind.EXISTING_CASE,
        level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        referral_received_at=AT,
        allocated_at=AT,
    )
    document = json.loads(
        envelope(
            allocated, event_id="e", source="/earlyhelp/allocation", time=AT, correlation_id="c"
        ).to_bytes()
    )
    version_1 = {**document, "schemaversion": 1, "data": {**document["data"], "kind": "continuing"}}

    item = read(json.dumps(version_1).encode(), CaseAllocated)

    assert isinstance(item, Delivered)
    assert item.event.kind is AllocationKind.EXISTING_CASE
    assert item.envelope.data["kind"] == "continuing"  # the data as it was sent
