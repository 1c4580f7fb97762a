"""Checked-in JSON schemas of every event, envelope and data: the services' published contract.

The files under ``schemas/`` are what consumers were built against. Comparing them with the
models (``python -m shared.contracts``, the contract tests) stops an incompatible change from
shipping under an existing schema version, and shows additive changes in review as a diff.
``asyncapi.json`` is the platform's AsyncAPI document built from the same models
(``shared.contracts.asyncapi``), checked in beside them so partners can read it unrun.
``openapi/`` holds each service's HTTP contract, written by ``services.openapi`` (the
services, not this package, know their apps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.contracts.compatibility import breaking_changes
from shared.events import PLATFORM_EVENTS, CloudEvent, EventData, EventRegistry

SCHEMA_DIR = Path(__file__).parent / "schemas"
ASYNCAPI_PATH = Path(__file__).parent / "asyncapi.json"
OPENAPI_DIR = Path(__file__).parent / "openapi"

__all__ = [
    "ASYNCAPI_PATH",
    "OPENAPI_DIR",
    "SCHEMA_DIR",
    "breaking_changes",
    "check",
    "current_asyncapi",
    "current_schemas",
    "event_schema",
    "incompatibilities",
    "load_schema",
    "render",
    "schema_path",
    "write_schemas",
]


def event_schema(model: type[EventData]) -> dict[str, Any]:
    """The schema of ``CloudEvent[model]``, so the contract covers the envelope as well."""
    envelope: type[CloudEvent[Any]] = CloudEvent[model]  # type: ignore[valid-type]
    return envelope.model_json_schema()


def schema_path(model: type[EventData]) -> Path:
    """One file per event type and schema version: older versions stay as upcasting history."""
    return SCHEMA_DIR / f"{model.event_type}.v{model.schema_version}.json"


def current_schemas(registry: EventRegistry = PLATFORM_EVENTS) -> dict[Path, dict[str, Any]]:
    return {schema_path(model): event_schema(model) for model in registry.types.values()}


def current_asyncapi(registry: EventRegistry = PLATFORM_EVENTS) -> dict[str, Any]:
    """The platform's AsyncAPI document, as ``ASYNCAPI_PATH`` should hold it."""
    # Imported here: the document is built from ``event_schema`` above.
    from shared.contracts.asyncapi import platform_document

    return platform_document(registry)


def render(schema: dict[str, Any]) -> str:
    """Stable text, so regenerating an unchanged schema leaves no diff."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def load_schema(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def write_schemas(registry: EventRegistry = PLATFORM_EVENTS) -> list[Path]:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for path, schema in current_schemas(registry).items():
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    ASYNCAPI_PATH.write_text(render(current_asyncapi(registry)), encoding="utf-8")
    return [*written, ASYNCAPI_PATH]


def incompatibilities(registry: EventRegistry = PLATFORM_EVENTS) -> list[str]:
    """Breaking changes against the checked-in schema of the same version, and missing upcasters.

    Rewriting the files cannot fix these: the change needs a new schema version instead.
    """
    problems: list[str] = []
    for model in registry.types.values():
        path = schema_path(model)
        checked_in = load_schema(path)
        changes = [] if checked_in is None else breaking_changes(checked_in, event_schema(model))
        if changes:
            listed = "".join(f"\n  - {change}" for change in changes)
            problems.append(
                f"{path.name}: {model.__name__} is incompatible with its checked-in schema:"
                f"{listed}\n  bump {model.__name__}.schema_version to"
                f" {model.schema_version + 1} and add an upcaster for"
                f" ({model.event_type!r}, {model.schema_version}) to PLATFORM_EVENTS in"
                " shared/events/__init__.py, then run `make schemas`"
            )
        problems.extend(
            f"{model.event_type}: no upcaster for version {version} in the registry"
            " (PLATFORM_EVENTS, shared/events/__init__.py), so older events cannot be read"
            for version in range(1, model.schema_version)
            if (model.event_type, version) not in registry.upcasters
        )
    return problems


def check(registry: EventRegistry = PLATFORM_EVENTS) -> list[str]:
    """Everything wrong with the checked-in contracts; empty when they are up to date."""
    problems = incompatibilities(registry)
    for path, schema in current_schemas(registry).items():
        checked_in = load_schema(path)
        if checked_in is None:
            problems.append(f"{path.name}: missing; run `make schemas` to write it")
        elif checked_in != schema and not breaking_changes(checked_in, schema):
            problems.append(f"{path.name}: out of date; run `make schemas` to refresh it")
    checked_in_asyncapi = load_schema(ASYNCAPI_PATH)
    if checked_in_asyncapi is None:
        problems.append(f"{ASYNCAPI_PATH.name}: missing; run `make schemas` to write it")
    elif checked_in_asyncapi != current_asyncapi(registry):
        problems.append(f"{ASYNCAPI_PATH.name}: out of date; run `make schemas` to refresh it")
    return problems
