"""The reporting dashboard in a real browser: the page shows what the reporting API says.

The browser tests read a reporting API through the ``reporting`` fixture, a base URL that
serves ``/dashboard`` and ``/reports/*``. Today that is a small fake over ``FIGURES``, the
JSON the reporting service serves; every expected figure is read from the API itself, so
pointing the fixture at the real service (with events published first) changes no test.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Query

from services.reporting.dashboard import add_dashboard
from tests.browser import Element, parse, render
from tests.support import Serving

Report = dict[str, Any]

DISTRICTS = ("eastmere", "northvale", "southwick")
MONTHS = (
    "2025-12",
    *(f"2026-{number:02d}" for number in range(1, 12)),
)
GRADES = ("outstanding", "good", "requires_improvement", "inadequate")


# ---- the JSON the reporting service serves, made up for three districts and twelve months --


def monthly_report(
    month: str,
    district: str | None,
    *,
    by_source: dict[str, int],
    outcomes: tuple[int, int, int, int],
    re_referrals: int,
    allocations: int,
    median_hours: float | None,
    queued: int,
    open_cases: int,
    capacity: int,
    grades: tuple[int, int, int, int],
    due: int,
) -> Report:
    total = sum(by_source.values())
    schools = by_source.get("2A", 0)
    accepted, stepped_up, signposted, rejected = outcomes
    completed = sum(grades)
    return {
        "month": month,
        "district": district,
        "requests": {
            "total": total,
            "by_source": by_source,
            "by_route": {"school": schools, "other": total - schools},
            "schools": schools,
            "schools_share": round(schools / total, 4) if total else None,
        },
        "outcomes": {
            "accepted_for_early_help": accepted,
            "stepped_up": stepped_up,
            "signposted": signposted,
            "rejected": rejected,
            "rejected_by_reason": {"no_consent": rejected},
        },
        "re_referrals": {
            "count": re_referrals,
            "rate": round(re_referrals / total, 4) if total else None,
        },
        "step_downs": 0,
        "co_working": 0,
        "allocations": {
            "count": allocations,
            "median_hours": median_hours,
            "p90_hours": None if median_hours is None else round(median_hours * 6, 1),
            "queued_at_month_end": queued,
        },
        "caseload": {
            "open_at_month_end": open_cases,
            "capacity": capacity,
            "utilisation": round(open_cases / capacity, 4) if capacity else None,
        },
        "closures": {"total": 0, "by_outcome": {}},
        "audits": {
            "due": due,
            "completed": completed,
            "overdue": due - completed,
            "grades": dict(zip(GRADES, grades, strict=True)),
        },
        "teams": [],
    }


def district_report(month: str, district: str) -> Report:
    """Varied, deterministic figures; Southwick allocated nobody in October."""
    i = MONTHS.index(month)
    d = DISTRICTS.index(district) + 1
    sources = {"2A": 8 + (i * 3 + d) % 9 + 4 * d, "3A": 2 + (i + d) % 4, "6": 3 + (i * d) % 5}
    if (i + d) % 3 == 0:
        sources["4"] = 1 + d
    if i % 4 == 1:
        sources["1A"] = 2
    total = sum(sources.values())
    rejected = 1 + (i + d) % 3
    stepped_up = 1 + (i * d) % 3
    signposted = 2 + (i + 2 * d) % 5
    accepted = total - rejected - stepped_up - signposted
    quiet = month == "2026-10" and district == "southwick"
    allocations = 0 if quiet else accepted - (i + d) % 3
    return monthly_report(
        month,
        district,
        by_source=sources,
        outcomes=(accepted, stepped_up, signposted, rejected),
        re_referrals=(i + d) % 4,
        allocations=allocations,
        median_hours=None if quiet else round(1.5 + ((i * 7 + d * 5) % 40) / 10, 1),
        queued=(i * d) % 6,
        open_cases=60 * d + 5 * i + (i * d) % 11,
        capacity=90 * d + 10 * (i // 4),
        grades=(d % 2, 1 + (i + d) % 3, (i * d) % 2, 1 if (i + d) % 5 == 0 else 0),
        due=4,
    )


def all_districts(month: str, reports: list[Report]) -> Report:
    """The county's figures: the districts' summed (a median is not a sum, so it is given)."""

    def total(path: str) -> int:
        found = 0
        for report in reports:
            value: Any = report
            for key in path.split("."):
                value = value[key]
            found += value
        return int(found)

    by_source: Counter[str] = Counter()
    for report in reports:
        by_source.update(report["requests"]["by_source"])
    return monthly_report(
        month,
        None,
        by_source=dict(by_source),
        outcomes=(
            total("outcomes.accepted_for_early_help"),
            total("outcomes.stepped_up"),
            total("outcomes.signposted"),
            total("outcomes.rejected"),
        ),
        re_referrals=total("re_referrals.count"),
        allocations=total("allocations.count"),
        median_hours=round(2.0 + MONTHS.index(month) % 5 * 0.7, 1),
        queued=total("allocations.queued_at_month_end"),
        open_cases=total("caseload.open_at_month_end"),
        capacity=total("caseload.capacity"),
        grades=(
            total("audits.grades.outstanding"),
            total("audits.grades.good"),
            total("audits.grades.requires_improvement"),
            total("audits.grades.inadequate"),
        ),
        due=total("audits.due"),
    )


def figures() -> dict[tuple[str, str | None], Report]:
    found: dict[tuple[str, str | None], Report] = {}
    for month in MONTHS:
        reports = [district_report(month, district) for district in DISTRICTS]
        found.update({(month, report["district"]): report for report in reports})
        found[(month, None)] = all_districts(month, reports)
    return found


FIGURES = figures()


# ---- a fake reporting API over such figures -----------------------------------------------


def months_back(month: str, count: int) -> list[str]:
    year, number = map(int, month.split("-"))
    index = year * 12 + number - 1
    return [f"{i // 12}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def empty_report(month: str, district: str | None) -> Report:
    return monthly_report(
        month,
        district,
        by_source={},
        outcomes=(0, 0, 0, 0),
        re_referrals=0,
        allocations=0,
        median_hours=None,
        queued=0,
        open_cases=0,
        capacity=0,
        grades=(0, 0, 0, 0),
        due=0,
    )


Figures = dict[tuple[str, str | None], Report]


def fake_reporting(
    figures_now: Callable[[int], Figures], *, failing: frozenset[str] = frozenset()
) -> tuple[FastAPI, Counter[str]]:
    """The reporting API's read side over made-up figures, and a count of calls by path.

    ``figures_now`` is given how many times the months have been asked for, which is once
    per refresh of the page, so a test can make figures change between refreshes.
    """
    app = FastAPI()
    add_dashboard(app)
    calls: Counter[str] = Counter()
    month_query = Query(pattern=r"^\d{4}-\d{2}$")

    def current(path: str) -> Figures:
        calls[path] += 1
        if path in failing:
            raise HTTPException(status_code=500, detail="figures store unavailable")
        return figures_now(calls["/reports/months"])

    def one(data: Figures, month: str, district: str | None) -> Report:
        return data.get((month, district)) or empty_report(month, district)

    @app.get("/reports/months")
    async def months() -> list[str]:
        return sorted({month for month, _ in current("/reports/months")})

    @app.get("/reports/monthly")
    async def monthly(month: str = month_query, district: str | None = None) -> Report:
        return one(current("/reports/monthly"), month, district)

    @app.get("/reports/districts")
    async def districts(month: str = month_query) -> dict[str, Any]:
        data = current("/reports/districts")
        found = sorted(
            (report for (at, district), report in data.items() if at == month and district),
            key=lambda report: str(report["district"]),
        )
        return {"month": month, "districts": found}

    @app.get("/reports/trend")
    async def trend(
        month: str = month_query, months: int = 12, district: str | None = None
    ) -> list[Report]:
        data = current("/reports/trend")
        return [one(data, at, district) for at in months_back(month, months)]

    return app, calls


@pytest.fixture(scope="module")
def reporting() -> Iterator[str]:
    """Base URL of a reporting API that serves the dashboard and has figures to show."""
    app, _ = fake_reporting(lambda _: FIGURES)
    with Serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def front_page(reporting: str) -> Element:
    """The dashboard as first opened: newest month, all districts."""
    return parse(render(f"{reporting}/dashboard"))


# ---- what the page should show, worked out from the API's JSON -----------------------------


def api(base: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{base}{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


MISSING = "\u2013"  # an en dash: the page's sign for a figure with nothing to measure


def count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f}%"


def hours(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def at(report: Report, path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        value = value[key]
    return value


TILES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "requests-total": ("requests.total", count),
    "accepted": ("outcomes.accepted_for_early_help", count),
    "stepped-up": ("outcomes.stepped_up", count),
    "signposted": ("outcomes.signposted", count),
    "rejected": ("outcomes.rejected", count),
    "re-referral-rate": ("re_referrals.rate", percent),
    "allocations": ("allocations.count", count),
    "median-hours": ("allocations.median_hours", hours),
    "queue-month-end": ("allocations.queued_at_month_end", count),
    "open-cases": ("caseload.open_at_month_end", count),
    "capacity": ("caseload.capacity", count),
    "audits-completed": ("audits.completed", count),
}

COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "requests": ("requests.total", count),
    "schools-share": ("requests.schools_share", percent),
    "accepted": ("outcomes.accepted_for_early_help", count),
    "stepped-up": ("outcomes.stepped_up", count),
    "signposted": ("outcomes.signposted", count),
    "re-referral-rate": ("re_referrals.rate", percent),
    "allocations": ("allocations.count", count),
    "median-hours": ("allocations.median_hours", hours),
    "queue-month-end": ("allocations.queued_at_month_end", count),
    "open-cases": ("caseload.open_at_month_end", count),
    "capacity": ("caseload.capacity", count),
    "audits-completed": ("audits.completed", count),
}


def tiles(page: Element) -> dict[str, str]:
    return {tile: page.by_id(tile).text for tile in TILES}


def expected_tiles(report: Report) -> dict[str, str]:
    return {tile: show(at(report, path)) for tile, (path, show) in TILES.items()}


def table(page: Element) -> dict[str, dict[str, str]]:
    rows = page.by_id("districts").find("tbody").find_all("tr", data_district=None)
    return {
        row.attrs["data-district"]: {
            cell.attrs["data-col"]: cell.text for cell in row.find_all("td", data_col=None)
        }
        for row in rows
    }


def bars_by_month(chart: Element) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for bar in chart.find_all("rect", class_="bar"):
        totals[bar.attrs["data-month"]] += int(bar.attrs["data-value"])
    return dict(totals)


def nonzero(values: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in values.items() if value}


# ---- the page as served -------------------------------------------------------------------


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as client:
        return await client.get(path)


async def test_dashboard_is_served_and_the_root_leads_to_it() -> None:
    app = FastAPI()
    add_dashboard(app)
    page = await get(app, "/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Early Help performance</title>" in page.text
    root = await get(app, "/")
    assert root.status_code in {302, 307}
    assert root.headers["location"].endswith("dashboard")


async def test_page_loads_nothing_from_elsewhere() -> None:
    """Councils run it on closed networks: no CDN, no web font, no absolute fetch."""
    app = FastAPI()
    add_dashboard(app)
    html = (await get(app, "/dashboard")).text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html
    assert "url(" not in html
    assert not re.search(r"""fetch\(\s*["'](https?:)?/""", html)
    assert re.findall(r"https?://[^\s\"']+", html) == ["http://www.w3.org/2000/svg"]


# ---- in the browser -----------------------------------------------------------------------


@pytest.mark.infra
def test_tiles_show_the_newest_months_figures_for_all_districts(
    reporting: str, front_page: Element
) -> None:
    newest = api(reporting, "/reports/months")[-1]
    report = api(reporting, "/reports/monthly", month=newest)
    assert report["requests"]["total"] > 0

    assert tiles(front_page) == expected_tiles(report)
    assert front_page.find("h1").text == "Early Help performance"
    assert re.fullmatch(r"Updated \d\d:\d\d:\d\d", front_page.by_id("updated").text)
    assert "hidden" in front_page.by_id("error").attrs
    chosen = front_page.by_id("month").find("option", selected=None)
    assert chosen.attrs["value"] == newest
    assert front_page.by_id("district").find("option", selected=None).attrs["value"] == ""


@pytest.mark.infra
def test_district_table_has_a_row_per_district_with_its_figures(
    reporting: str, front_page: Element
) -> None:
    newest = api(reporting, "/reports/months")[-1]
    reports = api(reporting, "/reports/districts", month=newest)["districts"]
    assert len(reports) > 1

    expected = {
        report["district"]: {
            column: show(at(report, path)) for column, (path, show) in COLUMNS.items()
        }
        for report in reports
    }
    assert table(front_page) == expected
    row = front_page.by_id("districts").find("tr", data_district=reports[0]["district"])
    assert row.find("th").text == reports[0]["district"].capitalize()
    options = front_page.by_id("district").find_all("option")
    assert [option.attrs["value"] for option in options] == ["", *expected]


@pytest.mark.infra
def test_charts_draw_the_last_twelve_months_as_svg(reporting: str, front_page: Element) -> None:
    newest = api(reporting, "/reports/months")[-1]
    trend = api(reporting, "/reports/trend", month=newest, months="12")
    assert len(trend) == 12

    for chart_id in ("chart-requests", "chart-allocations", "chart-caseload", "chart-audits"):
        figure = front_page.find("figure", id=chart_id)
        assert figure.find("figcaption").text
        drawing = figure.find("svg", role="img")
        assert len(drawing.attrs["aria-label"]) > 20
        assert drawing.find_all("rect", class_="bar")
        assert figure.find("ul", class_="legend").find_all("li")

    def per_month(total: Callable[[Report], int]) -> dict[str, int]:
        return nonzero({report["month"]: total(report) for report in trend})

    charts = {chart: front_page.by_id(chart) for chart in ("chart-requests", "chart-audits")}
    assert bars_by_month(charts["chart-requests"]) == per_month(
        lambda report: sum(report["requests"]["by_source"].values())
    )
    assert bars_by_month(charts["chart-audits"]) == per_month(
        lambda report: sum(report["audits"]["grades"].values())
    )
    assert bars_by_month(front_page.by_id("chart-allocations")) == per_month(
        lambda report: report["allocations"]["count"]
    )
    caseload = front_page.by_id("chart-caseload")
    assert bars_by_month(caseload) == per_month(
        lambda report: report["caseload"]["open_at_month_end"]
    )
    capacity = caseload.find_all("circle", data_series="capacity")
    assert [int(point.attrs["data-value"]) for point in capacity] == [
        report["caseload"]["capacity"] for report in trend
    ]


@pytest.mark.infra
def test_query_string_chooses_the_month_and_district(reporting: str) -> None:
    page = parse(render(f"{reporting}/dashboard?district=eastmere&month=2026-10"))

    report = api(reporting, "/reports/monthly", month="2026-10", district="eastmere")
    county = api(reporting, "/reports/monthly", month="2026-10")
    assert expected_tiles(report) != expected_tiles(county)
    assert tiles(page) == expected_tiles(report)
    assert page.by_id("scope").text == "October 2026 · Eastmere"
    assert page.by_id("month").find("option", selected=None).attrs["value"] == "2026-10"
    assert page.by_id("district").find("option", selected=None).attrs["value"] == "eastmere"
    assert "current" in page.find("tr", data_district="eastmere").attrs["class"]

    trend = api(reporting, "/reports/trend", month="2026-10", months="12", district="eastmere")
    assert bars_by_month(page.by_id("chart-allocations")) == nonzero(
        {month["month"]: month["allocations"]["count"] for month in trend}
    )
    # A district that allocated nobody has no median to show.
    quiet = table(page)["southwick"]
    assert quiet["allocations"] == "0"
    assert quiet["median-hours"] == MISSING


@pytest.mark.infra
def test_page_refreshes_itself_as_figures_change() -> None:
    later = copy.deepcopy(FIGURES)
    later[("2026-11", None)]["requests"]["total"] += 5
    app, calls = fake_reporting(lambda refreshes: FIGURES if refreshes <= 1 else later)

    with Serving(app) as url:
        page = parse(render(f"{url}/dashboard", budget_ms=8000))

    assert calls["/reports/monthly"] >= 2
    assert page.by_id("requests-total").text == count(later[("2026-11", None)]["requests"]["total"])


@pytest.mark.infra
def test_page_says_so_when_the_figures_cannot_be_fetched() -> None:
    app, calls = fake_reporting(lambda _: FIGURES, failing=frozenset({"/reports/trend"}))

    with Serving(app) as url:
        page = parse(render(f"{url}/dashboard"))

    assert calls["/reports/trend"] >= 1
    error = page.by_id("error")
    assert "hidden" not in error.attrs
    assert error.attrs["role"] == "alert"
    assert error.text.startswith("Could not load the figures (reports/trend answered 500)")
    assert page.by_id("requests-total").text == MISSING
    assert page.by_id("updated").text == "Not yet updated"
