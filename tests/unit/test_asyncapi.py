"""The AsyncAPI document: complete, self-contained, documented, checked in and served."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.consumer import Delivered
from shared.contracts import ASYNCAPI_PATH, check, render
from shared.contracts.asyncapi import (
    HEADERS,
    PLATFORM_RECEIVES,
    asyncapi_document,
    platform_document,
)
from shared.events import (
    CONTENT_TYPE,
    PLATFORM_EVENTS,
    CaseClosed,
    CaseOutcome,
    CloudEvent,
    EventData,
    ReferralReceived,
)
from shared.mongo import Database, Session
from shared.outbox import Outbox
from shared.runtime import build_runtime, service_app
from shared.settings import ServiceSettings
from shared.topics import CATALOGUE
from tests.auth import TEST_DEAD_LETTER_KEY

Document = dict[str, Any]

REFERRAL_SERVICE = {
    "sends": {"referral-received", "referral-rejected"},
    "receives": {"referral-submitted"},
}

CLOSED_EXAMPLES: list[dict[str, Any]] = [
    {
        "case_id": "case-1",
        "family_id": "fam-1",
        "district": "northvale",
        "team_id": "team-north",
        "worker_id": "worker-7",
        "outcome": "needs_met",
        "closed_at": "2027-03-01T16:00:00Z",
    },
    {
        "case_id": "case-2",
        "family_id": "fam-2",
        "district": "southmoor",
        "team_id": None,
        "worker_id": None,
        "outcome": "moved_away",
        "closed_at": "2027-04-02T09:30:00+01:00",
    },
]


class CaseClosedWithExamples(CaseClosed):
    """A case ended, with its outcome; declares examples, as a model may."""

    model_config = ConfigDict(json_schema_extra={"examples": cast(JsonValue, CLOSED_EXAMPLES)})


def referral_service() -> Document:
    return asyncapi_document(
        title="Referral",
        description="The front door.",
        sends=REFERRAL_SERVICE["sends"],
        receives=REFERRAL_SERVICE["receives"],
    )


def resolve(document: Document, ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    found: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(found, dict), f"{ref}: {part!r} is inside a non-object"
        assert part in found, f"{ref}: no {part!r}"
        found = found[part]
    return found


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def undocumented_properties(schema: Any, where: str) -> Iterator[str]:
    """Every property, at any depth of ``schema``, that has no description."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from undocumented_properties(item, f"{where}[{index}]")
    if not isinstance(schema, dict):
        return
    for name, value in schema.get("properties", {}).items():
        if not value.get("description"):
            yield f"{where}.{name}"
    for key, value in schema.items():
        if key not in {"examples", "default", "const", "enum"}:
            yield from undocumented_properties(value, f"{where}.{key}")


def schemas_of(document: Document) -> Iterator[tuple[str, Any]]:
    components = document["components"]
    for name, schema in components["schemas"].items():
        yield f"schemas.{name}", schema
    for name, message in components["messages"].items():
        yield f"messages.{name}.payload", message["payload"]
        yield f"messages.{name}.headers", message["headers"]
        yield f"messages.{name}.key", message["bindings"]["kafka"]["key"]


def message_on(document: Document, event_type: str) -> Document:
    (reference,) = document["channels"][event_type]["messages"].values()
    message: Document = resolve(document, reference["$ref"])
    return message


# ---------------------------------------------------------------------------------------------
# The platform's document


def test_platform_document_is_asyncapi_3_with_a_channel_per_event_type() -> None:
    document = platform_document()

    assert document["asyncapi"] == "3.0.0"
    assert document["defaultContentType"] == CONTENT_TYPE
    assert document["servers"]["kafka"]["protocol"] == "kafka"
    consumed = {topic.name for topic in CATALOGUE if topic.consumed_by}
    assert document["channels"].keys() == PLATFORM_EVENTS.types.keys() | {
        f"{event_type}.dlq" for event_type in consumed
    }
    for event_type, channel in document["channels"].items():
        assert channel["address"] == event_type
        if event_type.endswith(".dlq"):
            assert message_on(document, event_type)["name"] == "DeadLetterNotice"
            continue
        assert channel["description"]
        assert (
            message_on(document, event_type)["name"] == PLATFORM_EVENTS.types[event_type].__name__
        )


def test_platform_receives_submissions_and_sends_every_other_event() -> None:
    operations = platform_document()["operations"]

    actions = {
        op["channel"]["$ref"].removeprefix("#/channels/"): op["action"]
        for op in operations.values()
    }
    consumed = {topic.name for topic in CATALOGUE if topic.consumed_by}
    assert len(operations) == len(PLATFORM_EVENTS.types) + len(consumed)
    assert actions == {
        event_type: "receive" if event_type in PLATFORM_RECEIVES else "send"
        for event_type in PLATFORM_EVENTS.types
    } | {f"{event_type}.dlq": "send" for event_type in consumed}
    assert actions["referral-submitted"] == "receive"
    assert operations["receiveReferralSubmitted"]["action"] == "receive"
    assert operations["sendCaseAllocated"]["action"] == "send"


