"""The monthly measures, percentiles, the CSV rows and the funding formula; the use cases
over in-memory fakes of their ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporting import handlers
from services.reporting.domain import (
    ALL_DISTRICTS,
    InvalidWeights,
    MonthFacts,
    flatten,
    monthly_report,
    parse_weights,
    percentile,
    split_funding,
)
from services.reporting.handlers import Decoded, FundingPolicy
from shared.events import PLATFORM_EVENTS, PerformanceSnapshot, ReferralReceived
from tests.factories import referral_received
from tests.fakes.reporting import InMemoryReportingStore
from tests.support import service_event

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def referral(source: str = "2A", decision: str = "early_help", **changes: Any) -> dict[str, Any]:
    return {
        "source": source,
        "route": {"2A": "school", "6": "police"}.get(source, "gp"),
        "decision": decision,
        "re_referral": False,
        "step_down": False,
        "co_working": False,
        **changes,
    }


def test_requests_outcomes_and_rates_are_counted_from_the_month_s_facts() -> None:
    facts = MonthFacts(
        month="2026-11",
        district=None,
        referrals=[
            referral("2A"),
            referral("2A", "signpost"),
            referral("6", "step_up"),
            referral("3B", re_referral=True, step_down=True),
            referral("2A", co_working=True),
        ],
        rejections=[{"codes": ["no_consent", "unknown_route"]}, {"codes": ["no_consent"]}],
        now=NOW,
    )

    report = monthly_report(facts)

    assert report.requests.model_dump() == {
        "total": 5,
        "by_source": {"2A": 3, "3B": 1, "6": 1},
        "by_route": {"gp": 1, "police": 1, "school": 3},
        "schools": 3,
        "schools_share": 0.6,
    }
    assert report.outcomes.model_dump() == {
        "accepted_for_early_help": 3,
        "stepped_up": 1,
        "signposted": 1,
        "rejected": 2,
        "rejected_by_reason": {"no_consent": 2, "unknown_route": 1},
    }
    assert report.re_referrals.model_dump() == {"count": 1, "rate": 0.2}
    assert (report.step_downs, report.co_working) == (1, 1)


def test_an_empty_month_has_zeros_and_no_rates_rather_than_false_zeros() -> None:
    report = monthly_report(MonthFacts(month="2026-11", district="eastmere", now=NOW))

    assert report.requests.total == 0
    assert report.requests.schools_share is None
    assert report.re_referrals.rate is None
    assert report.allocations.median_hours is None
    assert report.caseload.utilisation is None
    assert report.teams == []


def test_allocations_waiting_times_caseload_closures_and_teams() -> None:
    hours = [1, 2, 3, 4, 10]
    facts = MonthFacts(
        month="2026-11",
        district="northvale",
        allocations=[
            {"team_id": "nv-a" if h < 4 else "nv-b", "district": "northvale", "seconds": h * 3600}
            for h in hours
        ],
        open_at_end=[{"team_id": "nv-a", "district": "northvale"}] * 3,
        queued_at_end=[{"district": "northvale"}] * 2,
        closures=[{"outcome": "needs_met"}, {"outcome": "needs_met"}, {"outcome": "moved_away"}],
        capacity_at_end={
            "nv-a": {"capacity": 18, "district": "northvale"},
            "nv-b": {"capacity": 9, "district": "northvale"},
        },
        now=NOW,
    )

    report = monthly_report(facts)

    assert report.allocations.model_dump() == {
        "count": 5,
        "median_hours": 3.0,
        "p90_hours": 7.6,
        "queued_at_month_end": 2,
    }
    assert report.caseload.model_dump() == {
        "open_at_month_end": 3,
        "capacity": 27,
        "utilisation": 0.1111,
    }
    assert report.closures.model_dump() == {
        "total": 3,
        "by_outcome": {"moved_away": 1, "needs_met": 2},
    }
    assert [team.model_dump() for team in report.teams] == [
        {
            "team_id": "nv-a",
            "district": "northvale",
            "allocations": 3,
            "open_at_month_end": 3,
            "capacity": 18,
        },
        {
            "team_id": "nv-b",
            "district": "northvale",
            "allocations": 2,
            "open_at_month_end": 0,
            "capacity": 9,
        },
    ]


def test_audits_due_completed_overdue_and_graded() -> None:
    due_by = datetime(2026, 12, 1, tzinfo=UTC)
    audits: list[dict[str, Any]] = [
        {"due_by": due_by, "completed_at": due_by - timedelta(days=3), "overall_grade": "good"},
        {"due_by": due_by, "completed_at": due_by - timedelta(days=1), "overall_grade": "good"},
        {"due_by": due_by, "completed_at": None, "overall_grade": None},
        {"due_by": due_by + timedelta(days=31), "completed_at": None, "overall_grade": None},
    ]

    report = monthly_report(MonthFacts(month="2026-11", district=None, audits=audits, now=NOW))

    assert report.audits.model_dump() == {
        "due": 4,
        "completed": 2,
        "overdue": 1,
        "grades": {"good": 2},
    }


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([], 50, None), ([5.0], 90, 5.0), ([1.0, 3.0], 50, 2.0), ([1, 2, 3, 4, 5], 90, 4.6)],
)
def test_percentiles_interpolate_between_neighbours(
    values: list[float], p: float, expected: float | None
) -> None:
    assert percentile(values, p) == pytest.approx(expected) if expected else expected is None


def test_the_csv_rows_name_every_measure_and_team() -> None:
    report = monthly_report(
        MonthFacts(
            month="2026-11",
            district=None,
            referrals=[referral()],
            capacity_at_end={"nv-a": {"capacity": 18, "district": "northvale"}},
            now=NOW,
        )
    )

    rows = dict(flatten(report))

    assert rows["month"] == "2026-11"
    assert rows["district"] == ""
    assert rows["requests.by_source.2A"] == "1"
    assert rows["requests.schools_share"] == "1.0"
    assert rows["teams.nv-a.capacity"] == "18"
    assert "teams" not in rows


# ---------------------------------------------------------------------------------------------
# Funding

WEIGHTS = {"schools_requests": 0.5, "accepted_referrals": 0.3, "open_caseload": 0.2}


def test_the_split_shows_its_working_and_sums_to_the_penny() -> None:
    inputs = {
        "eastmere": {"schools_requests": 10, "accepted_referrals": 30, "open_caseload": 50},
        "northvale": {"schools_requests": 30, "accepted_referrals": 30, "open_caseload": 50},
    }

    split = split_funding(144_000_000, inputs, WEIGHTS)

    east, north = split.districts
    assert east.input_shares == {
        "schools_requests": 0.25,
        "accepted_referrals": 0.5,
        "open_caseload": 0.5,
    }
    # 0.5 x 0.25 + 0.3 x 0.5 + 0.2 x 0.5 = 0.375
    assert (east.share, east.amount_pence) == (0.375, 54_000_000)
    assert (north.share, north.amount_pence) == (0.625, 90_000_000)


def test_an_input_that_is_zero_everywhere_gives_its_weight_to_the_others() -> None:
    inputs = {
        "a": {"schools_requests": 1, "accepted_referrals": 0, "open_caseload": 0},
        "b": {"schools_requests": 3, "accepted_referrals": 0, "open_caseload": 0},
    }

    split = split_funding(1000, inputs, WEIGHTS)

    assert [share.amount_pence for share in split.districts] == [250, 750]


def test_with_nothing_to_go_on_districts_share_equally_and_pence_still_add_up() -> None:
    zero = {"schools_requests": 0, "accepted_referrals": 0, "open_caseload": 0}

    split = split_funding(100, {"a": zero, "b": zero, "c": zero}, WEIGHTS)

    assert [share.amount_pence for share in split.districts] == [34, 33, 33]


@given(
    amount=st.integers(min_value=0, max_value=10**12),
    inputs=st.dictionaries(
        st.sampled_from(["northvale", "eastmere", "southford", "westbrook", "x"]),
        st.fixed_dictionaries({name: st.integers(0, 10_000) for name in WEIGHTS}),
        min_size=1,
    ),
)
def test_the_parts_always_add_up_to_the_amount_exactly(
    amount: int, inputs: dict[str, dict[str, int]]
) -> None:
    split = split_funding(amount, inputs, WEIGHTS)

    assert sum(share.amount_pence for share in split.districts) == amount
    assert all(share.amount_pence >= 0 for share in split.districts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schools_requests:1,happiness:2", "unknown funding input 'happiness'"),
        ("schools_requests:lots", "decimal above 0: 'lots'"),
        ("schools_requests:-1", "decimal above 0: '-1'"),
        ("schools_requests:0", "decimal above 0: '0'"),
        ("open_caseload:nan", "decimal above 0: 'nan'"),
        ("open_caseload:1e3", "decimal above 0: '1e3'"),
        ("open_caseload:1,", "unknown funding input ''"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weights(text)


def test_weights_are_parsed() -> None:
    assert parse_weights("schools_requests:0.5, open_caseload:1") == {
        "schools_requests": 0.5,
        "open_caseload": 1.0,
    }


# ---------------------------------------------------------------------------------------------
# The use cases, over in-memory fakes of their ports


NOVEMBER = datetime(2026, 11, 20, tzinfo=UTC)


def delivered(name: str, district: str = "northvale", source: str = "2A") -> Decoded:
    data = referral_received(
        referral_id=f"ref-{name}",
        district=district,
        referral_source=source,
        received_at=datetime(2026, 11, 3, tzinfo=UTC),
    )
    raw = service_event(data, service="test", event_id=f"ev-{name}")
    return PLATFORM_EVENTS.decode(raw, ReferralReceived)


async def referral_ids(store: InMemoryReportingStore, month: str = "2026-11") -> list[str]:
    facts = await store.read_models.month_facts(month, None, now=NOW)
    return sorted(referral["_id"] for referral in facts.referrals)


async def test_only_events_not_applied_before_are_projected_at_the_time_given() -> None:
    store = InMemoryReportingStore()
    first, second = delivered("a"), delivered("b")

    assert await handlers.project_new_events([first, first], applied=store.applied, now=NOW) == 1
    assert await handlers.project_new_events([first], applied=store.applied, now=NOW) == 0
    assert await handlers.project_new_events([first, second], applied=store.applied, now=NOW) == 1

    assert await referral_ids(store) == ["ref-a", "ref-b"]
    # Projected in December, November's changes also move December's month-end figures.
    due = await store.snapshots.due(0, now=NOW)
    assert sorted((each.key, each.changes) for each in due) == [
        ("2026-11|all", 2),
        ("2026-11|northvale", 2),
        ("2026-12|all", 2),
        ("2026-12|northvale", 2),
    ]


def publish(store: InMemoryReportingStore, now: datetime) -> Awaitable[int]:
    return handlers.publish_due_snapshots(
        snapshots=store.snapshots,
        read_models=store.read_models,
        unit_of_work=store.unit_of_work,
        interval_s=60,
        now=now,
    )


async def test_a_due_snapshot_is_staged_once_with_its_version_and_the_current_figures() -> None:
    store = InMemoryReportingStore()
    batch = [delivered("a"), delivered("b", "eastmere", "6")]
    await handlers.project_new_events(batch, applied=store.applied, now=NOVEMBER)

    assert await publish(store, NOVEMBER) == 3
    assert await publish(store, NOVEMBER) == 0
    await handlers.project_new_events([delivered("c")], applied=store.applied, now=NOVEMBER)
    assert await publish(store, NOVEMBER + timedelta(seconds=59)) == 0
    assert await publish(store, NOVEMBER + timedelta(seconds=60)) == 2

    staged = store.published.staged
    assert sorted((event.correlation_id, event.event_id) for event in staged) == [
        ("snapshot-2026-11|all", "2026-11|all.1"),
        ("snapshot-2026-11|all", "2026-11|all.2"),
        ("snapshot-2026-11|eastmere", "2026-11|eastmere.1"),
        ("snapshot-2026-11|northvale", "2026-11|northvale.1"),
        ("snapshot-2026-11|northvale", "2026-11|northvale.2"),
    ]
    snapshots = {event.event_id: event.data for event in staged}
    north, county = snapshots["2026-11|northvale.2"], snapshots["2026-11|all.2"]
    assert isinstance(north, PerformanceSnapshot)
    assert isinstance(county, PerformanceSnapshot)
    assert (north.version, north.generated_at, north.figures.district) == (
        2,
        NOVEMBER + timedelta(seconds=60),
        "northvale",
    )
    assert north.figures.requests.total == 2
    assert (county.district, county.figures.district) == (ALL_DISTRICTS, None)
    assert county.figures.requests.total == 3
    assert county.figures.requests.by_source == {"2A": 2, "6": 1}


async def test_funding_weights_that_cannot_be_used_are_refused() -> None:
    store = InMemoryReportingStore()
    await handlers.project_new_events([delivered("a")], applied=store.applied, now=NOVEMBER)
    policy = FundingPolicy(amount_pounds=10.0, weights={"schools_requests": 1.0})

    with pytest.raises(InvalidWeights, match="unknown funding input 'vibes'"):
        await handlers.split_funding(
            "2026-11",
            amount_pounds=None,
            weights="vibes:1",
            policy=policy,
            read_models=store.read_models,
            now=NOW,
        )

    split = await handlers.split_funding(
        "2026-11",
        amount_pounds=None,
        weights=None,
        policy=policy,
        read_models=store.read_models,
        now=NOW,
    )
    assert [(share.district, share.amount_pence) for share in split.districts] == [
        ("northvale", 1000)
    ]


async def test_a_rebuild_forgets_everything_before_reading_then_applies_each_event_once() -> None:
    store = InMemoryReportingStore()
    applied = store.applied
    # Applied before the rebuild: "a" is applied again after it, "z" is not retained.
    await handlers.project_new_events(
        [delivered("a"), delivered("z")], applied=applied, now=NOVEMBER
    )
    seen_when_read: list[list[str]] = []

    async def retained() -> AsyncIterator[list[Decoded]]:
        seen_when_read.append(await referral_ids(store))
        yield [delivered("a"), delivered("b")]
        yield []
        yield [delivered("a"), delivered("c")]

    count = await handlers.rebuild(
        retained(), read_model_store=store, applied=applied, clock=lambda: NOW
    )

    assert count == 3
    assert seen_when_read == [[]]
    assert await referral_ids(store) == ["ref-a", "ref-b", "ref-c"]
