"""The audit service's ports, as its use cases rely on them: the same tests on
``InMemoryAuditStore`` and on ``MongoAuditStore`` over the real database."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.audit.domain import (
    Audit,
    Auditor,
    AuditorRole,
    AuditStatus,
    CaseState,
    DrawRecord,
    DrawRound,
)
from services.audit.ports import AuditNotOpen, AuditPlace, AuditStore
from services.audit.store import MongoAuditStore
from shared.events import AuditAssigned
from shared.unit_of_work import ConcurrentUpdate
from tests.contract.conftest import (
    MongoDatabase,
    Published,
    published_by,
    published_from,
)
from tests.fakes.audit import InMemoryAuditStore

T0 = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@dataclass
class Backend:
    store: AuditStore
    published: Published


@pytest.fixture
async def backend(database: MongoDatabase | None) -> Backend:
    if database is None:
        fake = InMemoryAuditStore()
        return Backend(fake, published_by(fake))
    store = MongoAuditStore(database.client, database.db, database.outbox)
    await store.ensure_indexes()
    return Backend(store, published_from(database))


@pytest.fixture
def store(backend: Backend) -> AuditStore:
    return backend.store


def a_case(case_id: str, first_allocated_at: datetime | None = T0, **fields: object) -> CaseState:
    case = CaseState(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        district="northvale",
        team_id="northvale-north",
        worker_id="w-1",
        level_of_need=2 if first_allocated_at else None,
        first_allocated_at=first_allocated_at,
        as_of=first_allocated_at,
    )
    return replace(case, **fields)  # type: ignore[arg-type]


def an_auditor(auditor_id: str, **fields: object) -> Auditor:
    auditor = Auditor(
        id=auditor_id,
        name=f"Name of {auditor_id}",
        role=AuditorRole.TEAM_MANAGER,
        district="northvale",
        team_id="northvale-north",
    )
    return replace(auditor, **fields)  # type: ignore[arg-type]


def an_audit(
    audit_id: str,
    *,
    month: str = "2026-03",
    auditor_id: str = "tm-1",
    case_id: str | None = None,
    due_by: datetime = datetime(2026, 4, 1, tzinfo=UTC),
) -> Audit:
    return Audit(
        id=audit_id,
        month=month,
        auditor_id=auditor_id,
        auditor_role=AuditorRole.TEAM_MANAGER,
        case_id=case_id or f"case-of-{audit_id}",
        family_id=f"fam-of-{audit_id}",
        district="northvale",
        team_id="northvale-south",
        level_of_need=3,
        case_status="open",
        draw_seed=17,
        assigned_at=T0,
        due_by=due_by,
    )


def graded(audit: Audit, grade: str = "good", at: datetime = T0 + timedelta(days=2)) -> Audit:
    return replace(
        audit,
        scores={"plan_quality": grade, "voice_of_the_child": "outstanding"},
        overall_grade=grade,
        overall_grade_given=True,
        learning_points=[f"Learn from {audit.id}."],
        completed_at=at,
    )


def assigned_event(audit_id: str, auditor_id: str = "tm-1") -> AuditAssigned:
    return AuditAssigned(
        audit_id=audit_id,
        case_id=f"case-of-{audit_id}",
        family_id=f"fam-of-{audit_id}",
        district="northvale",
        team_id="northvale-south",
        auditor_id=auditor_id,
        month="2026-03",
        assigned_at=T0,
        due_by=datetime(2026, 4, 1, tzinfo=UTC),
    )


async def added(store: AuditStore, *audits: Audit) -> None:
    """Audits stored as a draw stores them: with a round of each of their months' draws."""
    async with store.unit_of_work() as uow:
        await uow.audits.add(audits)
        for month in {audit.month for audit in audits}:
            await uow.draws.add_round(month, DrawRound(seed=17, at=T0, assigned=len(audits)))
        await uow.commit()


# ---------------------------------------------------------------------------------------------
# Cases


async def test_get_many_gives_the_known_cases_among_those_asked_for(store: AuditStore) -> None:
    first, second = a_case("case-1"), a_case("case-2", district="eastmere")
    async with store.unit_of_work() as uow:
        await uow.cases.save_many([first, second])
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.cases.get_many({"case-1", "case-3"}) == {"case-1": first}
        assert await uow.cases.get_many(["case-2", "case-1"]) == {
            "case-1": first,
            "case-2": second,
        }
        assert await uow.cases.get_many(set()) == {}


