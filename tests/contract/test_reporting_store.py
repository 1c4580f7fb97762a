"""The reporting store's contract, run on ``InMemoryReportingStore`` and on
``MongoReportingStore`` over the real database: the same events give the same figures,
whatever order they arrive in and however often, and the snapshots are published once each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from services.reporting import handlers
from services.reporting.domain import Fold, MonthTotals, monthly_report
from services.reporting.ports import DueSnapshot, ReportingStore
from services.reporting.store import MongoReportingStore
from shared.events import (
    PLATFORM_EVENTS,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    PerformanceSnapshot,
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
from tests.contract.conftest import (
    Clock,
    MongoDatabase,
    Published,
    published_by,
    published_from,
)
from tests.factories import case_allocated as allocated
from tests.factories import example, referral_received
from tests.fakes.reporting import InMemoryReportingStore
from tests.support import service_event

EventT = TypeVar("EventT", bound=EventData)

NOW = datetime(2027, 1, 15, 12, tzinfo=UTC)
"""After every example's month, and after the example audit's ``due_by``."""
NOVEMBER = datetime(2026, 11, 20, 12, tzinfo=UTC)
"""In the example referral's and rejection's month."""


@dataclass
class Backend:
    store: ReportingStore
    staged: Published


@pytest.fixture
def backend(database: MongoDatabase | None, clock: Clock) -> Backend:
    if database is None:
        memory = InMemoryReportingStore()
        return Backend(memory, published_by(memory))
    store = MongoReportingStore(database.client, database.db, database.outbox)
    return Backend(store, published_from(database))


@pytest.fixture
async def store(backend: Backend) -> ReportingStore:
    await backend.store.ensure_indexes()
    return backend.store


def at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def closed(case: str, when: datetime) -> CaseClosed:
    return example(CaseClosed, case_id=f"case-{case}", closed_at=when)


def capacity(team: str, district: str, places: int, when: datetime) -> TeamCapacityChanged:
    return example(
        TeamCapacityChanged, team_id=team, district=district, capacity=places, changed_at=when
    )


def delivered(data: EventData, event_id: str) -> tuple[RawEvent, EventData]:
    return PLATFORM_EVENTS.decode(
        service_event(data, service="test", event_id=event_id), type(data)
    )


async def project(store: ReportingStore, *events: EventData, now: datetime = NOW) -> None:
    """Each event in a unit of work of its own, as separate deliveries would be."""
    for data in events:
        await handlers.project_events([data], uow=store.unit_of_work(), now=now)


async def figures(
    store: ReportingStore, month: str, district: str | None = None, *, now: datetime = NOW
) -> dict[str, Any]:
    [totals] = await store.read_models.totals([(month, district)], now=now)
    return monthly_report(totals).model_dump(mode="json")


def nothing(month: str, district: str | None = None) -> dict[str, Any]:
    """The figures of a month with no facts."""
    report = monthly_report(MonthTotals(month=month, district=district, now=NOW))
    return report.model_dump(mode="json")


def keys(due: list[DueSnapshot]) -> dict[str, tuple[int, int, bool]]:
    """Each due snapshot's (changes, version, first), by key."""
    return {each.key: (each.changes, each.version, each.first) for each in due}


# ---------------------------------------------------------------------------------------------
# Facts and figures


async def test_a_store_with_nothing_projected_has_no_facts_months_districts_or_snapshots(
    store: ReportingStore,
) -> None:
    assert await figures(store, "2026-11") == nothing("2026-11")
    assert await figures(store, "2026-11", "northvale") == nothing("2026-11", "northvale")
    assert await store.read_models.months() == []
    assert await store.read_models.districts() == []
    assert await store.snapshots.due(0, now=NOW) == []


