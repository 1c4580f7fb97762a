"""Every role against every endpoint of every service, in process, over the real database.

A role the policy allows gets past the gate (its answer may be 404 or 422 for the made-up
ids and empty bodies used here, never 401 or 403); any other role gets 403 with the reason;
no token gets 401. Every route a service declares is in its policy, so none is left to a
default by accident.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.allocation import access as allocation_access
from services.allocation.app import create_app as allocation_app
from services.allocation.settings import AllocationSettings
from services.audit import access as audit_access
from services.audit.app import create_app as audit_app
from services.audit.settings import AuditSettings
from services.referral import access as referral_access
from services.referral.app import create_app as referral_app
from services.referral.settings import ReferralSettings
from services.reporting import access as reporting_access
from services.reporting.app import create_app as reporting_app
from services.reporting.settings import ReportingSettings
from shared.auth import OPEN_PATHS, Policy, Role
from tests.auth import ADMIN, as_role
from tests.conftest import Infra, Namespace

pytestmark = pytest.mark.infra

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type[Any], Policy]] = {
    "referral": (referral_app, ReferralSettings, referral_access.POLICY),
    "allocation": (allocation_app, AllocationSettings, allocation_access.POLICY),
    "audit": (audit_app, AuditSettings, audit_access.POLICY),
    "reporting": (reporting_app, ReportingSettings, reporting_access.POLICY),
}
CASES = [
    (service, method, path, role)
    for service, (_, _, policy) in SERVICES.items()
    for (method, path), rule in policy.items()
    if not rule.open and not rule.partner
    for role in Role
]


@pytest.fixture(scope="module")
async def clients(infra: Infra) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The four apps, not started: the gate and the endpoints need only the database."""
    namespace = Namespace(topics="matrix-", databases="matrix_")
    opened = {}
    for service, (create, settings_class, _) in SERVICES.items():
        app = create(namespace.settings(settings_class, infra))
        opened[service] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{service}", timeout=30
        )
    try:
        yield opened
    finally:
        for client in opened.values():
            await client.aclose()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nope", path)


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body: dict[str, Any] | None = {} if method in {"POST", "PATCH", "PUT"} else None
    return await client.request(method, concrete(path), json=body, headers=headers)


@pytest.mark.parametrize(("service", "method", "path", "role"), CASES)
async def test_each_role_gets_what_the_policy_gives_it(
    clients: dict[str, httpx.AsyncClient], service: str, method: str, path: str, role: Role
) -> None:
    rule = SERVICES[service][2][(method, path)]
    response = await call(clients[service], method, path, as_role(role, reason="casework"))
    if role in rule.roles:
        assert response.status_code not in {401, 403}, response.text
    else:
        assert response.status_code == 403
        assert response.json()["detail"].startswith(f"role {role.value} may not do this")


@pytest.mark.parametrize("service", SERVICES)
async def test_without_a_token_only_the_open_endpoints_answer(
    clients: dict[str, httpx.AsyncClient], service: str
) -> None:
    client = clients[service]
    for (method, path), rule in SERVICES[service][2].items():
        response = await call(client, method, path, {})
        if rule.open:
            assert response.status_code not in {401, 403}, path
        else:
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["detail"], path
    for path in ("/health", "/asyncapi.json", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path
    forged = {"authorization": "Bearer " + "e30.e30.forged"}
    assert (await client.get("/refusals", headers=forged)).status_code == 401


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_of_a_service_is_in_its_policy(service: str) -> None:
    create, settings_class, policy = SERVICES[service]
    app = create(
        settings_class.model_validate(
            {
                "auth_secret": "x" * 40,
                "dead_letter_key": "y" * 40,
                "match_key_secret": "z" * 40,
                "mongodb_uri": "mongodb://h",
            }
        )
    )
    declared = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path not in OPEN_PATHS
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert declared - set(policy) == set()
    assert set(policy) - declared == set()


async def test_refusals_are_recorded_for_administrators(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    client = clients["allocation"]
    refused = await client.post("/teams", json={}, headers=as_role(Role.PRACTITIONER, sub="pat-1"))
    assert refused.status_code == 403
    recorded = await client.get("/refusals", params={"sub": "pat-1"}, headers=ADMIN)
    assert recorded.status_code == 200
    [entry, *_] = recorded.json()
    assert (entry["method"], entry["path"], entry["status"], entry["role"]) == (
        "POST",
        "/teams",
        403,
        "practitioner",
    )
    assert "allowed: administrator" in entry["reason"]


async def test_reporting_users_see_only_their_districts(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    client = clients["reporting"]
    north = as_role(Role.PERFORMANCE_ANALYST, districts=["northvale"])
    month = {"month": "2026-10"}

    own = await client.get(
        "/reports/monthly", params={**month, "district": "northvale"}, headers=north
    )
    other = await client.get(
        "/reports/monthly", params={**month, "district": "eastmere"}, headers=north
    )
    county = await client.get("/reports/monthly", params=month, headers=north)
    funding = await client.get("/reports/funding", params=month, headers=north)
    everywhere = await client.get(
        "/reports/monthly", params=month, headers=as_role(Role.HEAD_OF_SERVICE, districts=["*"])
    )

    assert own.status_code == 200, own.text
    assert (other.status_code, other.json()["detail"]) == (
        403,
        "your districts (northvale) do not include eastmere",
    )
    assert county.status_code == 403
    assert "county-wide" in county.json()["detail"]
    assert funding.status_code == 403
    assert everywhere.status_code == 200
