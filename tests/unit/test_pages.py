"""The page benchmark asks for every page of issue 20 with the role that reads it, varies
the pages it can, and stops at the first answer that is not 2xx."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from benchmarks.pages import PageFailed, page_latencies, percentile
from shared.auth import Role, verify_token
from tests.auth import TEST_SECRET

BASE_URLS = {
    "allocation": "http://allocation.test",
    "audit": "http://audit.test",
    "reporting": "http://reporting.test",
}
TEAMS = [{"district": "northvale"}, {"district": "eastmere"}, {"district": "northvale"}]


def test_percentiles_are_values_measured() -> None:
    measured = [float(value) for value in range(1, 41)]
    assert percentile(measured, 0.5) == 20
    assert percentile(measured, 0.95) == 38
    assert percentile([7.0], 0.95) == 7


async def test_every_page_is_timed_with_its_role_and_varied() -> None:
    asked: Counter[tuple[str, str]] = Counter()
    roles: dict[str, Role] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        principal = verify_token(TEST_SECRET.encode(), token)
        assert principal.covers(["northvale", "eastmere"])
        roles[request.url.host] = principal.role
        asked[request.url.path, str(request.url.params)] += 1
        body = TEAMS if request.url.path == "/teams" else {"ok": True}
        return httpx.Response(200, content=json.dumps(body).encode())

    figures = await page_latencies(
        BASE_URLS,
        TEST_SECRET,
        month="2026-11",
        samples=6,
        transport=httpx.MockTransport(answer),
    )

    assert set(figures) == {
        "monthly_report",
        "districts",
        "trend_12_months",
        "funding_split",
        "queue_page",
        "teams",
        "cases_page",
        "audit_compliance",
    }
    assert figures["teams"]["bytes"] == len(json.dumps(TEAMS))
    assert all(each["p50_ms"] <= each["p95_ms"] for each in figures.values())
    assert roles["reporting.test"] is Role.PERFORMANCE_ANALYST
    assert roles["allocation.test"] is Role.TEAM_MANAGER
    assert asked["/queue", "district=eastmere"] == asked["/queue", "district=northvale"] == 3
    assert asked["/reports/monthly", "month=2026-09"] == 2
    assert asked["/reports/trend", "month=2026-11&months=12"] == 2
    assert asked["/cases", ""] == 2


async def test_a_long_list_is_timed_deep_in_at_the_page_its_links_lead_to() -> None:
    asked: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/teams":
            return httpx.Response(200, json=TEAMS)
        cursor = int(request.url.params.get("cursor", 0))
        asked[f"{request.url.path}?{cursor}"] += 1
        # Cases run 60 pages deep, audits 3 and the queue none: only cases have a deep page.
        last = {"/cases": 60, "/audits": 3}.get(request.url.path, 0)
        headers = {"link": f'<?limit=100&cursor={cursor + 1}>; rel="next"'} if cursor < last else {}
        return httpx.Response(200, json=[{"at": cursor}], headers=headers)

    figures = await page_latencies(
        BASE_URLS, TEST_SECRET, month="2026-11", samples=4, transport=httpx.MockTransport(answer)
    )

    assert "cases_deep" in figures
    assert not {"audits_deep", "queue_deep"} & set(figures)
    assert asked["/cases?50"] == 4  # its link reached, then only timed
    assert asked["/cases?49"] == 1
    assert asked["/cases?51"] == 0


async def test_a_page_that_fails_stops_the_benchmark_with_what_it_said() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/teams":
            return httpx.Response(200, json=TEAMS)
        return httpx.Response(503, json={"detail": "busy"})

    with pytest.raises(PageFailed, match=r"503.*busy"):
        await page_latencies(
            BASE_URLS, TEST_SECRET, month="2026-11", transport=httpx.MockTransport(answer)
        )
