"""The checked-in OpenAPI documents are what the services serve."""

from __future__ import annotations

from importlib import import_module

import httpx
import pytest

from services.openapi import (
    SERVICES,
    check,
    current_openapi,
    document_only_settings,
    openapi_path,
)
from shared.contracts import load_schema, render


@pytest.mark.parametrize("service", SERVICES)
def test_checked_in_openapi_document_is_current(service: str) -> None:
    path = openapi_path(service)
    assert path.exists(), f"{path.name} is missing: run `make schemas`"
    current = current_openapi(service)
    assert load_schema(path) == current, f"{path.name} is stale: run `make schemas`"
    assert path.read_text(encoding="utf-8") == render(current), (
        f"{path.name} is not in canonical form: run `make schemas`"
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_serves_its_document_with_the_operations_endpoints(
    service: str,
) -> None:
    app = import_module(f"services.{service}.app").create_app(document_only_settings(service))
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing connects
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        served = (await client.get("/openapi.json")).json()
    assert served == load_schema(openapi_path(service))
    assert {"/health", "/ready", "/metrics"} <= set(served["paths"])


def test_openapi_check_passes() -> None:
    assert check() == []
