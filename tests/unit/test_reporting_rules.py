"""The monthly measures, percentiles, the CSV rows and the funding formula; the use cases
over in-memory fakes of their ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporting import handlers
from services.reporting.domain import (
    ALL_DISTRICTS,
    MONTHLY,
    STANDING,
    InvalidWeights,
    MonthTotals,
    flatten,
    month_id,
    monthly_report,
    parse_weights,
    percentile,
    percentile_of_counts,
    project,
    split_funding,
)
from services.reporting.handlers import Decoded, FundingPolicy
from shared.events import (
    PLATFORM_EVENTS,
    AuditAssigned,
    AuditCompleted,
    CaseClosed,
    EventData,
    MonthlyReport,
    PerformanceSnapshot,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
from tests.factories import case_allocated as allocated
from tests.factories import example, referral_received
from tests.fakes.reporting import InMemoryReportingStore, increment
from tests.support import service_event

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def referral(
    number: int, source: str = "2A", decision: str = "early_help", **changes: Any
) -> ReferralReceived:
    fields: dict[str, Any] = {
        "referral_id": f"ref-{number}",
        "referral_source": source,
        "route": {"2A": "school", "6": "police"}.get(source, "gp"),
        "decision": decision,
        "received_at": at(3),
    }
    return referral_received(**{**fields, **changes})


def report_of(
    events: list[EventData], month: str = "2026-11", district: str | None = None
) -> MonthlyReport:
    """The report of ``month`` after projecting ``events`` in one batch, by the domain alone."""
    projection = project(events, {})
    aggregates: dict[tuple[str, str], dict[str, Any]] = {}
    for (kind, aggregate_id, path), count in projection.increments.items():
        increment(aggregates.setdefault((kind, aggregate_id), {}), path, count)
    key = district or ALL_DISTRICTS
    return monthly_report(
        MonthTotals(
            month=month,
            district=district,
            now=NOW,
            counters=aggregates.get((MONTHLY, month_id(month, key)), {}),
            standing=aggregates.get((STANDING, key), {}),
        )
    )


def test_requests_outcomes_and_rates_are_counted_from_the_month_s_facts() -> None:
    report = report_of(
        [
            referral(1, "2A"),
            referral(2, "2A", "signpost"),
            referral(3, "6", "step_up"),
            referral(4, "3B", is_re_referral=True, is_step_down=True),
            referral(5, "2A"),
            allocated("5", "nv-a", at(4), kind="co_working", time_to_allocation_seconds=60.0),
            example(ReferralRejected, rejection_id="rej-1", received_at=at(5)),
            example(
                ReferralRejected,
                rejection_id="rej-2",
                received_at=at(6),
                reasons=[{"code": "no_consent", "field": "consent", "message": "No consent."}],
            ),
        ]
    )

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
    report = monthly_report(MonthTotals(month="2026-11", district="eastmere", now=NOW))

    assert report.requests.total == 0
    assert report.requests.schools_share is None
    assert report.re_referrals.rate is None
    assert report.allocations.median_hours is None
    assert report.caseload.capacity is None
    assert report.caseload.utilisation is None
    assert report.teams == []


def test_allocations_waiting_times_caseload_closures_and_teams() -> None:
    hours = [1, 2, 3, 4, 10]
    events: list[EventData] = [
        allocated(
            f"a{h}", "nv-a" if h < 4 else "nv-b", at(2 + h), time_to_allocation_seconds=h * 3600.0
        )
        for h in hours
    ]
    events += [allocated(f"q{n}", None, at(20)) for n in (1, 2)]
    events += [
        example(CaseClosed, case_id=f"case-a{h}", closed_at=at(25), outcome=outcome)
        for h, outcome in ((4, "needs_met"), (10, "needs_met"))
    ]
    events += [example(CaseClosed, case_id="case-q1", closed_at=at(26), outcome="moved_away")]
    events += [
        example(TeamCapacityChanged, team_id="nv-a", capacity=18, changed_at=at(1)),
        example(TeamCapacityChanged, team_id="nv-b", capacity=9, changed_at=at(1)),
    ]

    report = report_of(events, district="northvale")

    assert report.allocations.model_dump() == {
        "count": 5,
        "joined_open_case": 0,
        "median_hours": 3.0,
        "p90_hours": 7.6,
        "queued_at_month_end": 1,
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


def test_a_referral_joining_an_open_case_is_counted_apart_and_does_not_pull_the_wait_down() -> None:
    report = report_of(
        [
            allocated("new1", "nv-a", at(4), time_to_allocation_seconds=7200.0),
            allocated("new2", "nv-a", at(5), time_to_allocation_seconds=14400.0),
            allocated(
                "new1",
                "nv-a",
                at(6),
                referral_id="ref-join",
                kind="existing_case",
                time_to_allocation_seconds=0.0,
            ),
        ]
    )

    assert report.allocations.count == 2
    assert report.allocations.joined_open_case == 1
    assert (report.allocations.median_hours, report.allocations.p90_hours) == (3.0, 3.8)
    assert [(team.team_id, team.allocations) for team in report.teams] == [("nv-a", 2)]


def test_capacity_is_no_data_before_its_first_record_not_zero() -> None:
    events: list[EventData] = [
        example(TeamCapacityChanged, team_id="nv-a", capacity=18, changed_at=at(10)),
        allocated("o1", "nv-a", datetime(2026, 10, 2, tzinfo=UTC), time_to_allocation_seconds=1.0),
    ]

    october, november = report_of(events, "2026-10"), report_of(events, "2026-11")

    assert (october.caseload.capacity, october.caseload.utilisation) == (None, None)
    assert [(team.team_id, team.capacity) for team in october.teams] == [("nv-a", None)]
    assert (november.caseload.capacity, november.caseload.utilisation) == (18, 0.0556)


def test_a_team_whose_capacity_fell_to_nothing_has_no_places_not_no_data() -> None:
    report = report_of(
        [
            example(TeamCapacityChanged, team_id="nv-a", capacity=18, changed_at=at(1)),
            example(TeamCapacityChanged, team_id="nv-a", capacity=0, changed_at=at(2)),
            example(TeamCapacityChanged, team_id="nv-b", capacity=0, changed_at=at(2)),
        ]
    )

    assert report.caseload.capacity == 0
    assert [(team.team_id, team.capacity) for team in report.teams] == [("nv-a", 0), ("nv-b", 0)]


def test_audits_due_completed_overdue_and_graded() -> None:
    due_by = datetime(2026, 12, 1, tzinfo=UTC)
    events: list[EventData] = []
    for number, due in enumerate([due_by, due_by, due_by, due_by + timedelta(days=31)]):
        events.append(example(AuditAssigned, audit_id=f"a{number}", month="2026-11", due_by=due))
    for number, done in enumerate([due_by - timedelta(days=3), due_by - timedelta(days=1)]):
        events.append(
            example(AuditCompleted, audit_id=f"a{number}", month="2026-11", completed_at=done)
        )

    report = report_of(events)

    assert report.audits.model_dump() == {
        "due": 4,
        "completed": 2,
        "overdue": 1,
        "grades": {"good": 2},
    }


@given(st.dictionaries(st.integers(0, 10**6), st.integers(1, 5), min_size=1), st.floats(0, 100))
def test_a_percentile_of_counted_values_is_that_of_the_values_written_out(
    counts: dict[int, int], p: float
) -> None:
    written_out = sorted(float(value) for value, count in counts.items() for _ in range(count))

    assert percentile_of_counts(counts, p) == pytest.approx(percentile(written_out, p))


def test_names_with_dots_or_dollars_are_counted_as_they_are_and_nest_nothing() -> None:
    report = report_of(
        [
            referral(1, "2A", route="school.primary"),
            allocated("1", "team.$north", at(4), time_to_allocation_seconds=1.0),
        ]
    )

    assert report.requests.by_route == {"school.primary": 1}
    assert [team.team_id for team in report.teams] == ["team.$north"]


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([], 50, None), ([5.0], 90, 5.0), ([1.0, 3.0], 50, 2.0), ([1, 2, 3, 4, 5], 90, 4.6)],
)
def test_percentiles_interpolate_between_neighbours(
    values: list[float], p: float, expected: float | None
) -> None:
    assert percentile(values, p) == pytest.approx(expected) if expected else expected is None


def test_the_csv_rows_name_every_measure_and_team() -> None:
    report = report_of(
        [
            referral(1),
            example(TeamCapacityChanged, team_id="nv-a", capacity=18, changed_at=at(1)),
        ]
    )

    rows = {measure: value for measure, value, _ in flatten(report)}
    meanings = {measure: meaning for measure, _, meaning in flatten(report)}

    assert rows["month"] == "2026-11"
    assert rows["district"] == ""
    assert rows["requests.by_source.2A"] == "1"
    assert "requests.by_source" not in rows
    assert rows["requests.schools_share"] == "1.0"
    assert rows["teams.nv-a.capacity"] == "18"
    assert "teams" not in rows
    assert "rejections are counted under outcomes" in meanings["requests.total"]
    assert "referral-source code" in meanings["requests.by_source.2A"]
    assert "joined a case already open" in meanings["allocations.joined_open_case"]


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


async def referral_ids(store: InMemoryReportingStore) -> list[str]:
    return sorted(store.state.referral)


async def test_only_events_not_applied_before_are_projected_at_the_time_given() -> None:
    store = InMemoryReportingStore()
    first, second = delivered("a"), delivered("b")

    assert (
        await handlers.project_new_events([first, first], unit_of_work=store.unit_of_work, now=NOW)
        == 1
    )
    assert await handlers.project_new_events([first], unit_of_work=store.unit_of_work, now=NOW) == 0
    assert (
        await handlers.project_new_events([first, second], unit_of_work=store.unit_of_work, now=NOW)
        == 1
    )

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
    await handlers.project_new_events(batch, unit_of_work=store.unit_of_work, now=NOVEMBER)

    assert await publish(store, NOVEMBER) == 3
    assert await publish(store, NOVEMBER) == 0
    await handlers.project_new_events(
        [delivered("c")], unit_of_work=store.unit_of_work, now=NOVEMBER
    )
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
    await handlers.project_new_events(
        [delivered("a")], unit_of_work=store.unit_of_work, now=NOVEMBER
    )
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


class Log:
    """Retained events in batches, read as often as asked; ``meanwhile`` runs as the first
    reading ends, as a live projection may."""

    def __init__(
        self,
        *batches: list[Decoded],
        meanwhile: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._batches = batches
        self._meanwhile = meanwhile
        self.readings = 0
        self.seen: list[list[str]] = []
        self.store: InMemoryReportingStore | None = None

    async def count(self) -> int:
        return sum(len(batch) for batch in self._batches)

    async def batches(self) -> AsyncIterator[list[Decoded]]:
        self.readings += 1
        if self.store is not None:
            self.seen.append(await referral_ids(self.store))
        for batch in self._batches:
            yield batch
        if self.readings == 1 and self._meanwhile is not None:
            await self._meanwhile()


async def rebuilt(store: InMemoryReportingStore, log: Log, **options: int) -> int:
    return await handlers.rebuild(
        log,
        read_model_store=store,
        unit_of_work=store.unit_of_work,
        clock=lambda: NOW,
        **options,
    )


def a_month_of_cases() -> list[Decoded]:
    """Referrals, their cases allocated (some queued first), and some closed, as delivered."""
    events: list[EventData] = []
    for number in range(12):
        name, district = f"{number}", ("northvale", "eastmere")[number % 2]
        received = at(2 + number)
        events.append(
            referral_received(referral_id=f"ref-{name}", district=district, received_at=received)
        )
        if number % 3 == 0:
            events.append(allocated(name, None, received, district=district))
        events.append(allocated(name, f"{district}-north", received + timedelta(hours=number)))
        if number % 4 == 0:
            events.append(example(CaseClosed, case_id=f"case-{name}", closed_at=at(20)))
    return [
        PLATFORM_EVENTS.decode(
            service_event(data, service="test", event_id=f"ev-{index}"), type(data)
        )
        for index, data in enumerate(events)
    ]


async def figures(store: InMemoryReportingStore) -> list[MonthlyReport]:
    """Every report the events move: November's and December's (where the open cases stand),
    each district's and the county's."""
    wanted = [
        (month, district)
        for month in ("2026-11", "2026-12")
        for district in (None, "northvale", "eastmere")
    ]
    return await handlers.reports(wanted, read_models=store.read_models, now=NOW)


async def live(events: list[Decoded]) -> InMemoryReportingStore:
    store = InMemoryReportingStore()
    for event in events:
        await handlers.project_new_events([event], unit_of_work=store.unit_of_work, now=NOW)
    return store


async def test_a_rebuild_forgets_everything_before_reading_then_applies_each_event_once() -> None:
    store = InMemoryReportingStore()
    # Applied before the rebuild: "a" is applied again after it, "z" is not retained.
    await handlers.project_new_events(
        [delivered("a"), delivered("z")], unit_of_work=store.unit_of_work, now=NOVEMBER
    )
    log = Log([delivered("a"), delivered("b")], [], [delivered("a"), delivered("c")])
    log.store = store

    count = await rebuilt(store, log)

    assert count == 3
    assert log.seen == [[]]
    assert await referral_ids(store) == ["ref-a", "ref-b", "ref-c"]


@pytest.mark.parametrize("events_a_fold", [1_000, 10, 1])
async def test_a_rebuild_a_share_of_the_facts_at_a_time_ends_with_the_live_figures(
    events_a_fold: int,
) -> None:
    events = a_month_of_cases()
    expected = await live(events)
    store = InMemoryReportingStore()
    log = Log(events[:10], events[10:25], events[25:])

    count = await rebuilt(store, log, events_a_fold=events_a_fold)

    assert log.readings == -(-len(events) // events_a_fold)
    assert count == len(events)
    assert await figures(store) == await figures(expected)
    assert (await figures(store))[0].requests.total == 12
    assert store.state.case == expected.state.case
    assert store.state.marks.keys() == expected.state.marks.keys()


async def test_facts_stored_live_during_a_rebuild_take_the_rebuild_s_events_once() -> None:
    events = a_month_of_cases()
    expected = await live(events)
    store = InMemoryReportingStore()
    # While the log is read, the live service applies two of its events: one to a fact
    # the rebuild also holds, and a late allocation of another case.
    applied_meanwhile = [events[1], events[-1]]
    log = Log(
        events,
        meanwhile=lambda: handlers.project_new_events(
            applied_meanwhile, unit_of_work=store.unit_of_work, now=NOW
        ),
    )

    count = await rebuilt(store, log)

    assert log.readings == 2  # once to fold, once for the facts stored meanwhile
    assert count == len(events)
    assert await figures(store) == await figures(expected)
    assert store.state.case == expected.state.case
