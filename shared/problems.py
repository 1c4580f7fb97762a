"""Errors in one shape in every service: RFC 9457 problem details, ``application/problem+json``.

A client reads ``status``, ``title`` and ``detail`` whatever went wrong, and ``problems`` (an
extension member) for the field-level reasons: a request's invalid parameters, a rejected
referral's reasons, an audit's refused grades. Other extension members carry what a client
needs to act on (``rejection_id``). FastAPI's own errors (validation, unknown routes, wrong
methods, ``HTTPException``) are answered in the same shape, with their headers kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


class FieldProblem(BaseModel):
    """One thing wrong with a request, and where."""

    field: str = Field(description="Dotted path of the field; empty for the request as a whole.")
    code: str = Field(description="What is wrong, as a stable code.")
    message: str = Field(description="What is wrong, for a person.")


class Problem(BaseModel):
    """An RFC 9457 problem: the error of every service, whatever its status."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="The kind of problem, for a person.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="This occurrence, for a person.")
    problems: list[FieldProblem] = Field(
        default_factory=list, description="The field-level reasons, when there are any."
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem(
    status: int,
    detail: str | None = None,
    *,
    problems: Iterable[FieldProblem] = (),
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """The problem response for ``status``; ``extensions`` become members of their own."""
    body = Problem(
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        problems=list(problems),
        **extensions,
    )
    return ProblemResponse(
        body.model_dump(mode="json"), status_code=status, headers=dict(headers or {})
    )


def validation_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    """FastAPI's validation errors, one problem each, named by the field's path within its
    part of the request (``month``, not ``body.month``)."""
    return [
        FieldProblem(
            field=_field_of(tuple(error.get("loc", ()))),
            code=str(error.get("type", "invalid")),
            message=str(error.get("msg", "invalid")),
        )
        for error in errors
    ]


def _field_of(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location[1:]) or ".".join(map(str, location))


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of ``app`` takes at the request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


ErrorHandler = Callable[[Request, Exception], Awaitable[ProblemResponse]]


def answer_with(status: int, *, headers: Mapping[str, str] | None = None) -> ErrorHandler:
    """An exception handler answering ``status`` with the error's message as the detail."""

    async def answer(_: Request, error: Exception) -> ProblemResponse:
        return problem(status, str(error), headers=headers)

    return answer


def install_problem_handlers(app: FastAPI) -> None:
    """Answer FastAPI's and Starlette's own errors, and any unhandled one, as problems."""

    async def http_error(request: Request, error: Exception) -> ProblemResponse:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette names the methods of the first route of the path; a client needs all.
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        return problem(error.status_code, str(error.detail), headers=headers)

    async def invalid_request(_: Request, error: Exception) -> ProblemResponse:
        assert isinstance(error, RequestValidationError)
        return problem(
            422,
            "the request is not valid: see problems",
            problems=validation_problems(error.errors()),
        )

    async def unexpected(request: Request, error: Exception) -> ProblemResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
        return problem(500, "an unexpected error; it is logged")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected)


StatusesOf = Callable[[str, str], Iterable[int]]
"""The problem statuses an operation (method, path template) can answer."""


def document_problems(app: FastAPI, statuses_of: StatusesOf | None = None) -> None:
    """Make ``app``'s OpenAPI document say, for every operation, each problem status it can
    answer, as ``application/problem+json``: FastAPI's own 400 and 422, 404 for an unknown
    id in the path, the statuses a route declares, and those ``statuses_of`` gives (the
    access policy's 401 and 403)."""
    sources: list[StatusesOf] = app.state.__dict__.setdefault("problem_statuses", [])
    if statuses_of is not None:
        sources.append(statuses_of)
    if getattr(app.state, "problems_documented", False):
        return
    app.state.problems_documented = True
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        _, definitions = models_json_schema(
            [(Problem, "validation")], ref_template="#/components/schemas/{model}"
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(definitions["$defs"])
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                responses = operation.setdefault("responses", {})
                statuses = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
                if "{" in path:
                    statuses.add(404)  # no such id
                if "requestBody" in operation:
                    statuses.add(400)  # a body that is not JSON at all
                for source in sources:
                    statuses.update(source(method.upper(), path))
                for status in sorted(statuses):
                    responses[str(status)] = {
                        "description": responses.get(str(status), {}).get("description")
                        or HTTPStatus(status).phrase,
                        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
                    }
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
