"""Events from bytes: strict JSON, then the envelope, then the data of a known event type,
lifted from older schema versions by upcasters.

Whatever is wrong with the bytes, the answer is one ``UndecodableEvent`` whose code says
why, never another exception: a consumer dead-letters the record, a front door answers with
the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.events.envelope import EventData, RawEvent
from shared.strict_json import MAX_RECORD_BYTES, Unreadable, read_json

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Lifts one schema version's data of an event type to the next version's."""

EventT = TypeVar("EventT", bound=EventData)


class UndecodableEvent(ValueError):
    """The bytes are not an event this reader can read: retrying will not help.

    ``code`` says why: ``too_large``, ``too_deep`` or ``unreadable`` (not JSON the strict
    reader accepts), ``not_an_envelope``, ``unexpected_event_type``,
    ``unsupported_schema_version`` (newer than the reader's model), ``no_upcaster`` or
    ``invalid_data``. ``validation`` keeps pydantic's error when validation failed, so a
    caller can list each field's reason.
    """

    def __init__(
        self, code: str, message: str, *, validation: ValidationError | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.validation = validation


def read_envelope(raw: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> RawEvent:
    """The envelope only, its ``data`` left as a dict for ``EventRegistry.read_data``."""
    try:
        document = read_json(raw, max_bytes=max_bytes)
    except Unreadable as error:
        raise UndecodableEvent(error.code, str(error)) from error
    try:
        return RawEvent.model_validate(document)
    except ValidationError as error:
        raise UndecodableEvent(
            "not_an_envelope",
            f"not a CloudEvents 1.0 envelope: {_summary(error)}",
            validation=error,
        ) from error


class EventRegistry:
    """The event types a reader knows, each with its model, and the upcasters that lift
    older schema versions of their data to the models' versions.

    Never changed once made: ``with_model`` and ``with_upcasters`` give changed copies, so a
    test or a tool reads with its own models while everything else reads with the platform's.
    """

    def __init__(
        self,
        models: Iterable[type[EventData]],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        types: dict[str, type[EventData]] = {}
        for model in models:
            if (known := types.get(model.event_type)) is not None:
                raise ValueError(
                    f"{known.__name__} and {model.__name__} are both {model.event_type!r}"
                )
            types[model.event_type] = model
        self._types = MappingProxyType(types)
        self._upcasters = MappingProxyType(dict(upcasters or {}))

    @property
    def types(self) -> Mapping[str, type[EventData]]:
        """Each event type's model, in the order given."""
        return self._types

    @property
    def upcasters(self) -> Mapping[tuple[str, int], Upcaster]:
        """``(event type, version)`` -> the function lifting that version's data to the next."""
        return self._upcasters

    def model(self, event_type: str) -> type[EventData]:
        try:
            return self._types[event_type]
        except KeyError:
            raise UndecodableEvent(
                "unexpected_event_type", f"no model for event type {event_type[:100]!r}"
            ) from None

    def read_data(self, event: RawEvent, model: type[EventT]) -> EventT:
        """Validate an envelope's data as ``model``, upcasting an older schema version first.

        The envelope is left as it was: upcasters work on a copy of its data.
        """
        if event.type != model.event_type:
            raise UndecodableEvent(
                "unexpected_event_type",
                f"expected type {model.event_type!r}, got {event.type[:100]!r}",
            )
        version, data = event.schemaversion, dict(event.data)
        if version > model.schema_version:
            raise UndecodableEvent(
                "unsupported_schema_version",
                f"{event.type} schema version {version} is newer than {model.schema_version}",
            )
        while version < model.schema_version:
            upcast = self._upcasters.get((event.type, version))
            if upcast is None:
                raise UndecodableEvent(
                    "no_upcaster", f"no upcaster for {event.type} version {version}"
                )
            data, version = upcast(data), version + 1
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise UndecodableEvent(
                "invalid_data", f"invalid {event.type} data: {_summary(error)}", validation=error
            ) from error

    def decode(
        self, raw: bytes, model: type[EventT], *, max_bytes: int = MAX_RECORD_BYTES
    ) -> tuple[RawEvent, EventT]:
        """The envelope and its data as ``model``, from a record's bytes."""
        event = read_envelope(raw, max_bytes=max_bytes)
        return event, self.read_data(event, model)

    def with_model(self, model: type[EventData]) -> EventRegistry:
        """A copy that reads ``model``'s event type with ``model``, added or in place of the
        model it had."""
        return EventRegistry({**self._types, model.event_type: model}.values(), self._upcasters)

    def with_upcasters(self, upcasters: Mapping[tuple[str, int], Upcaster]) -> EventRegistry:
        """A copy with ``upcasters`` instead of these."""
        return EventRegistry(self._types.values(), upcasters)


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()
    )
