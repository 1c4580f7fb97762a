"""The safety headers, the pages' policies and the write limit, without a server."""

from __future__ import annotations

import hashlib
from base64 import b64encode

import httpx
import pytest
from fastapi import FastAPI, Response

from shared.http_security import (
    API_POLICY,
    SecurityHeaders,
    TokenBuckets,
    WriteRateLimit,
    caller_of,
    page_policy,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sha256_source(text: str) -> str:
    return f"'sha256-{b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def test_a_caller_may_write_a_burst_then_at_the_rate_and_is_told_how_long_to_wait() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, clock=clock)

    assert [buckets.take("partner:a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("partner:a") == pytest.approx(0.5)
    clock.now += 0.25
    assert buckets.take("partner:a") == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("partner:a") == 0.0
    assert buckets.take("partner:b") == 0.0, "each caller has a bucket of their own"


def test_an_idle_caller_s_bucket_refills_to_the_burst_and_no_further() -> None:
    clock = Clock()
    buckets = TokenBuckets(10.0, 2, clock=clock)
    buckets.take("staff:x")
    buckets.take("staff:x")
    clock.now += 60

    assert [buckets.take("staff:x") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_idle_callers_are_forgotten_when_too_many_are_tracked() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 2, clock=clock)
    buckets.MAX_CALLERS = 3
    for caller in ("a", "b", "c"):
        buckets.take(caller)
    clock.now += 0.5
    buckets.take("c")
    clock.now += 0.6  # a and b are full again; c is not

    buckets.take("d")

    assert set(buckets._buckets) == {"c", "d"}
    assert buckets.take("c") == 0.0
    assert buckets.take("c") == pytest.approx(0.9), "c's bucket was kept, not started afresh"


def test_the_caller_is_their_partner_key_or_token_by_digest_else_their_address() -> None:
    partner = caller_of({"headers": [(b"x-partner-key", b"secret-key")], "client": ("10.0.0.1", 1)})
    staff = caller_of({"headers": [(b"authorization", b"Bearer t")], "client": ("10.0.0.1", 1)})
    anonymous = caller_of({"headers": [], "client": ("10.0.0.9", 5)})

    assert partner == "partner:" + hashlib.sha256(b"secret-key").hexdigest()[:32]
    assert staff == "staff:" + hashlib.sha256(b"Bearer t").hexdigest()[:32]
    assert anonymous == "address:10.0.0.9"
    assert "secret-key" not in partner


def test_a_page_s_policy_allows_its_own_inline_script_and_style_by_hash_only() -> None:
    script, style = "render(document.body);", "body { margin: 0; }"
    html = f"<html><style>{style}</style><script>{script}</script></html>"

    policy = dict(
        directive.split(" ", 1) for directive in page_policy(html).split("; ") if directive
    )

    assert policy["script-src"] == sha256_source(script)
    assert policy["style-src"] == sha256_source(style)
    assert sha256_source("alert(1)") not in page_policy(html)
    assert "unsafe-inline" not in page_policy(html)
    assert (policy["default-src"], policy["connect-src"], policy["frame-ancestors"]) == (
        "'none'",
        "'self'",
        "'none'",
    )


def test_a_page_s_policy_adds_what_it_must_load_from_elsewhere() -> None:
    html = '<script src="https://cdn.example/ui.js"></script><script>start();</script>'

    policy = page_policy(html, sources={"script-src": "https://cdn.example"})

    assert f"script-src {sha256_source('start();')} https://cdn.example;" in policy
    assert "style-src 'none'" in policy


def app_with_limit(rate_per_s: float, burst: int) -> FastAPI:
    app = FastAPI()

    @app.get("/families/{family_id}")
    async def family(family_id: str) -> dict[str, str]:
        return {"id": family_id}

    @app.get("/page")
    async def page() -> Response:
        return Response(
            "<p>hi</p>",
            media_type="text/html",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'self'"},
        )

    @app.post("/referrals", status_code=202)
    async def refer() -> dict[str, str]:
        return {"decision": "early_help"}

    app.add_middleware(WriteRateLimit, buckets=TokenBuckets(rate_per_s, burst))
    app.add_middleware(SecurityHeaders)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_every_answer_carries_the_safety_headers_and_data_is_not_stored() -> None:
    async with client(app_with_limit(1, 1)) as http:
        answer = await http.get("/families/fam-1")
        page = await http.get("/page")
        missing = await http.get("/nowhere")

    for response in (answer, page, missing):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-security-policy"] == API_POLICY
    assert missing.headers["cache-control"] == "no-store"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-security-policy"] == "default-src 'self'"


async def test_writes_over_the_limit_are_answered_429_with_retry_after_and_reads_are_not() -> None:
    async with client(app_with_limit(0.5, 2)) as http:
        key = {"x-partner-key": "partner-one"}
        first = [await http.post("/referrals", headers=key) for _ in range(2)]
        refused = await http.post("/referrals", headers=key)
        other = await http.post("/referrals", headers={"x-partner-key": "partner-two"})
        reads = [await http.get("/families/fam-1", headers=key) for _ in range(5)]

    assert [answer.status_code for answer in first] == [202, 202]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert "2 writes at once or 0.5 a second" in refused.json()["detail"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert other.status_code == 202
    assert [answer.status_code for answer in reads] == [200] * 5
