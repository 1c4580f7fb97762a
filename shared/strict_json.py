"""JSON from untrusted bytes, read strictly and once, with the reason when it cannot be.

Every record a consumer takes and every body a partner posts is read here: what cannot be
stored, hashed or meant one way (NaN, a key given twice, a lone surrogate) is refused with a
code the answer can carry, as is anything too large or too deep to read safely.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_RECORD_BYTES = 1024 * 1024
"""The broker's default record limit: nothing larger can have come from the log."""

MAX_NESTING = 64
"""Deepest JSON nesting read. A submission nests four levels; Python's parser fails near
1000, so anything deeper is refused before it can exhaust the stack."""


class Unreadable(ValueError):
    """Bytes that will not be read as JSON, with the reason code to answer with:
    ``too_large``, ``too_deep`` or ``unreadable``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""How a surrogate gets into decoded JSON: UTF-8 cannot carry one, only an escape can."""


def read_json(raw: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """Strict JSON from untrusted bytes, or ``Unreadable`` saying why not.

    Stricter than ``json.loads``: UTF-8 only; no NaN or Infinity; no key twice in an object
    (which value would a person have meant?); no lone surrogate escapes (they cannot be
    stored or hashed); at most ``MAX_NESTING`` levels; and nothing over ``max_bytes``.
    """
    if len(raw) > max_bytes:
        raise Unreadable(
            "too_large", f"{len(raw)} bytes is over the limit of {max_bytes} bytes a submission"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unreadable("unreadable", f"not UTF-8: {error}") from error
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object_without_repeats,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except RecursionError as error:
        raise Unreadable("too_deep", f"nested deeper than {MAX_NESTING} levels") from error
    except Unreadable:
        raise
    except ValueError as error:  # JSONDecodeError, and ints over Python's 4300 digits
        raise Unreadable("unreadable", f"not JSON: {error}") from error
    # Walked only when it might be needed: nesting deeper than the brackets in the text
    # allow, or a surrogate without its escape, cannot be there.
    if text.count("{") + text.count("[") > MAX_NESTING or _SURROGATE_ESCAPE.search(text):
        _check_shape(document)
    return document


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Unreadable("unreadable", f"not JSON we accept: key {key[:100]!r} repeated")
            seen.add(key)
    return document


def _refuse_constant(name: str) -> Any:
    raise Unreadable("unreadable", f"not JSON: {name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise Unreadable("unreadable", f"not JSON we accept: {literal[:40]} is out of range")
    return value


def _check_shape(document: Any) -> None:
    """Depth and lone surrogates, walked without recursion."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            strings: list[str] = [value]
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise Unreadable("too_deep", f"nested deeper than {MAX_NESTING} levels")
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
            strings = list(value) if isinstance(value, dict) else []
        else:
            continue
        if any(_LONE_SURROGATE.search(text) for text in strings):
            raise Unreadable("unreadable", "not JSON we accept: a string holds a lone surrogate")