async def test_save_many_replaces_what_was_known_of_a_case(store: AuditStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.cases.save_many([a_case("case-1"), a_case("case-2")])
        await uow.commit()
    closed = a_case(
        "case-1", team_id="northvale-south", worker_id=None, closed_at=T0 + timedelta(days=9)
    )

    async with store.unit_of_work() as uow:
        await uow.cases.save_many([closed])
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.cases.get_many({"case-1", "case-2"}) == {
            "case-1": closed,
            "case-2": a_case("case-2"),
        }


async def test_allocated_before_is_every_case_first_allocated_strictly_before(
    store: AuditStore,
) -> None:
    cases = [
        a_case("earlier", T0 - MS),
        a_case("at", T0),
        a_case("later", T0 + timedelta(days=1)),
        a_case("queued", None),
        a_case("earlier-closed", T0 - timedelta(days=30), closed_at=T0 - timedelta(days=2)),
    ]
    async with store.unit_of_work() as uow:
        await uow.cases.save_many(cases)
        await uow.commit()

    async with store.unit_of_work() as uow:
        before = await uow.cases.allocated_before(T0)
        a_moment_later = await uow.cases.allocated_before(T0 + MS)

    assert sorted(before, key=lambda case: case.case_id) == [cases[0], cases[4]]
    assert {case.case_id for case in a_moment_later} == {"earlier", "earlier-closed", "at"}


# ---------------------------------------------------------------------------------------------
# Auditors


async def test_added_auditors_read_back_equal_and_all_lists_them_by_id(store: AuditStore) -> None:
    second = an_auditor("tm-2", role=AuditorRole.HEAD_OF_SERVICE, team_id=None, active=False)
    first = an_auditor("tm-1", audits_per_month=3)
    async with store.unit_of_work() as uow:
        assert await uow.auditors.count() == 0
        assert await uow.auditors.add(second, now=T0) is True
        assert await uow.auditors.add(first, now=T0) is True
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.auditors.all() == [first, second]
        assert await uow.auditors.get("tm-2") == second
        assert await uow.auditors.get("tm-3") is None
        assert await uow.auditors.count() == 2


async def test_adding_a_taken_auditor_id_is_false_and_changes_nothing(store: AuditStore) -> None:
    auditor = an_auditor("tm-1")
    async with store.unit_of_work() as uow:
        await uow.auditors.add(auditor, now=T0)
        await uow.commit()

    async with store.unit_of_work() as uow:
        taken = await uow.auditors.add(replace(auditor, name="Someone else"), now=T0 + MS)
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert taken is False
        assert await uow.auditors.all() == [auditor]


async def test_save_changes_a_registered_auditor_and_never_adds_one(store: AuditStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.auditors.add(an_auditor("tm-1", audits_per_month=2), now=T0)
        await uow.commit()
    changed = an_auditor("tm-1", name="Renamed", active=False, audits_per_month=None)

    async with store.unit_of_work() as uow:
        await uow.auditors.save(changed, now=T0 + MS)
        await uow.auditors.save(an_auditor("tm-9"), now=T0 + MS)
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.auditors.all() == [changed]
        assert await uow.auditors.get("tm-9") is None
        assert await uow.auditors.count() == 1


# ---------------------------------------------------------------------------------------------
# Audits


async def test_added_audits_read_back_equal_by_id_and_by_month(store: AuditStore) -> None:
    march = [an_audit("aud-1"), an_audit("aud-2", auditor_id="tm-2")]
    april = graded(an_audit("aud-3", month="2026-04"))
    await added(store, *march, april)

    async with store.unit_of_work() as uow:
        assert await uow.audits.get("aud-3") == april
        assert await uow.audits.get("aud-9") is None
        assert sorted(await uow.audits.of_month("2026-03"), key=lambda a: a.id) == march
        assert await uow.audits.of_month("2026-04") == [april]
        assert await uow.audits.of_month("2026-05") == []


async def test_assigned_per_auditor_counts_a_months_audits_completed_or_not(
    store: AuditStore,
) -> None:
    await added(
        store,
        an_audit("aud-1", auditor_id="tm-1"),
        graded(an_audit("aud-2", auditor_id="tm-1")),
        an_audit("aud-3", auditor_id="tm-2"),
        an_audit("aud-4", auditor_id="tm-1", month="2026-02"),
    )

    async with store.unit_of_work() as uow:
        assert await uow.audits.assigned_per_auditor("2026-03") == {"tm-1": 2, "tm-2": 1}
        assert await uow.audits.assigned_per_auditor("2026-02") == {"tm-1": 1}
        assert await uow.audits.assigned_per_auditor("2026-01") == {}


async def test_cases_drawn_are_the_cases_of_the_months_asked_for(store: AuditStore) -> None:
    await added(
        store,
        an_audit("aud-1", month="2026-01", case_id="case-1"),
        an_audit("aud-2", month="2026-02", case_id="case-2"),
        an_audit("aud-3", month="2026-03", case_id="case-3"),
        an_audit("aud-4", month="2026-03", case_id="case-1", auditor_id="tm-2"),
    )

    async with store.unit_of_work() as uow:
        assert await uow.audits.cases_drawn(["2026-01", "2026-03"]) == {"case-1", "case-3"}
        assert await uow.audits.cases_drawn(["2026-02", "2025-12"]) == {"case-2"}
        assert await uow.audits.cases_drawn([]) == set()


async def find(
    store: AuditStore,
    *,
    month: str | None = None,
    auditor_id: str | None = None,
    status: AuditStatus | None = None,
    now: datetime = T0,
    limit: int = 100,
) -> list[str]:
    async with store.unit_of_work() as uow:
        found, _ = await uow.audits.find(
            month=month, auditor_id=auditor_id, status=status, now=now, limit=limit
        )
    return [audit.id for audit in found]


async def every_page(store: AuditStore, limit: int, **filters: object) -> list[list[str]]:
    """Each page of audits in turn, each going on from where the one before stopped."""
    pages: list[list[str]] = []
    after: AuditPlace | None = None
    while True:
        async with store.unit_of_work() as uow:
            found, after = await uow.audits.find(
                **{"month": None, "auditor_id": None, "status": None, **filters},  # type: ignore[arg-type]
                now=DUE,
                limit=limit,
                after=after,
            )
        pages.append([audit.id for audit in found])
        if after is None:
            return pages


async def test_find_gives_the_newest_month_first_then_by_auditor_then_by_id(
    store: AuditStore,
) -> None:
    await added(
        store,
        an_audit("aud-b", month="2026-02", auditor_id="tm-1"),
        an_audit("aud-c", month="2026-03", auditor_id="tm-2"),
        an_audit("aud-a", month="2025-12", auditor_id="tm-1"),
        an_audit("aud-e", month="2026-03", auditor_id="tm-1"),
        an_audit("aud-d", month="2026-03", auditor_id="tm-1"),
    )

    assert await find(store) == ["aud-d", "aud-e", "aud-c", "aud-b", "aud-a"]
    assert await find(store, limit=2) == ["aud-d", "aud-e"]
    assert await find(store, limit=1) == ["aud-d"]


DUE = datetime(2026, 4, 1, tzinfo=UTC)


async def test_audits_come_a_page_at_a_time_across_months_and_auditors(
    store: AuditStore,
) -> None:
    months = ["2025-11", "2025-12", "2026-01", "2026-02", "2026-03"]
    audits = [
        an_audit(f"aud-{month}-{auditor}-{number}", month=month, auditor_id=auditor)
        for month in months
        for auditor in ("tm-2", "tm-1")
        for number in range(3)
    ]
    await added(store, *audits)
    in_order = sorted(audits, key=lambda audit: (audit.auditor_id, audit.id))
    in_order.sort(key=lambda audit: audit.month, reverse=True)
    of_tm1 = [audit.id for audit in in_order if audit.auditor_id == "tm-1"]

    pages = await every_page(store, 4)
    pages_of_tm1 = await every_page(store, 4, auditor_id="tm-1")
    one_month = await every_page(store, 5, month="2026-01")
    exactly = await every_page(store, 30)

    assert pages == [
        [audit.id for audit in in_order[start : start + 4]] for start in range(0, 30, 4)
    ]
    assert pages_of_tm1 == [of_tm1[start : start + 4] for start in range(0, 15, 4)]
    assert [len(page) for page in one_month] == [5, 1]
    assert [audit_id for page in one_month for audit_id in page] == [
        audit.id for audit in in_order if audit.month == "2026-01"
    ]
    assert exactly == [[audit.id for audit in in_order]]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["aud-done", "aud-late", "aud-open", "aud-other", "aud-feb"]),
        ({"month": "2026-02"}, ["aud-feb"]),
        ({"auditor_id": "tm-2"}, ["aud-other", "aud-feb"]),
        ({"status": AuditStatus.COMPLETED}, ["aud-done"]),
        ({"status": AuditStatus.OVERDUE}, ["aud-late", "aud-feb"]),
        ({"status": AuditStatus.ASSIGNED}, ["aud-open", "aud-other"]),
        ({"month": "2026-03", "auditor_id": "tm-2"}, ["aud-other"]),
        ({"auditor_id": "tm-2", "status": AuditStatus.OVERDUE}, ["aud-feb"]),
        ({"month": "2026-03", "status": AuditStatus.OVERDUE}, ["aud-late"]),
        ({"month": "2026-01"}, []),
        ({"auditor_id": "tm-2", "status": AuditStatus.COMPLETED}, []),
    ],
)
async def test_find_keeps_to_every_filter_given_with_the_status_as_at_now(
    store: AuditStore, filters: dict[str, object], expected: list[str]
) -> None:
    now = DUE
    await added(
        store,
        an_audit("aud-open", auditor_id="tm-1", due_by=now + MS),
        an_audit("aud-late", auditor_id="tm-1", due_by=now),
        graded(an_audit("aud-done", auditor_id="tm-1", due_by=now - timedelta(days=1))),
        an_audit("aud-other", auditor_id="tm-2", due_by=now + timedelta(days=3)),
        an_audit("aud-feb", month="2026-02", auditor_id="tm-2", due_by=now - timedelta(days=30)),
    )

    assert await find(store, now=now, **filters) == expected  # type: ignore[arg-type]