REFERRAL_REQUESTS = {
    "total": 1,
    "by_source": {"2A": 1},
    "by_route": {"school": 1},
    "schools": 1,
    "schools_share": 1.0,
}
ALLOCATED_TEAM = {
    "team_id": "northvale-north",
    "district": "northvale",
    "allocations": 1,
    "open_at_month_end": 1,
    "capacity": None,
}
EACH_EVENT_TYPE = {
    "referral-received": (
        example(ReferralReceived),
        "2026-11",
        {
            "requests": REFERRAL_REQUESTS,
            "outcomes": {
                "accepted_for_early_help": 1,
                "stepped_up": 0,
                "signposted": 0,
                "rejected": 0,
                "rejected_by_reason": {},
            },
            "re_referrals": {"count": 0, "rate": 0.0},
        },
        (["2026-11"], ["northvale"]),
    ),
    "referral-rejected": (
        example(ReferralRejected),
        "2026-11",
        {
            "outcomes": {
                "accepted_for_early_help": 0,
                "stepped_up": 0,
                "signposted": 0,
                "rejected": 1,
                "rejected_by_reason": {"no_consent": 1, "unknown_route": 1},
            },
        },
        (["2026-11"], []),
    ),
    "case-allocated": (
        example(CaseAllocated, time_to_allocation_seconds=5400.0),
        "2026-11",
        {
            "allocations": {
                "count": 1,
                "joined_open_case": 0,
                "median_hours": 1.5,
                "p90_hours": 1.5,
                "queued_at_month_end": 0,
            },
            "caseload": {"open_at_month_end": 1, "capacity": None, "utilisation": None},
            "teams": [ALLOCATED_TEAM],
        },
        (["2026-11"], ["northvale"]),
    ),
    "case-allocated, queued": (
        allocated("q1", None, at(11, 4), queue_position=3, time_to_allocation_seconds=None),
        "2026-11",
        {
            "allocations": {
                "count": 0,
                "joined_open_case": 0,
                "median_hours": None,
                "p90_hours": None,
                "queued_at_month_end": 1,
            },
        },
        ([], ["northvale"]),
    ),
    "case-closed": (
        example(CaseClosed),
        "2027-02",
        {"closures": {"total": 1, "by_outcome": {"needs_met": 1}}},
        ([], ["northvale"]),
    ),
    "team-capacity-changed": (
        example(TeamCapacityChanged),
        "2026-11",
        {
            "caseload": {"open_at_month_end": 0, "capacity": 57, "utilisation": 0.0},
            "teams": [{**ALLOCATED_TEAM, "allocations": 0, "open_at_month_end": 0, "capacity": 57}],
        },
        ([], ["northvale"]),
    ),
    "audit-assigned": (
        example(AuditAssigned),
        "2026-12",
        {"audits": {"due": 1, "completed": 0, "overdue": 1, "grades": {}}},
        (["2026-12"], []),
    ),
    "audit-completed": (
        example(AuditCompleted),
        "2026-12",
        {"audits": {"due": 1, "completed": 1, "overdue": 0, "grades": {"good": 1}}},
        (["2026-12"], []),
    ),
}


@pytest.mark.parametrize(
    ("data", "month", "changed", "listed"),
    list(EACH_EVENT_TYPE.values()),
    ids=list(EACH_EVENT_TYPE),
)
async def test_each_event_type_moves_its_own_figures_of_its_month_and_district(
    store: ReportingStore,
    data: EventData,
    month: str,
    changed: dict[str, Any],
    listed: tuple[list[str], list[str]],
) -> None:
    await project(store, data)

    assert await figures(store, month) == {**nothing(month), **changed}
    in_district = {} if isinstance(data, ReferralRejected) else changed
    assert await figures(store, month, "northvale") == {
        **nothing(month, "northvale"),
        **in_district,
    }
    assert await figures(store, month, "eastmere") == nothing(month, "eastmere")
    assert await figures(store, "2026-01") == nothing("2026-01")
    assert (await store.read_models.months(), await store.read_models.districts()) == listed


async def test_a_redelivered_event_rewrites_the_same_fact(store: ReportingStore) -> None:
    referral = example(ReferralReceived)
    allocation = example(CaseAllocated, time_to_allocation_seconds=5400.0)

    await project(store, referral, allocation)
    once = await figures(store, "2026-11")
    await project(store, referral, allocation, referral)

    assert await figures(store, "2026-11") == once
    assert once["requests"] == REFERRAL_REQUESTS
    assert once["allocations"]["count"] == 1


OCTOBER = [
    referral_received(referral_id="ref-c1", received_at=at(10, 1)),
    allocated(
        "c1",
        "nv-a",
        at(10, 2),
        kind="co_working",
        time_to_allocation_seconds=86400.0,
    ),
    allocated("c1", "nv-b", at(10, 9), reallocated_from_worker_id="nv-a-w1"),
    allocated("c2", "nv-a", at(10, 3), time_to_allocation_seconds=3600.0),
    closed("c2", at(10, 20)),
    example(AuditAssigned, month="2026-10", due_by=at(11, 1, 0)),
    example(AuditCompleted, month="2026-10", completed_at=at(10, 25)),
]


