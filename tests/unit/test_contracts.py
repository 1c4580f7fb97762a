"""The checked-in event schemas match the models, and an incompatible change cannot slip in."""

from __future__ import annotations

import copy
import json
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field, create_model

from shared.contracts import (
    check,
    event_schema,
    load_schema,
    render,
    schema_path,
)
from shared.contracts.compatibility import breaking_changes
from shared.events import (
    PLATFORM_EVENTS,
    CaseAllocated,
    CloudEvent,
    EventData,
    HeadlineOutcome,
    LevelOfNeed,
    ReferralReceived,
    ScreeningDecision,
    envelope,
)

Schema = dict[str, Any]
MODELS = sorted(PLATFORM_EVENTS.types.values(), key=lambda model: model.event_type)


def checked_in(model: type[EventData]) -> Schema:
    schema = load_schema(schema_path(model))
    assert schema is not None, f"{schema_path(model).name} is missing: run `make schemas`"
    return schema


def case_allocated() -> Schema:
    """A deep copy of the real checked-in schema, free to mutate."""
    return copy.deepcopy(checked_in(CaseAllocated))


def data_of(schema: Schema) -> Schema:
    definition: Schema = schema["$defs"]["CaseAllocated"]
    return definition


# ---------------------------------------------------------------------------------------------
# The checked-in files


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.event_type)
def test_checked_in_schema_is_current(model: type[EventData]) -> None:
    path = schema_path(model)
    assert path.exists(), f"{path.name} is missing: run `make schemas`"
    assert checked_in(model) == event_schema(model), f"{path.name} is stale: run `make schemas`"
    assert path.read_text(encoding="utf-8") == render(event_schema(model)), (
        f"{path.name} is not in canonical form: run `make schemas`"
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.event_type)
def test_no_breaking_changes_against_checked_in(model: type[EventData]) -> None:
    changes = breaking_changes(checked_in(model), event_schema(model))
    assert changes == [], (
        f"{model.__name__} breaks its v{model.schema_version} contract: {changes}; bump"
        " schema_version and add an upcaster to PLATFORM_EVENTS in shared/events/__init__.py"
    )


def test_contract_check_passes() -> None:
    assert check() == []


# ---------------------------------------------------------------------------------------------
# breaking_changes: mutations of a real schema


def test_identical_schemas_are_compatible() -> None:
    assert breaking_changes(case_allocated(), case_allocated()) == []


def test_removed_property_is_breaking() -> None:
    new = case_allocated()
    del data_of(new)["properties"]["district"]
    data_of(new)["required"].remove("district")
    assert breaking_changes(case_allocated(), new) == ["data.district: property removed"]


def test_optional_property_made_required_is_breaking() -> None:
    new = case_allocated()
    data_of(new)["required"].append("social_care_case_reference")
    assert breaking_changes(case_allocated(), new) == [
        "data.social_care_case_reference: newly required"
    ]


def test_added_required_property_is_breaking() -> None:
    new = case_allocated()
    data_of(new)["properties"]["priority"] = {"type": "integer"}
    data_of(new)["required"].append("priority")
    assert breaking_changes(case_allocated(), new) == ["data.priority: new property is required"]


def test_type_change_is_breaking() -> None:
    new = case_allocated()
    data_of(new)["properties"]["district"]["type"] = "integer"
    assert breaking_changes(case_allocated(), new) == [
        "data.district: type changed from string to integer"
    ]


def test_format_change_is_breaking() -> None:
    new = case_allocated()
    data_of(new)["properties"]["allocated_at"]["format"] = "date"
    assert breaking_changes(case_allocated(), new) == [
        "data.allocated_at: type changed from string (date-time) to string (date)"
    ]


def test_nullable_narrowed_is_breaking() -> None:
    new = case_allocated()
    team = data_of(new)["properties"]["team_id"]
    del team["anyOf"]
    team["type"] = "string"
    assert breaking_changes(case_allocated(), new) == [
        "data.team_id: type changed from null | string to string"
    ]


def test_removed_enum_value_in_referenced_definition_is_breaking() -> None:
    new = case_allocated()
    new["$defs"]["AllocationKind"]["enum"].remove("co_working")
    assert breaking_changes(case_allocated(), new) == ["data.kind: enum value 'co_working' removed"]


def test_const_change_is_breaking() -> None:
    new = case_allocated()
    new["properties"]["specversion"]["const"] = "2.0"
    assert breaking_changes(case_allocated(), new) == [
        "specversion: const changed from '1.0' to '2.0'"
    ]