@pytest.mark.parametrize("name", ["platform", "referral service"])
def test_every_ref_resolves_inside_the_document(name: str) -> None:
    document = platform_document() if name == "platform" else referral_service()

    refs = set(refs_in(document))
    assert "#/components/schemas/ReferralSubmitted" in refs
    for ref in refs:
        resolve(document, ref)
    assert "$defs" not in json.dumps(document)


def test_every_operation_message_is_a_message_of_its_channel() -> None:
    document = platform_document()

    for operation in document["operations"].values():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/")


def test_every_property_of_every_schema_is_documented() -> None:
    document = platform_document()

    assert document["components"]["schemas"], "no schemas hoisted into components"
    missing = [
        path
        for where, schema in schemas_of(document)
        for path in undocumented_properties(schema, where)
    ]
    assert missing == []


def test_an_undocumented_field_is_found() -> None:
    class Reason(BaseModel):
        code: str

    class CaseClosedWithReason(CaseClosed):
        """A case ended, with a reason whose field nobody documented."""

        reason: Reason | None = Field(default=None, description="Why.")

    document = platform_document(PLATFORM_EVENTS.with_model(CaseClosedWithReason))

    missing = [
        path
        for where, schema in schemas_of(document)
        for path in undocumented_properties(schema, where)
    ]
    assert missing == ["schemas.Reason.code"]


def test_checked_in_document_is_current() -> None:
    assert ASYNCAPI_PATH.exists(), f"{ASYNCAPI_PATH.name} is missing: run `make schemas`"
    document = platform_document()

    assert json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8")) == document, (
        f"{ASYNCAPI_PATH.name} is stale: run `make schemas`"
    )
    assert ASYNCAPI_PATH.read_text(encoding="utf-8") == render(document), (
        f"{ASYNCAPI_PATH.name} is not in canonical form: run `make schemas`"
    )


def test_contract_check_reports_a_stale_document() -> None:
    registry = PLATFORM_EVENTS.with_model(CaseClosedWithExamples)

    assert f"{ASYNCAPI_PATH.name}: out of date; run `make schemas` to refresh it" in check(registry)


# ---------------------------------------------------------------------------------------------
# A service's document


def test_service_document_has_exactly_its_channels_and_operations() -> None:
    document = referral_service()

    assert document["channels"].keys() == {
        "referral-received",
        "referral-rejected",
        "referral-submitted",
        "referral-submitted.dlq",
    }
    assert {name: op["action"] for name, op in document["operations"].items()} == {
        "sendReferralReceived": "send",
        "sendReferralRejected": "send",
        "receiveReferralSubmitted": "receive",
        "sendReferralSubmittedDeadLetter": "send",
    }
    assert document["operations"]["receiveReferralSubmitted"]["channel"] == {
        "$ref": "#/channels/referral-submitted"
    }
    assert document["components"]["messages"].keys() == {
        "DeadLetterNotice",
        "ReferralReceived",
        "ReferralRejected",
        "ReferralSubmitted",
    }
    assert "CaseAllocated" not in document["components"]["schemas"]


def test_a_service_may_send_and_receive_one_topic() -> None:
    document = asyncapi_document(
        title="Echo", description="Both ways.", sends=["case-closed"], receives=["case-closed"]
    )

    assert document["channels"].keys() == {"case-closed", "case-closed.dlq"}
    assert {op["action"] for op in document["operations"].values()} == {"send", "receive"}


def test_an_event_type_without_a_model_is_refused() -> None:
    with pytest.raises(ValueError, match="weather-report"):
        asyncapi_document(title="t", description="d", sends=["weather-report"])


def test_two_different_schemas_with_one_name_are_refused() -> None:
    class RejectionReason(BaseModel):
        """Not the referral service's RejectionReason."""

        why: str = Field(description="Why.")

    class CaseClosedWithClash(CaseClosed):
        """A case ended, with a reason named like another event's."""

        reason: RejectionReason | None = Field(default=None, description="Why.")

    with pytest.raises(ValueError, match="RejectionReason"):
        asyncapi_document(
            title="t",
            description="d",
            sends=["case-closed"],
            receives=["referral-rejected"],
            registry=PLATFORM_EVENTS.with_model(CaseClosedWithClash),
        )


# ---------------------------------------------------------------------------------------------
# Messages: headers, key and examples