@pytest.mark.parametrize("order", ["as-they-happened", "reversed", "reversed-in-one-batch"])
async def test_events_arriving_out_of_order_give_the_same_figures(
    store: ReportingStore, order: str
) -> None:
    """Reversed, a co-working allocation comes before its referral, a reallocation before
    the first allocation, a closure before its allocation, a completion before its
    assignment."""
    if order == "as-they-happened":
        await project(store, *OCTOBER)
    elif order == "reversed":
        await project(store, *reversed(OCTOBER))
    else:
        await handlers.project_events(OCTOBER[::-1], uow=store.unit_of_work(), now=NOW)

    october = await figures(store, "2026-10")
    assert october == {
        **nothing("2026-10"),
        "requests": REFERRAL_REQUESTS,
        "outcomes": {**nothing("2026-10")["outcomes"], "accepted_for_early_help": 1},
        "re_referrals": {"count": 0, "rate": 0.0},
        "co_working": 1,
        # c1 after 24 hours (its reallocation is no allocation), c2 after 1: 1 + 0.9 x 23.
        "allocations": {
            "count": 2,
            "joined_open_case": 0,
            "median_hours": 12.5,
            "p90_hours": 21.7,
            "queued_at_month_end": 0,
        },
        "caseload": {"open_at_month_end": 1, "capacity": None, "utilisation": None},
        "closures": {"total": 1, "by_outcome": {"needs_met": 1}},
        "audits": {"due": 1, "completed": 1, "overdue": 0, "grades": {"good": 1}},
        # c1 counts as allocated by nv-a and open under nv-b, its newest team.
        "teams": [
            {
                "team_id": "nv-a",
                "district": "northvale",
                "allocations": 2,
                "open_at_month_end": 0,
                "capacity": None,
            },
            {
                "team_id": "nv-b",
                "district": "northvale",
                "allocations": 0,
                "open_at_month_end": 1,
                "capacity": None,
            },
        ],
    }
    assert await figures(store, "2026-10", "northvale") == {**october, "district": "northvale"}


async def test_month_end_figures_are_those_standing_at_the_month_s_end(
    store: ReportingStore,
) -> None:
    await project(
        store,
        capacity("nv-a", "northvale", 40, at(11, 5)),
        capacity("nv-a", "northvale", 18, at(9, 1)),
        capacity("em-a", "eastmere", 9, at(9, 1)),
        capacity("nv-a", "northvale", 27, at(10, 10)),
        allocated("q1", None, at(10, 3), district="eastmere"),
        allocated("q1", "em-a", at(11, 2), district="eastmere", time_to_allocation_seconds=1e5),
        allocated("o1", "nv-a", at(10, 5), time_to_allocation_seconds=7200.0),
        allocated("o1", "nv-a", at(11, 3), reallocated_from_worker_id="nv-a-w1"),
        closed("o1", at(11, 10)),
    )

    def month_end(report: dict[str, Any]) -> tuple[Any, ...]:
        allocations, caseload = report["allocations"], report["caseload"]
        return (
            allocations["count"],
            allocations["queued_at_month_end"],
            caseload["open_at_month_end"],
            caseload["capacity"],
            report["closures"]["total"],
        )

    # October ends with q1 queued, o1 open (allocated before its reallocation), and nv-a at
    # 27 places, em-a at 9.
    assert month_end(await figures(store, "2026-10")) == (1, 1, 1, 36, 0)
    assert month_end(await figures(store, "2026-10", "northvale")) == (1, 0, 1, 27, 0)
    assert month_end(await figures(store, "2026-10", "eastmere")) == (0, 1, 0, 9, 0)
    # November ends with q1 open, o1 closed, and nv-a at 40.
    assert month_end(await figures(store, "2026-11")) == (1, 0, 1, 49, 1)
    assert month_end(await figures(store, "2026-09")) == (0, 0, 0, 27, 0)
    assert (await figures(store, "2026-10"))["caseload"]["utilisation"] == 0.0278