def test_nested_change_inside_referenced_object_is_breaking() -> None:
    old = case_allocated()
    data_of(old)["properties"]["team"] = {"$ref": "#/$defs/Team"}
    old["$defs"]["Team"] = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "manager": {"type": "string"}},
        "required": ["id"],
    }
    new = copy.deepcopy(old)
    del new["$defs"]["Team"]["properties"]["manager"]
    new["$defs"]["Team"]["properties"]["id"]["type"] = "integer"
    assert breaking_changes(old, new) == [
        "data.team.id: type changed from string to integer",
        "data.team.manager: property removed",
    ]


def test_array_item_type_change_is_breaking() -> None:
    old = case_allocated()
    data_of(old)["properties"]["notes"] = {"type": "array", "items": {"type": "string"}}
    new = copy.deepcopy(old)
    data_of(new)["properties"]["notes"]["items"] = {"type": "integer"}
    assert breaking_changes(old, new) == ["data.notes[]: type changed from string to integer"]


def test_enum_in_array_items_is_checked() -> None:
    schema = event_schema(ReferralReceived)
    narrowed = copy.deepcopy(schema)
    narrowed["$defs"]["HeadlineOutcome"]["enum"].remove("housing")
    assert breaking_changes(schema, narrowed) == ["data.needs[]: enum value 'housing' removed"]


def test_added_optional_property_is_compatible() -> None:
    new = case_allocated()
    data_of(new)["properties"]["priority"] = {"type": "integer", "default": 0}
    assert breaking_changes(case_allocated(), new) == []


def test_added_enum_value_is_compatible() -> None:
    new = case_allocated()
    new["$defs"]["AllocationKind"]["enum"].append("emergency")
    assert breaking_changes(case_allocated(), new) == []


def test_description_change_is_compatible() -> None:
    new = case_allocated()
    data_of(new)["properties"]["district"]["description"] = "The district, reworded."
    new["$defs"]["AllocationKind"]["description"] = "Reworded."
    assert breaking_changes(case_allocated(), new) == []


# ---------------------------------------------------------------------------------------------
# breaking_changes: schemas of derived models


def test_model_without_a_field_is_breaking() -> None:
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in CaseAllocated.model_fields.items()
        if name != "worker_id"
    }
    narrower = create_model("CaseAllocated", __base__=EventData, **fields)
    assert breaking_changes(checked_in(CaseAllocated), event_schema(narrower)) == [
        "data.worker_id: property removed"
    ]


def test_model_with_a_field_made_required_is_breaking() -> None:
    class StricterCaseAllocated(CaseAllocated):
        social_care_case_reference: str | None = Field(description="Now always sent.")

    assert breaking_changes(checked_in(CaseAllocated), event_schema(StricterCaseAllocated)) == [
        "data.social_care_case_reference: newly required"
    ]


def test_model_with_an_added_optional_field_is_compatible() -> None:
    class WiderCaseAllocated(CaseAllocated):
        priority: int = Field(default=0, description="Added later, optional.")

    assert breaking_changes(checked_in(CaseAllocated), event_schema(WiderCaseAllocated)) == []


# ---------------------------------------------------------------------------------------------
# A real event against its checked-in schema


def test_serialised_event_round_trips_against_checked_in_schema() -> None:
    received = ReferralReceived(
        referral_id="ref-1",
        family_id="fam-1",
        partner_id="northvale-primary",
        submission_id="np-2026-0001",
        route="school",
        referral_source="1A",
        district="northvale",
        level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        decision=ScreeningDecision.EARLY_HELP,
        needs=[HeadlineOutcome.EDUCATION, HeadlineOutcome.FAMILY_RELATIONSHIPS],
        child_count=2,
        received_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )
    raw = envelope(
        received,
        event_id="evt-1",
        source="/earlyhelp/referral",
        time=datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC),
        correlation_id="corr-1",
    ).to_bytes()

    schema = checked_in(ReferralReceived)
    document = json.loads(raw)
    data_schema = schema["$defs"]["ReferralReceived"]
    assert set(schema["required"]) <= document.keys() <= schema["properties"].keys()
    assert set(data_schema["required"]) <= document["data"].keys()
    assert document["data"].keys() <= data_schema["properties"].keys()

    event, decoded = PLATFORM_EVENTS.decode(raw, ReferralReceived)
    assert event.type == ReferralReceived.event_type
    assert event.schemaversion == ReferralReceived.schema_version
    assert decoded == received


def _models_within(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for candidate in (field.annotation, *_nested_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                _models_within(candidate, seen)
    return seen


def _nested_args(annotation: object) -> list[object]:
    found: list[object] = []
    for argument in typing.get_args(annotation):
        found += [argument, *_nested_args(argument)]
    return found


@pytest.mark.parametrize("event_type", sorted(PLATFORM_EVENTS.types))
def test_every_field_of_every_event_is_documented(event_type: str) -> None:
    models = _models_within(CloudEvent, set()) | _models_within(
        PLATFORM_EVENTS.model(event_type), set()
    )
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []
