"""Breaking-change detection between two JSON schemas of one event, as pydantic emits them.

A change is breaking when a consumer on the new schema may fail on data written under the old
one, or a consumer still on the old schema may fail on data written under the new one. What a
tolerant reader shrugs off (an optional property, an enum value it has not seen, new wording)
is not breaking, so producers can add to an event without a new schema version.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every incompatibility from ``old`` to ``new``, each prefixed with its dotted path."""
    walk = _Walk(old, new)
    walk.compare(old, new, "")
    return walk.changes


class _Walk:
    """Both roots, so each side's ``$ref`` resolves, and the definition pairs already compared."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root, self.new_root = old_root, new_root
        self.seen: set[tuple[int, int]] = set()
        self.changes: list[str] = []

    def report(self, path: str, change: str) -> None:
        self.changes.append(f"{path or '(root)'}: {change}")

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old_branches, new_branches = _branches(old, self.old_root), _branches(new, self.new_root)
        old_types, new_types = _types(old_branches), _types(new_branches)
        if old_types != new_types:
            self.report(path, f"type changed from {_show(old_types)} to {_show(new_types)}")
        self.compare_values(_values(old_branches), _values(new_branches), path)
        old_object, new_object = _only(old_branches, "object"), _only(new_branches, "object")
        if old_object is not None and new_object is not None:
            self.compare_objects(old_object, new_object, path)
        old_array, new_array = _only(old_branches, "array"), _only(new_branches, "array")
        if old_array is not None and new_array is not None:
            old_items, new_items = old_array.get("items"), new_array.get("items")
            if isinstance(old_items, dict) and isinstance(new_items, dict):
                self.compare(old_items, new_items, f"{path}[]")

    def compare_values(self, old: list[Any] | None, new: list[Any] | None, path: str) -> None:
        if new is None:
            return
        if old is None:
            self.report(path, f"now restricted to {new!r}")
        elif len(old) == 1 and len(new) == 1 and old != new:
            self.report(path, f"const changed from {old[0]!r} to {new[0]!r}")
        else:
            for value in old:
                if value is not None and value not in new:
                    self.report(path, f"enum value {value!r} removed")

    def compare_objects(self, old: Schema, new: Schema, path: str) -> None:
        if (id(old), id(new)) in self.seen:
            return
        self.seen.add((id(old), id(new)))
        old_properties: Schema = old.get("properties", {})
        new_properties: Schema = new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for name, old_property in old_properties.items():
            child = f"{path}.{name}" if path else name
            if name not in new_properties:
                self.report(child, "property removed")
                continue
            if name in new_required and name not in old_required:
                self.report(child, "newly required")
            self.compare(old_property, new_properties[name], child)
        for name in sorted(new_required - old_properties.keys()):
            self.report(f"{path}.{name}" if path else name, "new property is required")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.compare(old_extra, new_extra, f"{path}{{}}")


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        reference: str = node["$ref"]
        if not reference.startswith("#/"):
            raise ValueError(f"only local references are supported, got {reference!r}")
        target: Any = root
        for part in reference[2:].split("/"):
            target = target[part]
        node = target
    return node


def _branches(node: Schema, root: Schema) -> list[Schema]:
    """The alternatives a value may match: ``anyOf``/``oneOf`` flattened, references resolved."""
    node = _resolve(node, root)
    alternatives = node.get("anyOf", node.get("oneOf"))
    if alternatives is None:
        return [node]
    return [branch for option in alternatives for branch in _branches(option, root)]


def _types(branches: list[Schema]) -> set[str]:
    """JSON types the branches admit, each qualified by its ``format`` (``string (date-time)``)."""
    types: set[str] = set()
    for branch in branches:
        declared = branch.get("type")
        if declared is None and "const" in branch:
            declared = _json_type(branch["const"])
        elif declared is None and "enum" in branch:
            declared = sorted({_json_type(value) for value in branch["enum"]})
        kinds = [declared] if isinstance(declared, str) else declared or ["any"]
        for kind in kinds:
            types.add(f"{kind} ({branch['format']})" if "format" in branch else kind)
    return types


def _values(branches: list[Schema]) -> list[Any] | None:
    """The values allowed by ``enum``/``const`` across branches, or None when unrestricted."""
    values: list[Any] = []
    for branch in branches:
        if "enum" in branch:
            values.extend(branch["enum"])
        elif "const" in branch:
            values.append(branch["const"])
        elif branch.get("type") == "null":
            values.append(None)
        else:
            return None
    return values


def _only(branches: list[Schema], kind: str) -> Schema | None:
    matches = [branch for branch in branches if kind in _types([branch])]
    return matches[0] if len(matches) == 1 else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next(name for python_type, name in _JSON_TYPES if isinstance(value, python_type))


def _show(types: set[str]) -> str:
    return " | ".join(sorted(types)) or "nothing"
