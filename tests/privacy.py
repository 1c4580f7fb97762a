"""What counts as a family's personal data, for tests that prove where it is not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from shared.mongo import MongoClient

PERSONAL_FIELD = re.compile(
    r"(^|_)(name|given_name|family_name|date_of_birth|dob|upn|nhs_number|address|postcode"
    r"|email|phone)($|_)",
    re.IGNORECASE,
)
STAFF_REGISTERS = {"teams", "workers", "auditors"}
"""Collections about staff and teams, whose names are not a family's personal data."""


def personal_fields(node: Any, path: str = "") -> Iterator[str]:
    """Every key under ``node`` (a document or a JSON schema) named like personal data."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if PERSONAL_FIELD.search(str(key)):
                yield here
            yield from personal_fields(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from personal_fields(value, f"{path}.{index}")


def schema_fields(schema: Any, path: str = "") -> Iterator[str]:
    """Every property a JSON schema names, with its path (``$defs`` included)."""
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            here = f"{path}.{name}" if path else name
            yield here
            yield from schema_fields(sub, here)
        for key in ("$defs", "definitions"):
            for name, sub in (schema.get(key) or {}).items():
                yield from schema_fields(sub, f"{key}.{name}")
        for key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            value = schema.get(key)
            for sub in value if isinstance(value, list) else [value]:
                yield from schema_fields(sub, path)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str | bytes):
        yield node.decode(errors="replace") if isinstance(node, bytes) else node


async def personal_data_found(client: MongoClient, database: str, values: set[str]) -> list[str]:
    """Where ``database`` holds a personal field or any of ``values``: empty when nowhere."""
    db = client[database]
    found: list[str] = []
    for collection in await db.list_collection_names():
        async for document in db[collection].find({}):
            if collection not in STAFF_REGISTERS:
                found += [f"{collection}: key {key}" for key in personal_fields(document)]
            found += [
                f"{collection}: value {value!r}"
                for text in strings(document)
                for value in values
                if value.casefold() in text.casefold()
            ]
    return found