async def test_months_and_districts_are_listed_once_each_in_ascending_order(
    store: ReportingStore,
) -> None:
    await project(
        store,
        referral_received(referral_id="ref-1", district="eastmere", received_at=at(11, 3)),
        referral_received(referral_id="ref-2", received_at=at(9, 3)),
        referral_received(referral_id="ref-3", district="eastmere", received_at=at(11, 9)),
        capacity("sf-a", "southford", 12, at(10, 1)),
        example(ReferralRejected, received_at=at(12, 1)),
        example(AuditAssigned, month="2027-01", district="westbrook"),
    )

    assert await store.read_models.months() == ["2026-09", "2026-11", "2026-12", "2027-01"]
    assert await store.read_models.districts() == ["eastmere", "northvale", "southford"]


async def test_a_referral_joining_an_open_case_is_no_allocation_and_its_wait_is_left_out(
    store: ReportingStore,
) -> None:
    await project(
        store,
        allocated("c1", "nv-a", at(11, 2), time_to_allocation_seconds=7200.0),
        allocated(
            "c1",
            "nv-a",
            at(11, 5),
            referral_id="ref-c1-again",
            kind="existing_case",
            time_to_allocation_seconds=0.0,
        ),
    )

    november = await figures(store, "2026-11")
    assert november["allocations"] == {
        "count": 1,
        "joined_open_case": 1,
        "median_hours": 2.0,
        "p90_hours": 2.0,
        "queued_at_month_end": 0,
    }
    assert [(team["team_id"], team["allocations"]) for team in november["teams"]] == [("nv-a", 1)]
    assert november["caseload"]["open_at_month_end"] == 1


async def test_a_fact_changed_by_two_deliveries_at_once_counts_once_from_each(
    store: ReportingStore,
) -> None:
    """A case's allocation and its closure, projected at once by two consumers: whichever
    commits second reads the case again, so the closure and the open case both count."""
    allocation = delivered(allocated("c1", "nv-a", at(10, 2), time_to_allocation_seconds=1.0), "a")
    closure = delivered(closed("c1", at(11, 3)), "b")

    await asyncio.gather(
        handlers.project_new_events([allocation], unit_of_work=store.unit_of_work, now=NOW),
        handlers.project_new_events([closure], unit_of_work=store.unit_of_work, now=NOW),
    )

    october, november = await figures(store, "2026-10"), await figures(store, "2026-11")
    assert (october["allocations"]["count"], october["caseload"]["open_at_month_end"]) == (1, 1)
    assert (november["closures"]["total"], november["caseload"]["open_at_month_end"]) == (1, 0)


# ---------------------------------------------------------------------------------------------
# Applied events


async def test_an_event_delivered_twice_is_applied_once(store: ReportingStore) -> None:
    """No record of applied events is kept: an event applied again changes no fact."""
    first = delivered(referral_received(referral_id="ref-a", received_at=at(11, 3)), "ev-a")
    second = delivered(referral_received(referral_id="ref-b", received_at=at(11, 4)), "ev-b")

    async def apply(*batch: tuple[RawEvent, EventData]) -> int:
        return await handlers.project_new_events(
            batch, unit_of_work=store.unit_of_work, now=NOVEMBER
        )

    assert await apply(first, first) == 1
    assert await apply(first) == 0
    assert await apply(first, second) == 1

    assert (await figures(store, "2026-11"))["requests"] == {
        **REFERRAL_REQUESTS,
        "total": 2,
        "by_source": {"2A": 2},
        "by_route": {"school": 2},
        "schools": 2,
    }
    # Only the batches that changed something marked the figures.
    assert keys(await store.snapshots.due(0, now=NOVEMBER)) == {
        "2026-11|northvale": (2, 0, True),
        "2026-11|all": (2, 0, True),
    }


async def test_an_application_that_fails_records_nothing(store: ReportingStore) -> None:
    event, data = delivered(example(ReferralReceived), "ev-a")

    async def fail() -> None:
        async with store.unit_of_work() as uow:
            await uow.projections.project([data], now=NOW)
            raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError, match="the use case failed"):
        await fail()

    assert await figures(store, "2026-11") == nothing("2026-11")
    assert await store.snapshots.due(0, now=NOW) == []
    assert (
        await handlers.project_new_events([(event, data)], unit_of_work=store.unit_of_work, now=NOW)
        == 1
    )
    assert (await figures(store, "2026-11"))["requests"] == REFERRAL_REQUESTS


