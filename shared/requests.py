"""Request bodies read as their JSON Schema says.

Pydantic's lax mode takes ``"1"`` for an integer and ``"true"`` for a boolean, so a body the
OpenAPI document calls invalid would be accepted; its strict mode refuses ``2.0`` for an
integer, which JSON Schema calls valid, and text for an enum. A ``RequestBody`` refuses text
and booleans where a number is declared, and anything but a boolean where one is, and
otherwise validates as usual, each refusal naming its field.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, model_validator


class _Refused:
    """Stands in for a value of the wrong JSON type, so the field's own check names it."""

    def __repr__(self) -> str:
        return "a value of another JSON type"


_REFUSED = _Refused()


def _scalar_of(annotation: Any) -> type | None:
    """``int``, ``float`` or ``bool`` when the field is one (or one or None)."""
    if annotation in (int, float, bool):
        return typing.cast(type, annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [arg for arg in typing.get_args(annotation) if not _is_none(arg)]
        if len(kinds) == 1 and kinds[0] in (int, float, bool):
            return typing.cast(type, kinds[0])
    return None


def _is_none(annotation: Any) -> bool:
    """``None``, also when annotated (``SkipJsonSchema[None]``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation is type(None)


def _right_type(kind: type, value: Any) -> bool:
    if value is None:
        return True
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


class RequestBody(BaseModel):
    """The base of the JSON request bodies, so the document and the service agree."""

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        for name, field in cls.model_fields.items():
            kind = _scalar_of(field.annotation)
            key = field.alias or name
            if kind is not None and key in checked and not _right_type(kind, checked[key]):
                checked[key] = _REFUSED
        return checked


async def one_value_each(request: Request) -> None:
    """Refuse a query parameter given twice where the operation takes one value: FastAPI
    would quietly read the last, so ``?month=2026-10&month=2026-11`` would mean November."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    problems = [
        {
            "loc": ("query", parameter.alias),
            "type": "repeated",
            "msg": f"give {parameter.alias} once",
            "input": request.query_params.getlist(parameter.alias),
        }
        for parameter in _query_parameters(dependant)
        if not _takes_many(parameter.field_info.annotation)
        and len(request.query_params.getlist(parameter.alias)) > 1
    ]
    if problems:
        raise RequestValidationError(problems)


def _takes_many(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, set, tuple, frozenset):
        return True
    return any(_takes_many(argument) for argument in typing.get_args(annotation))


def _query_parameters(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += _query_parameters(sub)
    return found