async def test_complete_stores_the_grades_and_completion_and_keeps_the_rest(
    store: AuditStore,
) -> None:
    drawn = an_audit("aud-1")
    await added(store, drawn, an_audit("aud-2"))
    completed = graded(drawn, "requires_improvement")

    async with store.unit_of_work() as uow:
        await uow.audits.complete(completed)
        assert await uow.audits.get("aud-1") == completed
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.audits.get("aud-1") == completed
        assert await uow.audits.get("aud-2") == an_audit("aud-2")


async def test_completing_a_completed_or_unknown_audit_raises_audit_not_open_changing_nothing(
    store: AuditStore,
) -> None:
    first = graded(an_audit("aud-1"), "good")
    await added(store, an_audit("aud-1"))
    async with store.unit_of_work() as uow:
        await uow.audits.complete(first)
        await uow.commit()

    async with store.unit_of_work() as uow:
        with pytest.raises(AuditNotOpen):
            await uow.audits.complete(graded(an_audit("aud-1"), "inadequate", T0 + timedelta(3)))
        with pytest.raises(AuditNotOpen):
            await uow.audits.complete(graded(an_audit("aud-9")))
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.audits.get("aud-1") == first
        assert await uow.audits.get("aud-9") is None


async def test_of_two_completions_of_one_audit_at_once_only_the_first_committed_is_kept(
    store: AuditStore,
) -> None:
    drawn = an_audit("aud-1")
    await added(store, drawn)

    async def complete_after_another_completed() -> None:
        async with store.unit_of_work() as later:
            assert await later.audits.get("aud-1") == drawn
            async with store.unit_of_work() as sooner:
                assert await sooner.audits.get("aud-1") == drawn
                await sooner.audits.complete(graded(drawn, "good"))
                await sooner.commit()
            await later.audits.complete(graded(drawn, "inadequate"))
            await later.commit()

    with pytest.raises(ConcurrentUpdate):
        await complete_after_another_completed()

    async with store.unit_of_work() as uow:
        assert await uow.audits.get("aud-1") == graded(drawn, "good")


