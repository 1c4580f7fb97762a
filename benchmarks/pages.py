"""How fast the pages managers and analysts use answer: each asked for over HTTP, one request
at a time, with the token of the role that reads it.

Issue 20's bar is a 95th percentile of no more than 150 ms for each, with two years of
history stored (``benchmarks.history``). Each page is asked for in a few variants (the
queue of each district, the last months) in turn, so that an answer cached once does not
stand for the page; the lists that grow are timed deep in too (the 50th page of cases),
reached by following their links, where the list is that long.

Usage: ``python -m benchmarks.pages --month 2026-11 --auth-secret-file data/auth-secret``
against a running platform (``--base-url allocation=http://127.0.0.1:8002`` and so on when
it is not on the default ports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from shared.auth import ALL_DISTRICTS, Role, mint_token
from shared.months import month_of, months_ending, shift_month

DEFAULT_BASE_URLS: Mapping[str, str] = {
    "referral": "http://127.0.0.1:8001",
    "allocation": "http://127.0.0.1:8002",
    "audit": "http://127.0.0.1:8003",
    "reporting": "http://127.0.0.1:8004",
}
"""Where ``make run`` serves each service."""

ROLE_OF_SERVICE: Mapping[str, Role] = {
    "reporting": Role.PERFORMANCE_ANALYST,
    "allocation": Role.TEAM_MANAGER,
    "audit": Role.TEAM_MANAGER,
}
"""Who reads each service's pages: an analyst the figures, a team manager the rest."""

VARIED_MONTHS = 3
"""Months each monthly page is asked for in turn, ending with the month given."""
TIMEOUT_S = 120.0
"""Long enough to time a slow page rather than fail on it."""


@dataclass(frozen=True)
class DeepList:
    """A list whose page ``depth`` pages in is timed too: the cost of a page must not grow
    with how far into the list it is."""

    name: str
    service: str
    path: str
    params: Mapping[str, str | int]
    depth: int


class PageFailed(RuntimeError):
    """A page answered other than 2xx: the benchmark stops, with what it said."""


@dataclass(frozen=True)
class Page:
    """A page and the variants of it that are asked for in turn."""

    name: str
    service: str
    path: str
    variants: Sequence[Mapping[str, str | int]]


def pages(month: str, districts: Sequence[str]) -> list[Page]:
    """The pages of issue 20, each with its variants."""
    months = months_ending(month, VARIED_MONTHS)
    by_month = [{"month": each} for each in reversed(months)]
    return [
        Page("monthly_report", "reporting", "/reports/monthly", by_month),
        Page("districts", "reporting", "/reports/districts", by_month),
        Page(
            "trend_12_months",
            "reporting",
            "/reports/trend",
            [{"month": each["month"], "months": 12} for each in by_month],
        ),
        Page("funding_split", "reporting", "/reports/funding", by_month),
        Page("queue_page", "allocation", "/queue", [{"district": name} for name in districts]),
        Page("teams", "allocation", "/teams", [{}]),
        Page(
            "cases_page",
            "allocation",
            "/cases",
            [{}, *({"district": name} for name in districts)],
        ),
        Page("audit_compliance", "audit", "/audits/compliance", by_month),
    ]


def deep_lists(districts: Sequence[str]) -> list[DeepList]:
    """The lists that grow with the records, each with how deep its deep page is."""
    lists = [
        DeepList("cases_deep", "allocation", "/cases", {"limit": 100}, 50),
        DeepList("audits_deep", "audit", "/audits", {"limit": 100}, 5),
    ]
    lists += [
        DeepList("queue_deep", "allocation", "/queue", {"district": name, "limit": 100}, 10)
        for name in districts[:1]
    ]
    return lists


async def deep_page(client: httpx.AsyncClient, listed: DeepList) -> Page | None:
    """The page ``listed.depth`` pages in, reached by following each page's ``Link``; None
    when the list is shorter than that."""
    params: dict[str, str | int] = dict(listed.params)
    for _ in range(listed.depth):
        link = (await _answer(client, listed.path, params)).headers.get("link")
        if link is None:
            return None
        params = dict(httpx.QueryParams(link[link.index("<?") + 2 : link.index(">")]))
    return Page(listed.name, listed.service, listed.path, [params])


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: a value that was measured, never one in between."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def tokens(auth_secret: str) -> dict[str, str]:
    """A token per service, of the role that reads its pages, for every district."""
    return {
        service: mint_token(
            auth_secret.encode(), sub=f"bench-{role.value}", role=role, districts=[ALL_DISTRICTS]
        )
        for service, role in ROLE_OF_SERVICE.items()
    }


async def _get(client: httpx.AsyncClient, path: str, params: Mapping[str, str | int]) -> bytes:
    return (await _answer(client, path, params)).content


async def _answer(
    client: httpx.AsyncClient, path: str, params: Mapping[str, str | int]
) -> httpx.Response:
    answer = await client.get(path, params=dict(params))
    if not answer.is_success:
        raise PageFailed(f"GET {answer.request.url} answered {answer.status_code}: {answer.text}")
    return answer


async def page_latencies(
    base_urls: Mapping[str, str],
    auth_secret: str,
    *,
    month: str,
    samples: int = 40,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, dict[str, float]]:
    """Each page asked for ``samples`` times, one request at a time, its variants in turn:
    page name -> p50 and p95 in milliseconds and the bytes of its last answer. Raises
    ``PageFailed`` on any answer other than 2xx."""
    minted = tokens(auth_secret)
    clients = {
        service: httpx.AsyncClient(
            base_url=base_urls[service],
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
            transport=transport,
        )
        for service, token in minted.items()
    }
    try:
        teams = json.loads(await _get(clients["allocation"], "/teams", {}))
        districts = sorted({team["district"] for team in teams})
        deep = [await deep_page(clients[each.service], each) for each in deep_lists(districts)]
        figures: dict[str, dict[str, float]] = {}
        for page in [*pages(month, districts), *(page for page in deep if page is not None)]:
            client = clients[page.service]
            took: list[float] = []
            body = b""
            for sample in range(samples):
                params = page.variants[sample % len(page.variants)]
                started = time.perf_counter()
                body = await _get(client, page.path, params)
                took.append((time.perf_counter() - started) * 1000)
            figures[page.name] = {
                "p50_ms": round(percentile(took, 0.5), 1),
                "p95_ms": round(percentile(took, 0.95), 1),
                "bytes": float(len(body)),
            }
        return figures
    finally:
        for client in clients.values():
            await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pages",
        description="Time the managers' and analysts' pages of a running platform.",
    )
    parser.add_argument(
        "--month",
        default=shift_month(month_of(datetime.now(UTC)), -1),
        help="YYYY-MM; last month by default",
    )
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument(
        "--auth-secret-file", type=Path, default=Path("data/auth-secret"), help="the platform's"
    )
    parser.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="where a service answers, e.g. allocation=http://127.0.0.1:8002",
    )
    args = parser.parse_args(argv)
    base_urls = dict(DEFAULT_BASE_URLS)
    for given in args.base_url:
        service, _, url = given.partition("=")
        base_urls[service] = url
    figures = asyncio.run(
        page_latencies(
            base_urls,
            args.auth_secret_file.read_text().strip(),
            month=args.month,
            samples=args.samples,
        )
    )
    print(f"{'page':<18} {'p50 ms':>9} {'p95 ms':>9} {'bytes':>9}")
    for name, each in figures.items():
        print(f"{name:<18} {each['p50_ms']:>9.1f} {each['p95_ms']:>9.1f} {each['bytes']:>9.0f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
