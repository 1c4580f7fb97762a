"""The example events under ``shared/events/examples``: one file per registered event type,
each example valid data that survives the wire unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.events import PLATFORM_EVENTS, envelope
from shared.events.envelope import EXAMPLES_DIR


def examples(event_type: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        (EXAMPLES_DIR / f"{event_type}.json").read_text(encoding="utf-8")
    )
    return found


def test_every_registered_event_type_has_an_example_file_and_no_file_is_left_over() -> None:
    files = {path.name.removesuffix(".json") for path in EXAMPLES_DIR.glob("*.json")}

    assert files == set(PLATFORM_EVENTS.types)


@pytest.mark.parametrize("event_type", sorted(PLATFORM_EVENTS.types))
def test_every_example_decodes_from_its_envelope_as_the_data_it_was(event_type: str) -> None:
    model = PLATFORM_EVENTS.model(event_type)
    found = examples(event_type)
    assert found, f"{event_type}.json holds no examples"

    for number, example in enumerate(found):
        data = model.model_validate(example)
        raw = envelope(
            data,
            event_id=f"{event_type}-{number}",
            source="/earlyhelp/examples",
            time=datetime(2026, 11, 20, 10, 5, tzinfo=UTC),
            correlation_id=f"example-{number}",
        ).to_bytes()

        event, decoded = PLATFORM_EVENTS.decode(raw, model)

        assert decoded == data
        assert (event.type, event.schemaversion) == (event_type, model.schema_version)
        assert event.subject == data.event_subject()


@pytest.mark.parametrize("event_type", sorted(PLATFORM_EVENTS.types))
def test_the_model_s_schema_shows_its_examples(event_type: str) -> None:
    schema = PLATFORM_EVENTS.model(event_type).model_json_schema()

    assert schema["examples"] == examples(event_type)
