"""A service on the real broker and database: the safety headers on what it answers, and a
partner writing faster than their limit told to wait, without anyone else slowed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.referral.app import create_app
from services.referral.settings import ReferralSettings
from shared.http_security import API_POLICY
from shared.kafka import topic_retention_ms
from tests.auth import ADMIN, as_role, partner_key
from tests.conftest import Infra, Namespace

pytestmark = pytest.mark.infra

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "referral.json").read_text()
)
BURST = 3
KEPT_DAYS = 3


@pytest.fixture
async def front_door(infra: Infra, namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings(
        ReferralSettings,
        infra,
        write_rate_per_s=0.2,
        write_burst=BURST,
        personal_topic_retention_days=KEPT_DAYS,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://referral"
        ) as http,
    ):
        yield http


def submission(number: int) -> dict[str, Any]:
    return FIXTURE | {"submission_id": f"burst-{uuid.uuid4().hex[:8]}-{number}"}


async def test_answers_carry_the_safety_headers_and_personal_data_is_never_stored(
    front_door: httpx.AsyncClient,
) -> None:
    key = await partner_key(front_door, FIXTURE["partner_id"])
    accepted = await front_door.post("/referrals", json=submission(1), headers=key)
    assert accepted.status_code == 202, accepted.text
    referral = await front_door.get(
        f"/referrals/{accepted.json()['referral_id']}",
        headers={**as_role("practitioner"), "x-access-reason": "checking the headers"},
    )
    unknown = await front_door.get("/referrals/ref-none", headers=ADMIN)
    docs = await front_door.get("/docs")

    assert referral.status_code == 200, referral.text
    assert referral.json()["family_id"] == accepted.json()["family_id"]
    for answer in (accepted, referral, unknown, docs):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    for answer in (accepted, referral, unknown):
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-security-policy"] == API_POLICY
    assert docs.status_code == 200
    assert "script-src 'sha256-" in docs.headers["content-security-policy"]
    assert "unsafe-inline" not in docs.headers["content-security-policy"]


async def test_a_partner_over_the_write_limit_gets_429_and_the_others_get_through(
    front_door: httpx.AsyncClient,
) -> None:
    busy = await partner_key(front_door, FIXTURE["partner_id"])
    other = await partner_key(front_door, FIXTURE["partner_id"])
    burst = [
        await front_door.post("/referrals", json=submission(number), headers=busy)
        for number in range(BURST + 2)
    ]
    unaffected = await front_door.post("/referrals", json=submission(99), headers=other)

    assert [answer.status_code for answer in burst] == [202] * BURST + [429, 429]
    refused = burst[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert refused.json()["status"] == 429
    assert unaffected.status_code == 202, unaffected.text
    # A refused write was never taken in: its submission is unknown to the service.
    resent = await front_door.post(
        "/referrals",
        json=json.loads(burst[-1].request.content),
        headers=other,
    )
    assert resent.status_code == 202
    assert resent.json()["duplicate"] is False


async def test_partners_submissions_are_kept_by_the_broker_only_as_long_as_configured(
    infra: Infra, namespace: Namespace, front_door: httpx.AsyncClient
) -> None:
    kept = await topic_retention_ms(
        infra.kafka_bootstrap_servers, namespace.topic("referral-submitted")
    )

    assert kept == KEPT_DAYS * 24 * 3600 * 1000
