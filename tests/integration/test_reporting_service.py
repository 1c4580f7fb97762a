"""The reporting service over the real broker and database, fed a known October.

The feed has what real streams have: a duplicate delivery, a referral that arrives after
November's events, an audit completed before its assignment arrives, a referral received
half an hour before October, capacity changed before, during and after the month. Every
figure is worked out by hand in the comments, then checked through the API, the CSV, the
funding split, the performance snapshots, a rebuild from the log and the dashboard in a
real browser.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest

from services.reporting.access import POLICY
from services.reporting.app import create_app
from services.reporting.rebuild import rebuild
from services.reporting.settings import ReportingSettings
from shared.auth import Role
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    LevelOfNeed,
    OfstedGrade,
    PerformanceSnapshot,
    ReferralRejected,
    RejectionReason,
    ScreeningDecision,
    StandardScore,
    TeamCapacityChanged,
)
from tests.auth import AllowedRole, token
from tests.browser import parse, render
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import Serving, TopicReader, eventually, produce, service_event

pytestmark = pytest.mark.infra

OCTOBER = "2026-10"


def at(day: int, hour: int = 9, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def referral(name: str, district: str, source: str, decision: str, **changes: Any) -> EventData:
    return referral_received(
        referral_id=f"ref-{name}",
        family_id=f"fam-{name}",
        submission_id=f"sub-{name}",
        district=district,
        referral_source=source,
        route={"2A": "school", "6": "police", "3B": "gp"}[source],
        decision=ScreeningDecision(decision),
        level_of_need={"signpost": 1, "step_up": 4}.get(decision, 2),
        **{"received_at": at(1), **changes},
    )


def allocated(case: str, district: str, team: str | None, when: datetime, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "case_id": f"case-{case}",
        "family_id": f"fam-{case}",
        "referral_id": f"ref-{case}",
        "district": district,
        "team_id": team,
        "worker_id": None if team is None else f"{team}-w1",
        "status": AllocationStatus.ALLOCATED if team else AllocationStatus.QUEUED,
        "kind": AllocationKind.STANDARD,
        "level_of_need": LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        "referral_received_at": at(1),
        "allocated_at": when,
        **changes,
    }
    return CaseAllocated(**fields)


def capacity(team: str, district: str, places: int, when: datetime) -> TeamCapacityChanged:
    return TeamCapacityChanged(
        team_id=team,
        team_name=team,
        district=district,
        workers=2,
        fte=2.0,
        capacity=places,
        changed_at=when,
    )


def assigned(audit: str, district: str) -> AuditAssigned:
    return AuditAssigned(
        audit_id=f"aud-{audit}",
        case_id=f"case-{audit}",
        family_id=f"fam-{audit}",
        district=district,
        team_id=None,
        auditor_id="tm-1",
        month=OCTOBER,
        assigned_at=at(1),
        due_by=at(1, 0, month=11),
    )


def completed(audit: str, district: str, grade: OfstedGrade) -> AuditCompleted:
    return AuditCompleted(
        audit_id=f"aud-{audit}",
        case_id=f"case-{audit}",
        family_id=f"fam-{audit}",
        district=district,
        auditor_id="tm-1",
        month=OCTOBER,
        scores=[StandardScore(standard="plan_quality", grade=grade)],
        overall_grade=grade,
        completed_at=at(20),
    )


def rejected(name: str, *codes: str) -> ReferralRejected:
    return ReferralRejected(
        rejection_id=f"rej-{name}",
        partner_id="northvale-primary",
        submission_id=f"sub-rej-{name}",
        reasons=[RejectionReason(field="x", code=code, message=code) for code in codes],
        received_at=at(7),
    )


# October, worked out by hand:
# - requests: r1, r2, r3, r7 in northvale; r4, r5 in eastmere (r6 is September's) = 6;
#   schools (2A): r1, r2, r5, r7 = 4 of 6; accepted r1, r4, r5, r7; r2 signposted; r3 up;
#   r4 a step-down (as its referral says), r5 co-working (as its allocation's kind says).
# - allocations: c1 1h, c5 2h, c7 10h (c1's reallocation is not an allocation; c4 waits
#   until November) -> median 2h, 90th percentile 2 + 0.8 x 8 = 8.4h.
# - at October's end: c4 queued; c1 and c7 open (c5 closed); capacity 27 + 9 = 36.
# - audits: 3 due; a1 and a3 completed; a2 overdue since 1 November.
EARLY = [
    referral("r1", "northvale", "2A", "early_help"),
    referral("r2", "northvale", "2A", "signpost"),
    referral("r3", "northvale", "6", "step_up"),
    referral("r4", "eastmere", "3B", "early_help", is_re_referral=True, is_step_down=True),
    referral("r5", "eastmere", "2A", "early_help", open_to_social_care=True),
    referral("r6", "northvale", "2A", "early_help", received_at=at(30, 23, month=9)),
    rejected("x1", "no_consent"),
    rejected("x2", "no_consent", "unknown_route"),
    capacity("nv-a", "northvale", 18, at(1, 0, month=9)),
    capacity("em-a", "eastmere", 9, at(1, 0, month=9)),
    capacity("nv-a", "northvale", 27, at(10)),
    allocated("r1", "northvale", "nv-a", at(2), time_to_allocation_seconds=3600.0),
    allocated("r4", "eastmere", None, at(3), queue_position=1, kind=AllocationKind.STEP_DOWN),
    allocated(
        "r5",
        "eastmere",
        "em-a",
        at(5),
        time_to_allocation_seconds=7200.0,
        kind=AllocationKind.CO_WORKING,
    ),
    allocated("r1", "northvale", "nv-a", at(20), reallocated_from_worker_id="nv-a-w0"),
    CaseClosed(
        case_id="case-r5",
        family_id="fam-r5",
        district="eastmere",
        team_id="em-a",
        worker_id="em-a-w1",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=at(25),
    ),
    completed("a3", "northvale", OfstedGrade.REQUIRES_IMPROVEMENT),
    assigned("a1", "northvale"),
    assigned("a2", "eastmere"),
    assigned("a3", "northvale"),
    completed("a1", "northvale", OfstedGrade.GOOD),
]
LATE = [
    allocated(
        "r4",
        "eastmere",
        "em-a",
        at(2, month=11),
        time_to_allocation_seconds=2.6e6,
        kind=AllocationKind.STEP_DOWN,
    ),
    capacity("em-a", "eastmere", 18, at(5, month=11)),
    referral("r7", "northvale", "2A", "early_help", received_at=at(15)),
    allocated("r7", "northvale", "nv-a", at(16), time_to_allocation_seconds=36000.0),
]
DUPLICATED = (0, 13)  # r1 and c5's allocation are delivered twice


@dataclass
class Fed:
    infra: Infra
    settings: ReportingSettings
    url: str
    http: httpx.AsyncClient
    snapshots: TopicReader

    async def monthly(self, district: str | None = None, month: str = OCTOBER) -> Any:
        params = {"month": month} | ({"district": district} if district else {})
        response = await self.http.get("/reports/monthly", params=params)
        assert response.status_code == 200, response.text
        return response.json()


async def publish(infra: Infra, namespace: Namespace, events: list[EventData]) -> None:
    for data in events:
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic(data.event_type),
            [service_event(data, service="test", event_id=_event_id(data))],
            key=(subject.encode() if (subject := data.event_subject()) else None),
        )


def _event_id(data: EventData) -> str:
    # Stable per fact, so a second delivery of the same fact is a duplicate, not a new fact.
    return f"{data.event_type}:{uuid.uuid5(uuid.NAMESPACE_OID, data.model_dump_json())}"


@pytest.fixture(scope="module")
async def fed(infra: Infra) -> AsyncIterator[Fed]:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"p{token}-", databases=f"p{token}_")
    settings = namespace.settings(ReportingSettings, infra, snapshot_interval_s=0.5)
    snapshots = TopicReader(
        infra.kafka_bootstrap_servers,
        namespace.topic("performance-snapshot"),
        PerformanceSnapshot,
    )
    with Serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, auth=AllowedRole(POLICY)) as http:
            await publish(infra, namespace, EARLY)
            await publish(infra, namespace, [EARLY[index] for index in DUPLICATED])
            await publish(infra, namespace, LATE)
            await snapshots.start()
            fed = Fed(infra, settings, url, http, snapshots)
            await eventually(
                fed.monthly,
                lambda report: (
                    report["requests"]["total"] == 6
                    and report["allocations"]["count"] == 3
                    and report["audits"]["completed"] == 2
                    and report["audits"]["due"] == 3
                    and report["outcomes"]["rejected"] == 2
                    and report["caseload"]["capacity"] == 36
                    and report["closures"]["total"] == 1
                ),
                timeout_s=60,
            )
            await eventually(
                partial(fed.monthly, month="2026-11"),
                lambda report: (
                    report["allocations"]["count"] == 1 and report["caseload"]["capacity"] == 45
                ),
                timeout_s=30,
            )
            await eventually(
                partial(fed.monthly, month="2026-09"),
                lambda report: report["requests"]["total"] == 1,
                timeout_s=30,
            )
            try:
                yield fed
            finally:
                await snapshots.stop()


async def test_the_county_s_october(fed: Fed) -> None:
    report = await fed.monthly()

    assert report["requests"] == {
        "total": 6,
        "by_source": {"2A": 4, "3B": 1, "6": 1},
        "by_route": {"gp": 1, "police": 1, "school": 4},
        "schools": 4,
        "schools_share": 0.6667,
    }
    assert report["outcomes"] == {
        "accepted_for_early_help": 4,
        "stepped_up": 1,
        "signposted": 1,
        "rejected": 2,
        "rejected_by_reason": {"no_consent": 2, "unknown_route": 1},
    }
    assert report["re_referrals"] == {"count": 1, "rate": 0.1667}
    assert (report["step_downs"], report["co_working"]) == (1, 1)
    assert report["allocations"] == {
        "count": 3,
        "joined_open_case": 0,
        "median_hours": 2.0,
        "p90_hours": 8.4,
        "queued_at_month_end": 1,
    }
    assert report["caseload"] == {"open_at_month_end": 2, "capacity": 36, "utilisation": 0.0556}
    assert report["closures"] == {"total": 1, "by_outcome": {"needs_met": 1}}
    assert report["audits"] == {
        "due": 3,
        "completed": 2,
        "overdue": 1,
        "grades": {"good": 1, "requires_improvement": 1},
    }
    assert report["teams"] == [
        {
            "team_id": "em-a",
            "district": "eastmere",
            "allocations": 1,
            "open_at_month_end": 0,
            "capacity": 9,
        },
        {
            "team_id": "nv-a",
            "district": "northvale",
            "allocations": 2,
            "open_at_month_end": 2,
            "capacity": 27,
        },
    ]


async def test_each_district_s_october_and_late_events_land_in_their_own_month(fed: Fed) -> None:
    north, east = await fed.monthly("northvale"), await fed.monthly("eastmere")
    districts = (await fed.http.get("/reports/districts", params={"month": OCTOBER})).json()

    assert (north["requests"]["total"], north["requests"]["schools_share"]) == (4, 0.75)
    assert north["allocations"] == {
        "count": 2,
        "joined_open_case": 0,
        "median_hours": 5.5,
        "p90_hours": 9.1,
        "queued_at_month_end": 0,
    }
    assert north["caseload"]["capacity"] == 27
    assert north["audits"] == {
        "due": 2,
        "completed": 2,
        "overdue": 0,
        "grades": {"good": 1, "requires_improvement": 1},
    }
    assert east["re_referrals"] == {"count": 1, "rate": 0.5}
    assert (east["allocations"]["queued_at_month_end"], east["caseload"]["open_at_month_end"]) == (
        1,
        0,
    )
    # November's capacity change is not October's.
    assert east["caseload"]["capacity"] == 9
    assert east["audits"]["overdue"] == 1
    assert [report["district"] for report in districts["districts"]] == ["eastmere", "northvale"]
    assert districts["districts"][1] == north
    september = await fed.monthly(month="2026-09")
    assert september["requests"]["total"] == 1
    november = await fed.monthly(month="2026-11")
    assert november["allocations"]["count"] == 1
    assert november["caseload"]["capacity"] == 27 + 18
    months = (await fed.http.get("/reports/months")).json()
    assert months == ["2026-09", "2026-10", "2026-11"]


async def test_the_csv_holds_the_same_figures(fed: Fed) -> None:
    response = await fed.http.get(
        "/reports/monthly.csv", params={"month": OCTOBER, "district": "northvale"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "early-help-2026-10-northvale.csv" in response.headers["content-disposition"]
    rows = {measure: rest for measure, *rest in csv.reader(io.StringIO(response.text))}
    assert rows["measure"] == ["value", "meaning"]
    assert rows["requests.total"][0] == "4"
    assert "rejections" in rows["requests.total"][1]
    assert rows["allocations.median_hours"][0] == "5.5"
    assert rows["teams.nv-a.open_at_month_end"][0] == "2"
    assert rows["audits.grades.requires_improvement"][0] == "1"


async def test_the_funding_split_shows_its_working_and_sums_to_the_penny(fed: Fed) -> None:
    response = await fed.http.get("/reports/funding", params={"month": OCTOBER, "amount": 1000})

    split = response.json()
    north = next(entry for entry in split["districts"] if entry["district"] == "northvale")
    # 0.5 x 3/4 (schools) + 0.3 x 2/4 (accepted) + 0.2 x 2/2 (open caseload) = 0.725
    assert north["inputs"] == {"schools_requests": 3, "accepted_referrals": 2, "open_caseload": 2}
    assert north["input_shares"] == {
        "schools_requests": 0.75,
        "accepted_referrals": 0.5,
        "open_caseload": 1.0,
    }
    assert (north["share"], north["amount_pence"], north["amount"]) == (0.725, 72_500, "£725.00")
    assert split["total_pence"] == split["amount_pence"] == 100_000

    default = (await fed.http.get("/reports/funding", params={"month": OCTOBER})).json()
    assert default["amount_pence"] == 144_000_000
    assert sum(entry["amount_pence"] for entry in default["districts"]) == 144_000_000

    own = await fed.http.get(
        "/reports/funding", params={"month": OCTOBER, "weights": "open_caseload:1"}
    )
    assert [entry["amount_pence"] for entry in own.json()["districts"]] == [0, 144_000_000]
    bad = await fed.http.get("/reports/funding", params={"month": OCTOBER, "weights": "vibes:1"})
    assert bad.status_code == 422
    [problem] = bad.json()["problems"]
    assert (problem["field"], problem["code"]) == ("weights", "string_pattern_mismatch")


async def test_snapshots_carry_the_current_figures_per_district_and_month(fed: Fed) -> None:
    expected = {district: await fed.monthly(district) for district in ("northvale", "eastmere")}
    expected["all"] = await fed.monthly()

    def latest(snapshots: list[PerformanceSnapshot]) -> dict[str, PerformanceSnapshot]:
        newest: dict[str, PerformanceSnapshot] = {}
        for snapshot in snapshots:
            if snapshot.month == OCTOBER and (
                snapshot.district not in newest
                or snapshot.version > newest[snapshot.district].version
            ):
                newest[snapshot.district] = snapshot
        return newest

    newest = await eventually(
        fed.snapshots.events,
        lambda seen: (
            {d: s.figures.model_dump(mode="json") for d, s in latest(seen).items()} == expected
        ),
        timeout_s=30,
    )
    published = latest(newest)
    assert set(published) == {"northvale", "eastmere", "all"}
    # Throttled: far fewer snapshots than events, and each version once.
    october = [snapshot for snapshot in newest if snapshot.month == OCTOBER]
    assert len(october) < len(EARLY) + len(LATE)
    versions = [(snapshot.district, snapshot.version) for snapshot in october]
    assert len(versions) == len(set(versions))


async def test_a_rebuild_from_the_log_ends_with_the_same_figures(fed: Fed) -> None:
    before = {month: await fed.monthly(month=month) for month in ("2026-09", OCTOBER, "2026-11")}
    north_before = await fed.monthly("northvale")

    result = await rebuild(fed.settings, batch_size=7)

    assert result.read == len(EARLY) + len(LATE) + len(DUPLICATED)
    assert result.applied == len(EARLY) + len(LATE)
    assert result.undecodable == 0
    after = {month: await fed.monthly(month=month) for month in before}
    assert after == before
    assert await fed.monthly("northvale") == north_before


async def test_the_dashboard_shows_october_in_a_real_browser(fed: Fed) -> None:
    report = await fed.monthly()

    analyst = token(Role.PERFORMANCE_ANALYST, districts=["*"])
    page = parse(render(f"{fed.url}/dashboard?month={OCTOBER}#token={analyst}"))

    assert page.by_id("requests-total").text == str(report["requests"]["total"])
    assert page.by_id("accepted").text == "4"
    assert page.by_id("median-hours").text == "2.0"
    assert page.by_id("queue-month-end").text == "1"
    assert page.by_id("capacity").text == "36"
    assert page.by_id("re-referral-rate").text == "16.7%"
    rows = page.by_id("districts").find_all("tr", data_district=None)
    assert {row.attrs["data-district"] for row in rows} == {"eastmere", "northvale"}
