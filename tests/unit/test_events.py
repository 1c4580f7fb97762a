"""The wire contracts: the envelope, encoding, decoding and the upcasting of old versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from shared import events
from shared.events import (
    AllocationKind,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    HeadlineOutcome,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    UndecodableEvent,
    decode,
    envelope,
    read_data,
    read_envelope,
)
from tests.factories import referral_received

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
SOURCE = "/earlyhelp/referral"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"


def submission_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def received(**changes: Any) -> ReferralReceived:
    return referral_received(
        **{
            "needs": [HeadlineOutcome.EDUCATION, HeadlineOutcome.FAMILY_RELATIONSHIPS],
            "child_count": 2,
            "received_at": NOW,
            **changes,
        }
    )


def wrap(data: EventData, event_id: str = "evt-1") -> events.CloudEvent[EventData]:
    return envelope(data, event_id=event_id, source=SOURCE, time=NOW, correlation_id="corr-1")


def raw_envelope(data: EventData, **changes: Any) -> dict[str, Any]:
    """The JSON document of an envelope, for tampering with before encoding."""
    document: dict[str, Any] = json.loads(wrap(data).to_bytes())
    document.update(changes)
    return document


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


class ReferralReceivedV2(ReferralReceived):
    """A later version of referral-received, as a future reader would know it."""

    schema_version: ClassVar[int] = 2

    referral_channel: str


class ReferralReceivedV3(ReferralReceivedV2):
    schema_version: ClassVar[int] = 3

    referral_channel_label: str


# ---------------------------------------------------------------------------------------------
# envelope()


def test_envelope_sets_type_subject_family_and_schema_version_from_the_data() -> None:
    data = received(family_id="fam-42")

    event = envelope(data, event_id="evt-7", source=SOURCE, time=NOW, correlation_id="corr-9")

    assert event.type == "referral-received"
    assert event.subject == "fam-42"
    assert event.schemaversion == 1
    assert event.id == "evt-7"
    assert event.source == SOURCE
    assert event.time == NOW
    assert event.correlationid == "corr-9"
    assert event.specversion == "1.0"
    assert event.data == data


def test_envelope_schema_version_follows_the_model_version() -> None:
    data = ReferralReceivedV2.model_validate({**received().model_dump(), "referral_channel": "api"})

    assert wrap(data).schemaversion == 2


def test_envelope_of_a_submission_has_no_subject() -> None:
    submission = ReferralSubmitted.model_validate(submission_document())

    event = wrap(submission)

    assert event.type == "referral-submitted"
    assert event.subject is None


def test_envelope_of_a_rejection_is_keyed_by_its_partner() -> None:
    rejection = ReferralRejected(
        rejection_id="rej-1",
        partner_id="northvale-primary",
        submission_id=None,
        reasons=[RejectionReason(field="", code="unreadable", message="not JSON")],
        received_at=NOW,
    )

    assert wrap(rejection).subject == "northvale-primary"


# ---------------------------------------------------------------------------------------------
# to_bytes() and decode()


def test_to_bytes_then_decode_gives_back_the_original_envelope_and_data() -> None:
    data = received(is_step_down=True, social_care_case_reference="SC-123")
    event = wrap(data)

    decoded_event, decoded = decode(event.to_bytes(), ReferralReceived)

    assert decoded == data
    assert decoded_event.model_dump(exclude={"data"}) == event.model_dump(exclude={"data"})
    assert decoded_event.data == data.model_dump(mode="json")


def test_to_bytes_writes_every_field_of_the_data() -> None:
    data = received()

    document = json.loads(wrap(data).to_bytes())

    assert document["data"]["referral_id"] == "ref-1"
    assert document["data"]["decision"] == "early_help"
    assert document["type"] == "referral-received"


def test_round_trip_keeps_a_submission_intact() -> None:
    submission = ReferralSubmitted.model_validate(submission_document())

    _, decoded = decode(wrap(submission).to_bytes(), ReferralSubmitted)

    assert decoded == submission


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe\x00 not utf-8", b""],
    ids=["broken-json", "not-utf-8", "empty"],
)
def test_decode_refuses_bytes_that_are_not_json(raw: bytes) -> None:
    with pytest.raises(UndecodableEvent, match=r"^not JSON"):
        decode(raw, ReferralReceived)


@pytest.mark.parametrize("missing", ["id", "source"])
def test_decode_refuses_json_that_is_not_an_envelope(missing: str) -> None:
    document = raw_envelope(received())
    del document[missing]

    with pytest.raises(UndecodableEvent, match=r"not a CloudEvents 1\.0 envelope") as caught:
        decode(encode(document), ReferralReceived)

    assert missing in str(caught.value)


def test_decode_refuses_a_json_value_that_is_not_an_object() -> None:
    with pytest.raises(UndecodableEvent, match=r"not a CloudEvents 1\.0 envelope"):
        read_envelope(b"[1, 2, 3]")


def test_decode_refuses_an_event_of_another_type_naming_both_types() -> None:
    closed = CaseClosed(
        case_id="case-1",
        family_id="fam-1",
        district="northvale",
        team_id="northvale-locality",
        worker_id=None,
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=NOW,
    )

    with pytest.raises(UndecodableEvent) as caught:
        decode(wrap(closed).to_bytes(), ReferralReceived)

    assert "'referral-received'" in str(caught.value)
    assert "'case-closed'" in str(caught.value)


def test_decode_refuses_a_schema_version_newer_than_the_model_knows() -> None:
    document = raw_envelope(received(), schemaversion=2)

    with pytest.raises(UndecodableEvent, match="version 2 is newer than 1"):
        decode(encode(document), ReferralReceived)


def test_decode_refuses_data_invalid_for_the_model_naming_the_field() -> None:
    document = raw_envelope(received())
    document["data"]["child_count"] = 0
    del document["data"]["district"]

    with pytest.raises(UndecodableEvent, match="invalid referral-received data") as caught:
        decode(encode(document), ReferralReceived)

    assert "child_count" in str(caught.value)
    assert "district" in str(caught.value)


def test_undecodable_event_is_a_value_error_chained_to_its_cause() -> None:
    with pytest.raises(ValueError, match="not JSON") as caught:
        decode(b"{", ReferralReceived)

    assert isinstance(caught.value, UndecodableEvent)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000 + b"]" * 100_000, b'{"id": ' + b"9" * 5000 + b"}"], ids=["deep", "long"]
)
def test_input_json_cannot_read_is_undecodable_not_a_crash(raw: bytes) -> None:
    with pytest.raises(UndecodableEvent, match="not readable JSON"):
        decode(raw, ReferralReceived)


def test_decode_refuses_an_older_version_without_an_upcaster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "UPCASTERS", {})

    with pytest.raises(UndecodableEvent, match="no upcaster for referral-received version 1"):
        decode(wrap(received()).to_bytes(), ReferralReceivedV2)


def test_decode_applies_the_upcaster_for_an_older_schema_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data)
        return {**data, "referral_channel": "partner-api"}

    upcasters = {**events.UPCASTERS, ("referral-received", 1): v1_to_v2}
    monkeypatch.setattr(events, "UPCASTERS", upcasters)
    original = received()

    event, decoded = decode(wrap(original).to_bytes(), ReferralReceivedV2)

    assert isinstance(decoded, ReferralReceivedV2)
    assert decoded.referral_channel == "partner-api"
    assert decoded.referral_id == original.referral_id
    assert decoded.received_at == original.received_at
    assert event.schemaversion == 1
    assert len(seen) == 1
    assert seen[0]["referral_id"] == "ref-1"


def test_decode_applies_upcasters_one_version_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    upcasters = {
        **events.UPCASTERS,
        ("referral-received", 1): lambda data: {**data, "referral_channel": "api"},
        ("referral-received", 2): lambda data: {
            **data,
            "referral_channel_label": data["referral_channel"].upper(),
        },
    }
    monkeypatch.setattr(events, "UPCASTERS", upcasters)

    _, decoded = decode(wrap(received()).to_bytes(), ReferralReceivedV3)

    assert decoded.referral_channel == "api"
    assert decoded.referral_channel_label == "API"


@pytest.mark.parametrize(
    ("v1_kind", "v2_kind"),
    [("continuing", AllocationKind.EXISTING_CASE), ("step_down", AllocationKind.STEP_DOWN)],
)
def test_a_version_1_case_allocated_is_read_with_the_version_2_kind_names(
    v1_kind: str, v2_kind: AllocationKind
) -> None:
    v1_data = {
        "case_id": "case-1",
        "family_id": "fam-1",
        "referral_id": "ref-1",
        "district": "northvale",
        "team_id": "northvale-north",
        "worker_id": "nv-1",
        "status": "allocated",
        "kind": v1_kind,
        "level_of_need": 2,
        "referral_received_at": "2026-11-02T09:00:00Z",
        "allocated_at": "2026-11-02T09:00:05Z",
    }
    raw = {
        "specversion": "1.0",
        "id": "case-1.0",
        "source": "/earlyhelp/allocation",
        "type": "case-allocated",
        "time": "2026-11-02T09:00:05Z",
        "correlationid": "c-1",
        "schemaversion": 1,
        "data": v1_data,
    }

    _, decoded = decode(json.dumps(raw).encode(), CaseAllocated)

    assert decoded.kind is v2_kind
    assert decoded.queue_position is None
    assert decoded.time_to_allocation_seconds is None


def test_read_data_leaves_the_envelope_data_unchanged_when_upcasting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        data["referral_channel"] = "api"
        return data

    monkeypatch.setattr(events, "UPCASTERS", {("referral-received", 1): v1_to_v2})
    event = read_envelope(wrap(received()).to_bytes())

    read_data(event, ReferralReceivedV2)

    assert "referral_channel" not in event.data


# ---------------------------------------------------------------------------------------------
# Strict input, tolerant readers


def test_referral_submitted_refuses_unknown_fields() -> None:
    document = {**submission_document(), "favourite_colour": "blue"}

    with pytest.raises(ValidationError) as caught:
        ReferralSubmitted.model_validate(document)

    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    assert caught.value.errors()[0]["loc"] == ("favourite_colour",)


def test_referral_submitted_refuses_unknown_fields_in_nested_parts() -> None:
    document = submission_document()
    document["children"][0]["shoe_size"] = 12

    with pytest.raises(ValidationError, match="shoe_size"):
        ReferralSubmitted.model_validate(document)


def test_decoding_a_submission_with_an_unknown_field_is_undecodable() -> None:
    document = raw_envelope(ReferralSubmitted.model_validate(submission_document()))
    document["data"]["favourite_colour"] = "blue"

    with pytest.raises(UndecodableEvent, match="favourite_colour"):
        decode(encode(document), ReferralSubmitted)


def test_referral_received_ignores_unknown_fields() -> None:
    fields = {**received().model_dump(), "added_in_a_later_version": "x"}

    data = ReferralReceived.model_validate(fields)

    assert data == received()
    assert not hasattr(data, "added_in_a_later_version")


def test_decode_of_referral_received_ignores_unknown_fields_and_envelope_extensions() -> None:
    document = raw_envelope(received(), traceparent="00-abc-def-01")
    document["data"]["added_in_a_later_version"] = {"nested": True}

    event, decoded = decode(encode(document), ReferralReceived)

    assert decoded == received()
    assert event.id == "evt-1"
