"""The AsyncAPI 3.0.0 document of the platform's Kafka topics: the event contracts for partners.

Generated from the same models as the checked-in JSON schemas, so the field descriptions and
examples partners read are the ones the services validate against. One channel per event
type, addressed by its topic name (without ``EARLYHELP_TOPIC_NAMESPACE``), carrying one
message: the CloudEvents 1.0 envelope around that type's data.

Operations follow AsyncAPI 3: they are the actions of the application the document
describes. A service's document (``sends``/``receives`` given) has a ``send`` operation for
each topic it publishes and a ``receive`` operation for each it consumes, and only those
channels. The platform's document (neither given) has every channel, with the platform's
own action on it: it receives what partners publish (``PLATFORM_RECEIVES``) and sends every
other event. Operation ids are the action and the event name, e.g. ``sendReferralReceived``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from shared.contracts import event_schema
from shared.dead_letters import DeadLetterNotice
from shared.events import CONTENT_TYPE, PLATFORM_EVENTS, CloudEvent, EventData, EventRegistry
from shared.topics import CATALOGUE, REFERRAL_SUBMITTED, dead_letter_topic

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SERVER = "kafka"

PLATFORM_TITLE = "Early Help platform events"
PLATFORM_DESCRIPTION = (
    "The Kafka topics of the Early Help platform. Each topic is named after the one event type"
    " it carries, and every record's value is a CloudEvents 1.0 envelope in structured JSON"
    " mode whose `data` follows that type's schema. Partners publish Requests for Early Help"
    " Support on `referral-submitted` and may consume the events the platform publishes.\n\n"
    "Delivery is at least once: consumers must be idempotent, keyed by the envelope's `source`"
    " and `id`. Family-scoped events are keyed by family id, so one family's events stay in"
    " order. Readers ignore fields they do not know; an event's schema version changes only"
    " when a change would break them. A consumer that cannot process a record keeps it, sealed,"
    " and publishes a notice to `<topic>.dlq`: where it came from and why, never its bytes."
)

PLATFORM_RECEIVES = frozenset({REFERRAL_SUBMITTED})
"""Event types partners publish and the platform consumes; the platform sends all others."""

HEADERS: dict[str, str] = {
    "content-type": f"The value's media type, always `{CONTENT_TYPE}`.",
    "ce_type": "The envelope's `type`, so a record can be routed without parsing its value.",
    "ce_id": "The envelope's `id`.",
}
"""The Kafka headers the outbox sets on every event it publishes, and what each means."""

KEY_DESCRIPTION = (
    "The envelope's `subject`, UTF-8 encoded: the family id for family-scoped events, so one"
    " family's events stay in order on one partition. Events without a subject have no key."
)

_EXAMPLE_SOURCES = {
    "referral-received": "/earlyhelp/referral",
    "referral-rejected": "/earlyhelp/referral",
    "case-allocated": "/earlyhelp/allocation",
    "case-closed": "/earlyhelp/allocation",
    "team-capacity-changed": "/earlyhelp/allocation",
    "audit-assigned": "/earlyhelp/audit",
    "audit-completed": "/earlyhelp/audit",
    "performance-snapshot": "/earlyhelp/reporting",
    "family-erased": "/earlyhelp/referral",
}
_EXAMPLE_TIME = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
_FACT_TIMES = (
    "received_at",
    "allocated_at",
    "closed_at",
    "changed_at",
    "assigned_at",
    "completed_at",
    "generated_at",
    "erased_at",
)
"""Fields of an example's data whose time is the fact's, so its envelope's time, first found."""
_DEFS_REF = "#/$defs/"
_SCHEMAS_REF = "#/components/schemas/"