async def test_dropped_read_models_leave_nothing_to_read_until_the_events_are_applied_again(
    store: ReportingStore,
) -> None:
    referral = delivered(example(ReferralReceived), "ev-a")
    assert (
        await handlers.project_new_events([referral], unit_of_work=store.unit_of_work, now=NOW) == 1
    )
    await project(store, example(TeamCapacityChanged), example(AuditAssigned))
    [due, *_] = await store.snapshots.due(0, now=NOW)
    async with store.unit_of_work() as uow:
        assert await uow.snapshots.claim(due, now=NOW) == 1
        await uow.commit()

    await store.drop_all()
    await store.ensure_indexes()

    for month in ("2026-11", "2026-12", "2027-01"):
        assert await figures(store, month) == nothing(month)
    assert await store.read_models.months() == []
    assert await store.read_models.districts() == []
    assert await store.snapshots.due(0, now=NOW) == []
    assert (
        await handlers.project_new_events([referral], unit_of_work=store.unit_of_work, now=NOW) == 1
    )
    assert (await figures(store, "2026-11"))["requests"] == REFERRAL_REQUESTS
    assert keys(await store.snapshots.due(0, now=NOW)) == {
        "2026-11|northvale": (1, 0, True),
        "2026-11|all": (1, 0, True),
        "2027-01|northvale": (1, 0, True),
        "2027-01|all": (1, 0, True),
    }


async def test_facts_folded_for_a_rebuild_are_loaded_and_added_up_as_projection_leaves_them(
    store: ReportingStore,
) -> None:
    events = [
        referral_received(referral_id="ref-1", received_at=at(11, 3)),
        referral_received(referral_id="ref-2", district="eastmere", received_at=at(11, 4)),
        allocated("1", None, at(11, 3)),
        allocated("1", "northvale-north", at(11, 5)),
        closed("1", at(12, 2)),
    ]
    projected = InMemoryReportingStore()
    await project(projected, *events)
    fold = Fold()
    for data in events:
        fold.add(data)
    # The live projection stored one of the facts first: it is left as it stored it.
    await project(store, events[1])
    stored_first = ("referral", "ref-2")

    stored = await store.load(fold.facts)
    await store.add_up(fold.increments(leaving_out=stored), fold.touched, now=NOW)

    assert stored == {stored_first}
    for month in ("2026-11", "2026-12", "2027-01"):
        for district in (None, "northvale", "eastmere"):
            assert await figures(store, month, district) == await figures(
                projected, month, district
            ), (month, district)
    assert keys(await store.snapshots.due(0, now=NOW)).keys() == {
        f"{month}|{district}"
        for month in ("2026-11", "2026-12", "2027-01")
        for district in ("northvale", "eastmere", "all")
    } - {"2026-12|eastmere"}
    # The live projection goes on over the loaded facts as over its own.
    later = [
        allocated("2", "eastmere-coast", at(11, 6), district="eastmere"),
        referral_received(referral_id="ref-1", received_at=at(11, 3), district="eastmere"),
    ]
    await project(store, *later)
    await project(projected, *later)
    assert (await figures(store, "2026-11", "eastmere"))["allocations"]["count"] == 1
    assert await figures(store, "2026-11") == await figures(projected, "2026-11")


# ---------------------------------------------------------------------------------------------
# Snapshots


async def test_figures_that_moved_are_due_for_a_first_snapshot_at_once(
    store: ReportingStore,
) -> None:
    await project(store, example(ReferralReceived), now=NOVEMBER)
    await project(store, example(ReferralRejected), now=NOVEMBER)

    assert keys(await store.snapshots.due(3600, now=NOVEMBER)) == {
        "2026-11|northvale": (1, 0, True),
        "2026-11|all": (2, 0, True),
    }
    [county] = [due for due in await store.snapshots.due(0, now=NOW) if due.key == "2026-11|all"]
    assert (county.month, county.district) == ("2026-11", "all")


async def test_a_change_to_an_earlier_month_also_moves_the_current_month_s_figures(
    store: ReportingStore,
) -> None:
    await project(store, example(TeamCapacityChanged), now=at(12, 5))

    assert keys(await store.snapshots.due(0, now=at(12, 5))) == {
        "2026-11|northvale": (1, 0, True),
        "2026-11|all": (1, 0, True),
        "2026-12|northvale": (1, 0, True),
        "2026-12|all": (1, 0, True),
    }


async def claim(store: ReportingStore, due: DueSnapshot, now: datetime) -> int | None:
    """Claim and commit, as the use case does: a claim refused is left without commit."""
    async with store.unit_of_work() as uow:
        version = await uow.snapshots.claim(due, now=now)
        if version is not None:
            await uow.commit()
    return version