# ---------------------------------------------------------------------------------------------
# Draws


async def test_the_first_round_records_the_months_seed_and_later_rounds_follow_it(
    store: AuditStore,
) -> None:
    first = DrawRound(seed=5, at=T0, assigned=3, unfilled={"tm-2": 1})
    second = DrawRound(seed=9, at=T0 + timedelta(days=4), assigned=1)

    async with store.unit_of_work() as uow:
        assert await uow.draws.get("2026-03") is None
        after_first = await uow.draws.add_round("2026-03", first)
        await uow.commit()
    async with store.unit_of_work() as uow:
        after_second = await uow.draws.add_round("2026-03", second)
        await uow.commit()

    assert after_first == DrawRecord("2026-03", seed=5, drawn_at=T0, rounds=[first])
    assert after_second == DrawRecord("2026-03", seed=5, drawn_at=T0, rounds=[first, second])
    async with store.unit_of_work() as uow:
        assert await uow.draws.get("2026-03") == after_second
        assert await uow.draws.get("2026-02") is None


MONTHS = ["2025-12", "2026-02", "2025-11", "2026-01"]


async def test_draws_are_listed_the_latest_month_first(store: AuditStore) -> None:
    rounds = {month: DrawRound(seed=n, at=T0, assigned=n) for n, month in enumerate(MONTHS)}
    async with store.unit_of_work() as uow:
        assert await uow.draws.newest_first() == []
        for month, round_ in rounds.items():
            await uow.draws.add_round(month, round_)
        await uow.commit()

    async with store.unit_of_work() as uow:
        listed = await uow.draws.newest_first()

    assert [drawn.month for drawn in listed] == ["2026-02", "2026-01", "2025-12", "2025-11"]
    assert listed[0] == DrawRecord("2026-02", seed=1, drawn_at=T0, rounds=[rounds["2026-02"]])