def asyncapi_document(
    *,
    title: str,
    description: str,
    sends: Iterable[str] | None = None,
    receives: Iterable[str] | None = None,
    registry: EventRegistry = PLATFORM_EVENTS,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as plain JSON-able data, of the application described.

    ``sends`` and ``receives`` are event types (topic names without namespace). Leave both
    out for the whole platform; give either for one service, which then sends and receives
    exactly those. An event type without a model in ``registry`` is refused.
    """
    types = registry.types
    whole_platform = sends is None and receives is None
    if whole_platform:
        sends = set(types) - PLATFORM_RECEIVES
        receives = set(types) & PLATFORM_RECEIVES
    actions = [("send", event_type) for event_type in sorted(set(sends or ()))]
    actions += [("receive", event_type) for event_type in sorted(set(receives or ()))]
    if unknown := sorted({event_type for _, event_type in actions} - set(types)):
        raise ValueError(f"no event model for {', '.join(unknown)} in the event registry")

    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type in sorted({event_type for _, event_type in actions}):
        model = types[event_type]
        channels[event_type] = _channel(model)
        messages[model.__name__] = _message(model, schemas)
    operations = {
        f"{action}{types[event_type].__name__}": _operation(action, types[event_type])
        for action, event_type in actions
    }
    # Whoever consumes a topic sends what it gives up on to the topic's dead letters.
    consumed = sorted(
        {topic.name for topic in CATALOGUE if topic.consumed_by}
        if whole_platform
        else set(receives or ())
    )
    if consumed:
        messages[NOTICE.__name__] = _notice_message(schemas)
    for event_type in consumed:
        address = dead_letter_topic(event_type)
        channels[address] = _dead_letter_channel(types[event_type])
        operations[f"send{types[event_type].__name__}DeadLetter"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_escape(address)}"},
            "summary": f"Publishes what it could not process of {event_type}.",
            "messages": [{"$ref": f"#/channels/{_escape(address)}/messages/{NOTICE.__name__}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version("earlyhelp"),
            "description": description,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            SERVER: {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "The platform's Kafka cluster, as configured by"
                " KAFKA_BOOTSTRAP_SERVERS (the embedded broker listens on localhost:9092)."
                " With EARLYHELP_TOPIC_NAMESPACE set, every topic name starts with it.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def platform_document(registry: EventRegistry = PLATFORM_EVENTS) -> dict[str, Any]:
    """The whole platform's document: the one checked in as ``shared/contracts/asyncapi.json``."""
    return asyncapi_document(
        title=PLATFORM_TITLE, description=PLATFORM_DESCRIPTION, registry=registry
    )


def _channel(model: type[EventData]) -> dict[str, Any]:
    return {
        "address": model.event_type,
        "title": _title(model),
        "description": _docstring(model),
        "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}},
    }


NOTICE = DeadLetterNotice


def _escape(address: str) -> str:
    """A channel's name as a JSON pointer token (a dot needs no escape; ``/`` and ``~`` do)."""
    return address.replace("~", "~0").replace("/", "~1")


def _dead_letter_channel(model: type[EventData]) -> dict[str, Any]:
    return {
        "address": dead_letter_topic(model.event_type),
        "title": f"{_title(model)} dead letters",
        "description": f"A notice for each `{model.event_type}` record a consumer gave up on:"
        " where it came from, why, its size and SHA-256, and the stored letter's id. Never"
        " the record's bytes: those stay sealed in the consumer's service, for administrators"
        " to replay or purge and for caseworkers to read with a reason.",
        "messages": {NOTICE.__name__: {"$ref": f"#/components/messages/{NOTICE.__name__}"}},
    }


def _notice_message(schemas: dict[str, Any]) -> dict[str, Any]:
    payload = NOTICE.model_json_schema(ref_template=_SCHEMAS_REF + "{model}")
    for name, definition in payload.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    return {
        "name": NOTICE.__name__,
        "title": "Dead-letter notice",
        "summary": inspect.cleandoc(NOTICE.__doc__ or "").split("\n\n")[0].replace("\n", " "),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "description": "Set on every notice.",
            "properties": {
                "content-type": {
                    "type": "string",
                    "const": "application/json",
                    "description": "The value's media type.",
                },
                "x-dead-letter-error": {
                    "type": "string",
                    "description": "The notice's `error_code`, to route without parsing.",
                },
            },
        },
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operation(action: str, model: type[EventData]) -> dict[str, Any]:
    verb = "Publishes" if action == "send" else "Consumes"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{model.event_type}"},
        "summary": f"{verb} {model.event_type}.",
        "messages": [{"$ref": f"#/channels/{model.event_type}/messages/{model.__name__}"}],
    }


