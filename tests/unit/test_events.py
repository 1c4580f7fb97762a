"""The wire contracts: the envelope, encoding, decoding and the upcasting of old versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from shared.events import (
    PLATFORM_EVENTS,
    AllocationKind,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    CloudEvent,
    EventData,
    EventRegistry,
    HeadlineOutcome,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    UndecodableEvent,
    envelope,
    read_envelope,
)
from shared.strict_json import Unreadable
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


def wrap(data: EventData, event_id: str = "evt-1") -> CloudEvent[EventData]:
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

    decoded_event, decoded = PLATFORM_EVENTS.decode(event.to_bytes(), ReferralReceived)

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

    _, decoded = PLATFORM_EVENTS.decode(wrap(submission).to_bytes(), ReferralSubmitted)

    assert decoded == submission


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "unreadable"),
        (b"\xff\xfe\x00 not utf-8", "unreadable"),
        (b"", "unreadable"),
        (b'{"id": "a", "id": "b"}', "unreadable"),
        (b'{"id": NaN}', "unreadable"),
        (b'{"id": ' + b"9" * 5000 + b"}", "unreadable"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    ],
    ids=["broken-json", "not-utf-8", "empty", "repeated-key", "nan", "long-number", "deep"],
)
def test_decode_refuses_bytes_the_strict_reader_refuses_with_its_code(
    raw: bytes, code: str
) -> None:
    with pytest.raises(UndecodableEvent) as caught:
        PLATFORM_EVENTS.decode(raw, ReferralReceived)

    assert caught.value.code == code
    assert caught.value.validation is None


def test_decode_refuses_a_record_over_the_size_limit_before_reading_it() -> None:
    raw = wrap(received()).to_bytes()

    with pytest.raises(UndecodableEvent) as caught:
        PLATFORM_EVENTS.decode(raw, ReferralReceived, max_bytes=len(raw) - 1)

    assert caught.value.code == "too_large"
    assert PLATFORM_EVENTS.decode(raw, ReferralReceived, max_bytes=len(raw))[1] == received()


@pytest.mark.parametrize("missing", ["id", "source"])
def test_decode_refuses_json_that_is_not_an_envelope(missing: str) -> None:
    document = raw_envelope(received())
    del document[missing]

    with pytest.raises(UndecodableEvent, match=r"not a CloudEvents 1\.0 envelope") as caught:
        PLATFORM_EVENTS.decode(encode(document), ReferralReceived)

    assert caught.value.code == "not_an_envelope"
    assert missing in str(caught.value)
    assert caught.value.validation is not None
    assert [error["loc"] for error in caught.value.validation.errors()] == [(missing,)]


def test_decode_refuses_a_json_value_that_is_not_an_object() -> None:
    with pytest.raises(UndecodableEvent, match=r"not a CloudEvents 1\.0 envelope") as caught:
        read_envelope(b"[1, 2, 3]")

    assert caught.value.code == "not_an_envelope"


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
        PLATFORM_EVENTS.decode(wrap(closed).to_bytes(), ReferralReceived)

    assert caught.value.code == "unexpected_event_type"
    assert "'referral-received'" in str(caught.value)
    assert "'case-closed'" in str(caught.value)


def test_decode_refuses_a_schema_version_newer_than_the_model_knows() -> None:
    document = raw_envelope(received(), schemaversion=2)

    with pytest.raises(UndecodableEvent, match="version 2 is newer than 1") as caught:
        PLATFORM_EVENTS.decode(encode(document), ReferralReceived)

    assert caught.value.code == "unsupported_schema_version"


def test_decode_refuses_data_invalid_for_the_model_naming_the_field() -> None:
    document = raw_envelope(received())
    document["data"]["child_count"] = 0
    del document["data"]["district"]

    with pytest.raises(UndecodableEvent, match="invalid referral-received data") as caught:
        PLATFORM_EVENTS.decode(encode(document), ReferralReceived)

    assert caught.value.code == "invalid_data"
    assert "child_count" in str(caught.value)
    assert "district" in str(caught.value)
    assert caught.value.validation is not None
    assert {error["loc"] for error in caught.value.validation.errors()} == {
        ("child_count",),
        ("district",),
    }


def test_undecodable_event_is_a_value_error_chained_to_its_cause() -> None:
    with pytest.raises(ValueError, match="not JSON") as caught:
        PLATFORM_EVENTS.decode(b"{", ReferralReceived)

    assert isinstance(caught.value, UndecodableEvent)
    assert isinstance(caught.value.__cause__, Unreadable)
    assert isinstance(caught.value.__cause__.__cause__, json.JSONDecodeError)


def test_decode_refuses_an_older_version_without_an_upcaster() -> None:
    registry = PLATFORM_EVENTS.with_upcasters({})

    with pytest.raises(
        UndecodableEvent, match="no upcaster for referral-received version 1"
    ) as caught:
        registry.decode(wrap(received()).to_bytes(), ReferralReceivedV2)

    assert caught.value.code == "no_upcaster"


def test_decode_applies_the_upcaster_for_an_older_schema_version() -> None:
    seen: list[dict[str, Any]] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data)
        return {**data, "referral_channel": "partner-api"}

    registry = PLATFORM_EVENTS.with_upcasters(
        {**PLATFORM_EVENTS.upcasters, ("referral-received", 1): v1_to_v2}
    )
    original = received()

    event, decoded = registry.decode(wrap(original).to_bytes(), ReferralReceivedV2)

    assert isinstance(decoded, ReferralReceivedV2)
    assert decoded.referral_channel == "partner-api"
    assert decoded.referral_id == original.referral_id
    assert decoded.received_at == original.received_at
    assert event.schemaversion == 1
    assert len(seen) == 1
    assert seen[0]["referral_id"] == "ref-1"


def test_decode_applies_upcasters_one_version_at_a_time() -> None:
    registry = PLATFORM_EVENTS.with_upcasters(
        {
            **PLATFORM_EVENTS.upcasters,
            ("referral-received", 1): lambda data: {**data, "referral_channel": "api"},
            ("referral-received", 2): lambda data: {
                **data,
                "referral_channel_label": data["referral_channel"].upper(),
            },
        }
    )

    _, decoded = registry.decode(wrap(received()).to_bytes(), ReferralReceivedV3)

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

    _, decoded = PLATFORM_EVENTS.decode(json.dumps(raw).encode(), CaseAllocated)

    assert decoded.kind is v2_kind
    assert decoded.queue_position is None
    assert decoded.time_to_allocation_seconds is None


def test_read_data_leaves_the_envelope_data_unchanged_when_upcasting() -> None:
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        data["referral_channel"] = "api"
        return data

    registry = PLATFORM_EVENTS.with_upcasters({("referral-received", 1): v1_to_v2})
    event = read_envelope(wrap(received()).to_bytes())

    registry.read_data(event, ReferralReceivedV2)

    assert "referral_channel" not in event.data


# ---------------------------------------------------------------------------------------------
# The registry


def test_registry_finds_a_model_by_its_event_type() -> None:
    assert PLATFORM_EVENTS.model("case-allocated") is CaseAllocated


def test_registry_refuses_an_unknown_event_type_as_undecodable() -> None:
    with pytest.raises(UndecodableEvent, match="weather-report") as caught:
        PLATFORM_EVENTS.model("weather-report")

    assert caught.value.code == "unexpected_event_type"


def test_registry_with_a_model_reads_its_type_with_it_and_leaves_the_original_alone() -> None:
    registry = PLATFORM_EVENTS.with_model(ReferralReceivedV2)

    assert registry.model("referral-received") is ReferralReceivedV2
    assert PLATFORM_EVENTS.model("referral-received") is ReferralReceived
    assert list(registry.types) == list(PLATFORM_EVENTS.types)
    assert registry.upcasters == PLATFORM_EVENTS.upcasters


def test_registry_with_other_upcasters_keeps_its_models_and_leaves_the_original_alone() -> None:
    registry = PLATFORM_EVENTS.with_upcasters({})

    assert registry.upcasters == {}
    assert registry.types == PLATFORM_EVENTS.types
    assert ("case-allocated", 1) in PLATFORM_EVENTS.upcasters


def test_registry_cannot_be_changed_in_place() -> None:
    with pytest.raises(TypeError):
        PLATFORM_EVENTS.types["case-closed"] = ReferralReceived  # type: ignore[index]


def test_registry_refuses_two_models_of_one_event_type() -> None:
    with pytest.raises(ValueError, match="ReferralReceived and ReferralReceivedV2"):
        EventRegistry([ReferralReceived, ReferralReceivedV2])


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
        PLATFORM_EVENTS.decode(encode(document), ReferralSubmitted)


def test_referral_received_ignores_unknown_fields() -> None:
    fields = {**received().model_dump(), "added_in_a_later_version": "x"}

    data = ReferralReceived.model_validate(fields)

    assert data == received()
    assert not hasattr(data, "added_in_a_later_version")


def test_decode_of_referral_received_ignores_unknown_fields_and_envelope_extensions() -> None:
    document = raw_envelope(received(), traceparent="00-abc-def-01")
    document["data"]["added_in_a_later_version"] = {"nested": True}

    event, decoded = PLATFORM_EVENTS.decode(encode(document), ReferralReceived)

    assert decoded == received()
    assert event.id == "evt-1"