async def test_message_documents_the_headers_the_outbox_sets() -> None:
    class Collection:
        def __init__(self) -> None:
            self.update: dict[str, Any] = {}

        async def update_one(self, _filter: Any, update: dict[str, Any], **_: Any) -> None:
            self.update = update

    collection = Collection()
    outbox = Outbox(
        cast(Database, {"outbox": collection}),
        source="/earlyhelp/allocation",
        topic_namespace="",
        clock=lambda: datetime(2027, 3, 1, 16, 0, tzinfo=UTC),
    )
    closed = CaseClosed.model_validate(CLOSED_EXAMPLES[0])

    await outbox.stage_event(closed, session=cast(Session, None), correlation_id="c-1")

    sent_headers = collection.update["$setOnInsert"]["headers"]
    documented = message_on(platform_document(), "case-closed")["headers"]

    assert sent_headers.keys() == documented["properties"].keys() == HEADERS.keys()
    assert sent_headers["content-type"] == documented["properties"]["content-type"]["const"]
    assert sent_headers["ce_type"] == documented["properties"]["ce_type"]["const"]
    assert collection.update["$setOnInsert"]["key"] == b"fam-1"


def test_key_is_documented_as_the_kafka_message_binding() -> None:
    message = message_on(platform_document(), "referral-received")

    key = message["bindings"]["kafka"]["key"]
    assert key["type"] == "string"
    assert "subject" in key["description"]
    assert "family id" in key["description"]
    assert key["examples"] == [example["payload"]["subject"] for example in message["examples"]]


def test_declared_examples_become_whole_envelopes() -> None:
    registry = PLATFORM_EVENTS.with_model(CaseClosedWithExamples)

    examples = message_on(platform_document(registry), "case-closed")["examples"]

    assert len(examples) == len(CLOSED_EXAMPLES)
    for example, data in zip(examples, CLOSED_EXAMPLES, strict=True):
        envelope = example["payload"]
        assert envelope.keys() == CloudEvent.model_fields.keys()
        assert envelope["data"] == data
        assert envelope["type"] == "case-closed"
        assert envelope["subject"] == data["family_id"]
        assert envelope["schemaversion"] == CaseClosed.schema_version
        assert envelope["datacontenttype"] == "application/json"
        assert example["headers"] == {
            "content-type": CONTENT_TYPE,
            "ce_type": "case-closed",
            "ce_id": envelope["id"],
        }
        event, closed = registry.decode(json.dumps(envelope).encode(), CaseClosedWithExamples)
        assert event.source == "/earlyhelp/allocation"
        assert closed.outcome in {CaseOutcome.NEEDS_MET, CaseOutcome.MOVED_AWAY}
    assert len({example["payload"]["id"] for example in examples}) == len(examples)


def test_an_invalid_example_is_refused() -> None:
    class CaseClosedWithBadExample(CaseClosed):
        """A case ended, with an example that is not one."""

        model_config = ConfigDict(json_schema_extra={"examples": [{"case_id": "case-1"}]})

    with pytest.raises(ValueError, match="family_id"):
        platform_document(PLATFORM_EVENTS.with_model(CaseClosedWithBadExample))


@pytest.mark.parametrize("event_type", sorted(PLATFORM_EVENTS.types))
def test_every_real_example_decodes_as_its_event(event_type: str) -> None:
    model: type[EventData] = PLATFORM_EVENTS.model(event_type)
    message = message_on(platform_document(), event_type)

    assert message["examples"], f"{event_type} shows no examples"
    assert len(message["examples"]) == len(model.model_json_schema()["examples"])
    for example in message["examples"]:
        event, data = PLATFORM_EVENTS.decode(json.dumps(example["payload"]).encode(), model)
        assert event.type == event_type
        assert event.subject == data.event_subject()


# ---------------------------------------------------------------------------------------------
# Served by every service


async def test_service_app_serves_the_document_of_its_own_topics() -> None:
    settings = ServiceSettings.model_validate(
        {
            "topic_namespace": "test-ns-",
            "service_name": "allocation",
            "dead_letter_key": TEST_DEAD_LETTER_KEY,
        }
    )
    runtime = build_runtime(settings, produces=("case-allocated", "case-closed"))

    async def ignore(batch: Sequence[Delivered[ReferralReceived]]) -> int:
        return 0

    runtime.subscribe(ReferralReceived, ignore)
    app = service_app(runtime, title="Allocation", description="Cases.")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/asyncapi.json")
    finally:
        await runtime.client.close()

    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Allocation"
    assert {name: channel["address"] for name, channel in document["channels"].items()} == {
        "case-allocated": "case-allocated",
        "case-closed": "case-closed",
        "referral-received": "referral-received",
        "referral-received.dlq": "referral-received.dlq",
    }
    assert {name: op["action"] for name, op in document["operations"].items()} == {
        "sendCaseAllocated": "send",
        "sendCaseClosed": "send",
        "receiveReferralReceived": "receive",
        "sendReferralReceivedDeadLetter": "send",
    }