async def test_a_due_snapshot_is_claimed_once(store: ReportingStore) -> None:
    await project(store, example(ReferralRejected), now=NOVEMBER)
    [due] = await store.snapshots.due(0, now=NOVEMBER)

    assert await claim(store, due, NOVEMBER) == 1
    assert await claim(store, due, NOVEMBER) is None
    assert await store.snapshots.due(0, now=NOVEMBER) == []


async def test_later_changes_are_due_again_once_the_interval_has_passed(
    store: ReportingStore,
) -> None:
    await project(store, example(ReferralRejected), now=NOVEMBER)
    [first] = await store.snapshots.due(60, now=NOVEMBER)
    assert await claim(store, first, NOVEMBER) == 1

    await project(store, example(ReferralRejected, rejection_id="rej-2"), now=NOVEMBER)

    assert await store.snapshots.due(60, now=NOVEMBER + timedelta(seconds=59)) == []
    [again] = await store.snapshots.due(60, now=NOVEMBER + timedelta(seconds=60))
    assert (again.key, again.changes, again.version, again.first) == ("2026-11|all", 2, 1, False)
    assert await claim(store, first, NOVEMBER) is None
    assert await claim(store, again, NOVEMBER + timedelta(seconds=60)) == 2
    assert await claim(store, again, NOVEMBER + timedelta(seconds=60)) is None
    assert await store.snapshots.due(0, now=NOVEMBER + timedelta(days=1)) == []


async def test_a_change_committed_while_a_snapshot_is_being_taken_gets_a_snapshot_of_its_own(
    store: ReportingStore,
) -> None:
    """The projection and the snapshot never write the same record, so neither commit can
    undo the other's."""
    await project(store, example(ReferralRejected), now=NOVEMBER)
    [due] = await store.snapshots.due(0, now=NOVEMBER)

    async with store.unit_of_work() as snapshot:
        assert await snapshot.snapshots.claim(due, now=NOVEMBER) == 1
        await project(store, example(ReferralRejected, rejection_id="rej-2"), now=NOVEMBER)
        await snapshot.commit()

    [again] = await store.snapshots.due(0, now=NOVEMBER)
    assert (again.changes, again.version, again.first) == (2, 1, False)
    assert (await figures(store, "2026-11"))["outcomes"]["rejected"] == 2


# ---------------------------------------------------------------------------------------------
# The unit of work


async def test_leaving_a_unit_of_work_without_commit_keeps_nothing(
    store: ReportingStore, backend: Backend
) -> None:
    await project(store, example(ReferralRejected), now=NOVEMBER)
    [due] = await store.snapshots.due(0, now=NOVEMBER)

    async with store.unit_of_work() as uow:
        await uow.projections.project([example(ReferralReceived)], now=NOVEMBER)
        assert await uow.snapshots.claim(due, now=NOVEMBER) == 1
        await uow.events.stage(example(PerformanceSnapshot), correlation_id="c", event_id="e.1")

    assert (await figures(store, "2026-11"))["requests"] == nothing("2026-11")["requests"]
    assert await store.read_models.districts() == []
    assert keys(await store.snapshots.due(0, now=NOVEMBER)) == {"2026-11|all": (1, 0, True)}
    assert await backend.staged() == []
    assert await claim(store, due, NOVEMBER) == 1


async def test_staged_events_are_published_on_commit_and_a_repeated_id_keeps_the_first(
    store: ReportingStore, backend: Backend
) -> None:
    first = example(PerformanceSnapshot)
    repeated = example(PerformanceSnapshot, version=first.version + 1)
    other = example(PerformanceSnapshot, district="eastmere")

    async with store.unit_of_work() as uow:
        await uow.events.stage(first, correlation_id="snapshot", event_id="2026-11|all.1")
        assert await backend.staged() == []
        await uow.commit()
    assert await backend.staged() == [("2026-11|all.1", first)]

    async with store.unit_of_work() as uow:
        await uow.events.stage(repeated, correlation_id="snapshot", event_id="2026-11|all.1")
        await uow.events.stage(other, correlation_id="snapshot", event_id="2026-11|eastmere.1")
        await uow.commit()

    assert await backend.staged() == [("2026-11|all.1", first), ("2026-11|eastmere.1", other)]
