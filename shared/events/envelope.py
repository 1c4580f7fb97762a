"""The CloudEvents 1.0 envelope every event travels in, and the base of every event's data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from pydantic.config import JsonDict

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/cloudevents+json"

EXAMPLES_DIR = Path(__file__).parent / "examples"
"""``<event type>.json`` per event: a list of example ``data``, shown in the AsyncAPI document
and validated by the tests, so what partners read is what the services accept."""


class EventData(BaseModel):
    """The ``data`` of an event. Readers ignore fields they do not know (tolerant reader)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def event_subject(self) -> str | None:
        """The envelope's subject and the Kafka key: the family for family-scoped events."""
        return getattr(self, "family_id", None)


DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope in structured JSON mode.

    ``source`` + ``id`` identify an event uniquely and are the consumers' idempotency key.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = Field(default=SPEC_VERSION, description="CloudEvents version.")
    id: str = Field(min_length=1, description="Unique within the source.")
    source: str = Field(min_length=1, description="URI reference of the producer, /earlyhelp/x.")
    type: str = Field(min_length=1, description="The event type, equal to its topic name.")
    time: AwareDatetime = Field(description="When the fact happened, timezone-aware.")
    subject: str | None = Field(default=None, description="The family id when family-scoped.")
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of ``data``."
    )
    correlationid: str = Field(
        min_length=1, description="Links every event that came from one submission."
    )
    schemaversion: int = Field(ge=1, description="Version of the data schema for this type.")
    data: DataT = Field(description="The event's own fields, as its type's schema defines.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(serialize_as_any=True).encode()


RawEvent = CloudEvent[dict[str, Any]]


def envelope(
    data: EventData,
    *,
    event_id: str,
    source: str,
    time: datetime,
    correlation_id: str,
) -> CloudEvent[EventData]:
    """Wrap event data in its envelope; the subject is the family when family-scoped."""
    return CloudEvent[EventData](
        id=event_id,
        source=source,
        type=data.event_type,
        time=time,
        subject=data.event_subject(),
        correlationid=correlation_id,
        schemaversion=data.schema_version,
        data=data,
    )


def examples_of(event_type: str) -> JsonDict:
    """The event's examples from ``EXAMPLES_DIR``, as a model's ``json_schema_extra``."""
    path = EXAMPLES_DIR / f"{event_type}.json"
    examples: list[JsonValue] = json.loads(path.read_text(encoding="utf-8"))
    return {"examples": examples}