@pytest.mark.parametrize("drawn_before", [False, True], ids=["first-round", "later-round"])
async def test_of_two_rounds_of_one_month_at_once_only_the_first_committed_is_kept(
    store: AuditStore, drawn_before: bool
) -> None:
    earlier = DrawRound(seed=1, at=T0 - timedelta(days=1), assigned=2)
    if drawn_before:
        async with store.unit_of_work() as uow:
            await uow.draws.add_round("2026-03", earlier)
            await uow.commit()
    mine = DrawRound(seed=7, at=T0, assigned=1)

    async def draw_after_another_drew() -> None:
        async with store.unit_of_work() as later:
            await later.draws.get("2026-03")
            async with store.unit_of_work() as sooner:
                await sooner.draws.get("2026-03")
                await sooner.draws.add_round("2026-03", mine)
                await sooner.commit()
            await later.draws.add_round("2026-03", DrawRound(seed=8, at=T0 + MS, assigned=1))
            await later.commit()

    with pytest.raises(ConcurrentUpdate):
        await draw_after_another_drew()

    async with store.unit_of_work() as uow:
        kept = await uow.draws.get("2026-03")
    assert kept == (
        DrawRecord("2026-03", seed=1, drawn_at=earlier.at, rounds=[earlier, mine])
        if drawn_before
        else DrawRecord("2026-03", seed=7, drawn_at=T0, rounds=[mine])
    )


# ---------------------------------------------------------------------------------------------
# The unit of work


async def test_leaving_a_unit_of_work_without_commit_keeps_nothing(backend: Backend) -> None:
    store = backend.store
    async with store.unit_of_work() as uow:
        await uow.cases.save_many([a_case("case-1")])
        await uow.auditors.add(an_auditor("tm-1"), now=T0)
        await uow.audits.add([an_audit("aud-1")])
        await uow.draws.add_round("2026-03", DrawRound(seed=1, at=T0, assigned=1))
        await uow.events.stage(
            assigned_event("aud-1"), correlation_id="draw-2026-03", event_id="aud-1.assigned"
        )
        assert await uow.auditors.count() == 1

    async with store.unit_of_work() as uow:
        assert await uow.cases.get_many({"case-1"}) == {}
        assert await uow.auditors.count() == 0
        assert await uow.audits.get("aud-1") is None
        assert await uow.draws.newest_first() == []
    assert await backend.published() == []


async def test_a_failed_use_case_keeps_nothing_of_what_it_did(backend: Backend) -> None:
    store = backend.store

    async def refused_after_writing() -> None:
        async with store.unit_of_work() as uow:
            await uow.auditors.add(an_auditor("tm-1"), now=T0)
            await uow.events.stage(
                assigned_event("aud-1"), correlation_id="c", event_id="aud-1.assigned"
            )
            await uow.audits.complete(graded(an_audit("aud-1")))
            await uow.commit()

    with pytest.raises(AuditNotOpen):
        await refused_after_writing()

    async with store.unit_of_work() as uow:
        assert await uow.auditors.get("tm-1") is None
    assert await backend.published() == []


async def test_staged_events_are_published_on_commit_and_a_repeated_id_keeps_the_first(
    backend: Backend,
) -> None:
    store = backend.store
    first, other, later = assigned_event("aud-1"), assigned_event("aud-2"), assigned_event("aud-3")

    async with store.unit_of_work() as uow:
        await uow.events.stage(first, correlation_id="c-1", event_id="aud-1.assigned")
        await uow.events.stage(
            assigned_event("aud-1", auditor_id="tm-2"),
            correlation_id="c-2",
            event_id="aud-1.assigned",
        )
        await uow.events.stage(other, correlation_id="c-1", event_id="aud-2.assigned")
        assert await backend.published() == []
        await uow.commit()
    assert await backend.published() == [("aud-1.assigned", first), ("aud-2.assigned", other)]

    async with store.unit_of_work() as uow:
        await uow.events.stage(
            assigned_event("aud-2", auditor_id="tm-3"),
            correlation_id="c-3",
            event_id="aud-2.assigned",
        )
        await uow.events.stage(later, correlation_id="c-3", event_id="aud-3.assigned")
        await uow.commit()

    assert await backend.published() == [
        ("aud-1.assigned", first),
        ("aud-2.assigned", other),
        ("aud-3.assigned", later),
    ]