def _message(model: type[EventData], schemas: dict[str, Any]) -> dict[str, Any]:
    """The envelope around ``model``, its schema's definitions moved into ``schemas``."""
    payload = event_schema(model)
    for name, definition in payload.pop("$defs", {}).items():
        definition = _rewrite_refs(definition)
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"two different schemas are both named {name!r}")
    examples = list(_examples(model))
    key: dict[str, Any] = {"type": "string", "description": KEY_DESCRIPTION}
    if subjects := sorted({example["payload"]["subject"] for example in examples} - {None}):
        key["examples"] = subjects
    return {
        "name": model.__name__,
        "title": _title(model),
        "summary": _docstring(model).split("\n\n")[0].replace("\n", " "),
        "description": f"A `{model.event_type}` event, data schema version"
        f" {model.schema_version}, in a CloudEvents 1.0 envelope.\n\n{_docstring(model)}",
        "contentType": CONTENT_TYPE,
        "correlationId": {
            "description": "Shared by every event that came from one submission.",
            "location": "$message.payload#/correlationid",
        },
        "headers": _headers(model),
        "payload": _rewrite_refs(payload),
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}},
        **({"examples": examples} if examples else {}),
    }


def _headers(model: type[EventData]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": meaning} for name, meaning in HEADERS.items()
    }
    properties["content-type"]["const"] = CONTENT_TYPE
    properties["ce_type"]["const"] = model.event_type
    return {
        "type": "object",
        "description": "Set by the platform on every event it publishes. Consumers need none"
        " of them (the value is self-describing), and partners may leave them out.",
        "properties": properties,
    }


def _examples(model: type[EventData]) -> Iterator[dict[str, Any]]:
    """Each example of the model's data, as a whole record: envelope, and the headers sent."""
    article = "An" if model.event_type[0] in "aeiou" else "A"
    for number, data in enumerate(model.model_json_schema().get("examples", []), start=1):
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"earlyhelp:{model.event_type}:{number}"))
        # One submission's events share a correlation id, as they do on the wire.
        submission = "/".join(str(data.get(name)) for name in ("partner_id", "submission_id"))
        event = CloudEvent[dict[str, Any]](
            id=event_id,
            source=_example_source(model, data),
            type=model.event_type,
            time=next((data[name] for name in _FACT_TIMES if name in data), _EXAMPLE_TIME),
            subject=model.model_validate(data).event_subject(),
            correlationid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"earlyhelp:{submission}")),
            schemaversion=model.schema_version,
            data=data,
        )
        yield {
            "name": f"{model.__name__}{number}",
            "summary": f"{article} {model.event_type} event ({number} of its examples).",
            "headers": {"content-type": CONTENT_TYPE, "ce_type": event.type, "ce_id": event.id},
            "payload": event.model_dump(mode="json"),
        }


def _example_source(model: type[EventData], data: dict[str, Any]) -> str:
    if model.event_type in PLATFORM_RECEIVES:
        return f"/partners/{data.get('partner_id', 'example')}"
    return _EXAMPLE_SOURCES.get(model.event_type, "/earlyhelp")


def _rewrite_refs(schema: Any) -> Any:
    """``schema`` with references to its own ``$defs`` pointing at the components instead."""
    if isinstance(schema, dict):
        return {
            key: value.replace(_DEFS_REF, _SCHEMAS_REF, 1)
            if key == "$ref" and isinstance(value, str) and value.startswith(_DEFS_REF)
            else _rewrite_refs(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rewrite_refs(item) for item in schema]
    return schema


def _docstring(model: type[EventData]) -> str:
    if not model.__doc__:
        raise ValueError(f"{model.__name__} needs a docstring: it is the topic's description")
    return inspect.cleandoc(model.__doc__)


def _title(model: type[EventData]) -> str:
    return model.event_type.replace("-", " ").capitalize()
