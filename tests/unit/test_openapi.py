"""The checked-in OpenAPI documents are what the services serve."""

from __future__ import annotations

from importlib import import_module

import httpx
import pytest

from services.openapi import (
    DOCUMENT_ONLY_SECRET,
    SERVICES,
    check,
    current_openapi,
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
    settings_class = getattr(
        import_module(f"services.{service}.settings"), f"{service.title()}Settings"
    )
    app = import_module(f"services.{service}.app").create_app(
        settings_class(auth_secret=DOCUMENT_ONLY_SECRET)
    )
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing connects
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        served = (await client.get("/openapi.json")).json()
    assert served == load_schema(openapi_path(service))
    assert {"/health", "/ready", "/metrics"} <= set(served["paths"])


def test_openapi_check_passes() -> None:
    assert check() == []
