"""Credentials for tests: a known signing secret, tokens for any role, partner keys."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable

import httpx

from services.referral.domain import ROUTE_CATALOGUE
from shared.auth import Policy, Role, mint_token

TEST_SECRET = "test-secret-for-the-test-suite-only-0123456789abcdef"
TEST_DEAD_LETTER_KEY = "test-dead-letter-key-for-the-test-suite-only-0123456789"
TEST_MATCH_KEY_SECRET = "test-match-key-secret-for-the-test-suite-only-0123456789"
ALL_ROUTES = sorted(route.id for route in ROUTE_CATALOGUE)


def token(role: Role | str, *, sub: str | None = None, districts: Iterable[str] = ("*",)) -> str:
    role = Role(role)
    return mint_token(
        TEST_SECRET.encode(), sub=sub or f"test-{role.value}", role=role, districts=districts
    )


def as_role(
    role: Role | str,
    *,
    sub: str | None = None,
    districts: Iterable[str] = ("*",),
    reason: str | None = None,
) -> dict[str, str]:
    """Headers of a signed-in member of staff (with a stated reason, for personal data)."""
    headers = {"authorization": f"Bearer {token(role, sub=sub, districts=districts)}"}
    if reason is not None:
        headers["x-access-reason"] = reason
    return headers


ADMIN = as_role(Role.ADMINISTRATOR)
CASEWORKER = as_role(Role.PRACTITIONER, reason="reviewing the family's referral")


async def partner_key(
    http: httpx.AsyncClient, partner_id: str, routes: Iterable[str] = ALL_ROUTES
) -> dict[str, str]:
    """Headers carrying a new key for ``partner_id``, issued over the admin API."""
    issued = await http.post(
        "/partner-keys", json={"partner_id": partner_id, "routes": list(routes)}, headers=ADMIN
    )
    assert issued.status_code == 201, issued.text
    return {"x-partner-key": issued.json()["key"]}


class AllowedRole(httpx.Auth):
    """Signs each request as a role the service's policy allows for it (administrator when
    allowed), unless the request already carries its own Authorization: for tests about
    behaviour, not access, which the access matrix tests prove separately."""

    def __init__(self, policy: Policy) -> None:
        self._routes = [
            (method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), rule)
            for (method, path), rule in policy.items()
        ]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            role = self._role_for(request.method, request.url.path)
            if role is not None:
                request.headers["authorization"] = f"Bearer {token(role)}"
        yield request

    def _role_for(self, method: str, path: str) -> Role | None:
        for route_method, pattern, rule in self._routes:
            if route_method == method and pattern.match(path):
                if rule.open or rule.partner:
                    return None
                return Role.ADMINISTRATOR if Role.ADMINISTRATOR in rule.roles else min(rule.roles)
        return Role.ADMINISTRATOR
