"""The OpenAPI documents tell the truth: schemathesis, with every check, against the four
services running as ``make run`` starts them.

Each operation is called with requests generated from its document, valid and invalid, as a
role its access policy allows (a partner key for the partners' routes, a stated reason for
a family's data), and every answer is checked: its status is documented, its body matches
its schema, a valid request is not refused, an invalid one is not accepted, and nothing
answers 500. The run is bounded (a few examples per operation, derandomised so a verdict is
the same on every machine); an open-ended run is ``st run <service>/openapi.json --checks
all``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from services.allocation.access import POLICY as ALLOCATION_POLICY
from services.audit.access import POLICY as AUDIT_POLICY
from services.referral.access import POLICY as REFERRAL_POLICY
from services.reporting.access import POLICY as REPORTING_POLICY
from shared.auth import ADMIN_ONLY, OPEN, OPEN_PATHS, Policy, Role
from tests.auth import ADMIN, ALL_ROUTES, as_role
from tests.e2e.test_walking_skeleton import FIXTURE, Platform, platform

pytestmark = pytest.mark.infra

__all__ = ["platform"]  # the fixture, shared with the walking skeleton

POLICIES: dict[str, Policy] = {
    "referral": REFERRAL_POLICY,
    "allocation": ALLOCATION_POLICY,
    "audit": AUDIT_POLICY,
    "reporting": REPORTING_POLICY,
}
EXAMPLES_PER_OPERATION = 12
REASON = {"x-access-reason": "checking the service answers as its document says"}


def credentials(policy: Policy, method: str, path: str, key: dict[str, str]) -> dict[str, str]:
    """Headers of a caller the operation's rule allows."""
    rule = OPEN if path in OPEN_PATHS else policy.get((method, path), ADMIN_ONLY)
    if rule.open:
        return {}
    if rule.partner:
        return key
    role = Role.ADMINISTRATOR if Role.ADMINISTRATOR in rule.roles else min(rule.roles)
    # A caller per operation: each is well inside the write limit, as the run is quick.
    return {**as_role(role, sub=f"conformance-{role.value}-{method}-{path}"), **REASON}


def check(operation: Any, headers: dict[str, str]) -> str | None:
    """What schemathesis found wrong with one operation, or None."""
    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | operation.as_strategy(
        generation_mode=GenerationMode.NEGATIVE
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Any) -> None:
        case.call_and_validate(headers=headers)

    try:
        conforms()
    except KeyboardInterrupt:
        raise
    except BaseException as failure:  # schemathesis raises groups of its checks' failures
        return str(failure)[:2000]
    return None


def up(platform: Platform) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert platform.process.poll() is None, "the platform exited"
        try:
            if all(
                httpx.get(platform.url(service, "/health")).status_code == 200
                for service in POLICIES
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the platform did not come up within 90 s")


def test_every_operation_answers_as_its_document_says(platform: Platform) -> None:
    up(platform)
    issued = httpx.post(
        platform.url("referral", "/partner-keys"),
        json={"partner_id": FIXTURE["partner_id"], "routes": ALL_ROUTES},
        headers=ADMIN,
    )
    assert issued.status_code == 201, issued.text
    key = {"x-partner-key": issued.json()["key"]}

    failures: dict[str, str] = {}
    checked = 0
    for service, policy in POLICIES.items():
        schema = schemathesis.openapi.from_url(platform.url(service, "/openapi.json"))
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"{service}'s document cannot be read: {result}"
            operation = result.ok()
            method = operation.method.upper()
            found = check(operation, credentials(policy, method, operation.path, key))
            checked += 1
            if found is not None:
                failures[f"{service} {method} {operation.path}"] = found
    assert checked > 60, f"only {checked} operations in the four documents"
    assert failures == {}, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
