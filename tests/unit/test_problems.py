"""One error shape: every error a service answers is an RFC 9457 problem, and its OpenAPI
document says so for each status an operation can answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel

from shared.problems import (
    PROBLEM_JSON,
    PROBLEM_REF,
    answer_with,
    document_problems,
    install_problem_handlers,
)
from shared.requests import one_value_each


class Busy(Exception):
    pass


class Draw(BaseModel):
    month: str
    count: int


def problem_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    document_problems(app, lambda method, path: {401} if path == "/draws" else set())
    app.add_exception_handler(Busy, answer_with(503, headers={"Retry-After": "1"}))

    @app.post("/draws", responses={409: {"description": "Drawn already"}})
    async def draw(request: Draw) -> dict[str, str]:
        if request.count == 0:
            raise HTTPException(409, "drawn already", headers={"X-Drawn": request.month})
        if request.count == 1:
            raise Busy("others drew at the same time")
        raise RuntimeError("a bug")

    @app.get("/draws")
    async def draws() -> list[str]:
        return []

    @app.get("/months", dependencies=[Depends(one_value_each)])
    async def months(
        limit: Annotated[int, Query(ge=1)] = 1,
        district: Annotated[list[str] | None, Query()] = None,
    ) -> list[str]:
        return ["2026-11"][:limit] + (district or [])

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=problem_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://problems") as client:
        yield client


async def test_an_invalid_request_names_each_field_with_its_code(client: httpx.AsyncClient) -> None:
    response = await client.post("/draws", json={"month": 7})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["type"], body["title"], body["status"]) == (
        "about:blank",
        "Unprocessable Entity",
        422,
    )
    assert {(item["field"], item["code"]) for item in body["problems"]} == {
        ("month", "string_type"),
        ("count", "missing"),
    }


async def test_an_http_exception_keeps_its_status_detail_and_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/draws", json={"month": "2026-11", "count": 0})

    assert (response.status_code, response.headers["x-drawn"]) == (409, "2026-11")
    assert response.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "drawn already",
        "problems": [],
    }


async def test_a_domain_error_is_answered_with_its_status_and_message(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/draws", json={"month": "2026-11", "count": 1})

    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.json()["detail"] == "others drew at the same time"


async def test_an_unexpected_error_is_a_problem_that_tells_nothing_of_the_code(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/draws", json={"month": "2026-11", "count": 2})

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "a bug" not in response.text


async def test_an_unknown_route_and_a_wrong_method_are_problems_and_405_says_what_is_allowed(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/nowhere")
    wrong = await client.delete("/draws")

    assert (missing.status_code, missing.json()["title"]) == (404, "Not Found")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, POST")
    assert wrong.headers["content-type"] == PROBLEM_JSON


def test_the_document_gives_each_problem_status_in_problem_json() -> None:
    document = problem_app().openapi()

    draws = document["paths"]["/draws"]["post"]["responses"]
    months = document["paths"]["/months"]["get"]["responses"]
    assert sorted(draws) == ["200", "400", "401", "409", "422"]
    assert sorted(months) == ["200", "422"]
    for status in ("400", "401", "409", "422"):
        assert draws[status]["content"] == {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    assert draws["409"]["description"] == "Drawn already"
    schemas = document["components"]["schemas"]
    assert {"Problem", "FieldProblem"} <= set(schemas)
    assert "HTTPValidationError" not in schemas


async def test_a_query_parameter_given_twice_is_refused_unless_it_takes_many(
    client: httpx.AsyncClient,
) -> None:
    twice = await client.get("/months", params=[("limit", "1"), ("limit", "2")])
    many = await client.get("/months", params=[("district", "a"), ("district", "b")])

    assert twice.status_code == 422
    assert [(p["field"], p["code"]) for p in twice.json()["problems"]] == [("limit", "repeated")]
    assert many.json() == ["2026-11", "a", "b"]
