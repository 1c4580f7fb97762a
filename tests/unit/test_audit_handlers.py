"""The audit use cases over the in-memory store: what each leaves stored and publishes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.audit import handlers
from services.audit.domain import (
    QUALITY_STANDARDS,
    AlreadyCompleted,
    Audit,
    AuditAsOf,
    AuditNotFound,
    Auditor,
    AuditorExists,
    AuditorNotFound,
    AuditorRole,
    AuditStatus,
    CaseState,
    ChangeConflicts,
    DrawPolicy,
    DrawRecord,
    DrawRound,
    Invalid,
    NotTheAuditor,
    Submission,
    apply_case_event,
    assign_audit,
    complete_audit,
)
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
)
from tests.fakes.audit import InMemoryAuditStore
from tests.fakes.units import StagedEvent

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
POLICY = DrawPolicy(audits_per_month=1, closed_within_months=3)
ALL_GOOD = dict.fromkeys(QUALITY_STANDARDS, "good")


def open_case(case_id: str, team_id: str = "northvale-north") -> CaseState:
    return CaseState(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        district="northvale",
        team_id=team_id,
        worker_id="w-1",
        level_of_need=3,
        first_allocated_at=T0,
        as_of=T0,
    )


def manager(team: str) -> Auditor:
    return Auditor(f"tm-{team}", f"Manager of {team}", AuditorRole.TEAM_MANAGER, "northvale", team)


def head(district: str) -> Auditor:
    return Auditor(f"hos-{district}", f"Head of {district}", AuditorRole.HEAD_OF_SERVICE, district)


def a_store(
    *,
    cases: tuple[CaseState, ...] = (),
    auditors: tuple[Auditor, ...] = (),
    audits: tuple[Audit, ...] = (),
) -> InMemoryAuditStore:
    store = InMemoryAuditStore()
    store.state.cases = {case.case_id: case for case in cases}
    store.state.auditors = {auditor.id: auditor for auditor in auditors}
    store.state.audits = {audit.id: audit for audit in audits}
    return store


def assigned(auditor: Auditor, case: CaseState, month: str, seed: int) -> StagedEvent:
    audit, event = assign_audit(auditor, case, month=month, seed=seed, now=T0)
    return StagedEvent(event, f"draw-{month}", f"{audit.id}.assigned")


def by_id(events: list[StagedEvent]) -> list[StagedEvent]:
    return sorted(events, key=lambda event: event.event_id)


async def draw(
    store: InMemoryAuditStore,
    month: str = "2026-10",
    *,
    requested_seed: int | None = None,
    fresh_seed: int = 8,
    now: datetime = T0,
) -> DrawRecord:
    return await handlers.draw_month(
        month,
        uow=store.unit_of_work(),
        now=now,
        policy=POLICY,
        requested_seed=requested_seed,
        fresh_seed=fresh_seed,
    )


# ---------------------------------------------------------------------------------------------
# The case population


def allocated(case_id: str, at: datetime, team: str = "northvale-north") -> CaseAllocated:
    return CaseAllocated(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        referral_id=f"ref-{case_id}",
        district="northvale",
        team_id=team,
        worker_id="w-1",
        status=AllocationStatus.ALLOCATED,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed(2),
        referral_received_at=at,
        allocated_at=at,
    )


def closed(case_id: str, at: datetime) -> CaseClosed:
    return CaseClosed(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        district="northvale",
        team_id="northvale-north",
        worker_id="w-1",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=at,
    )


CASE_EVENTS: list[CaseAllocated | CaseClosed] = [
    allocated("case-1", T0),
    allocated("case-2", T0 + timedelta(hours=1)),
    allocated("case-1", T0 + timedelta(days=2), team="northvale-south"),
    closed("case-1", T0 + timedelta(days=9)),
]


def projected() -> dict[str, CaseState]:
    one = apply_case_event(None, CASE_EVENTS[0])
    moved = apply_case_event(one, CASE_EVENTS[2])
    return {
        "case-1": apply_case_event(moved, CASE_EVENTS[3]),
        "case-2": apply_case_event(None, CASE_EVENTS[1]),
    }


async def test_case_events_are_applied_in_order_giving_the_state_each_left() -> None:
    store = a_store()

    after = await handlers.project_case_events(CASE_EVENTS, uow=store.unit_of_work())

    expected = projected()
    one = apply_case_event(None, CASE_EVENTS[0])
    assert after == [
        one,
        expected["case-2"],
        apply_case_event(one, CASE_EVENTS[2]),
        expected["case-1"],
    ]
    assert store.state.cases == expected
    case_1 = store.state.cases["case-1"]
    assert (case_1.team_id, case_1.first_allocated_at, case_1.closed_at) == (
        "northvale-south",
        T0,
        T0 + timedelta(days=9),
    )
    assert store.published.staged == []


async def test_case_events_seen_again_change_nothing() -> None:
    store = a_store()
    await handlers.project_case_events(CASE_EVENTS, uow=store.unit_of_work())

    again = await handlers.project_case_events(CASE_EVENTS[:2], uow=store.unit_of_work())

    assert store.state.cases == projected()
    assert again == [projected()["case-1"], projected()["case-2"]]


# ---------------------------------------------------------------------------------------------
# The register of auditors


async def test_auditors_are_listed_by_id_filtered_by_state_and_district() -> None:
    gone = replace(manager("northvale-south"), active=False)
    store = a_store(auditors=(head("eastmere"), manager("northvale-north"), gone))

    every = await handlers.list_auditors(uow=store.unit_of_work())
    active_northvale = await handlers.list_auditors(
        uow=store.unit_of_work(), active=True, district="northvale"
    )
    inactive = await handlers.list_auditors(uow=store.unit_of_work(), active=False)

    assert [auditor.id for auditor in every] == [
        "hos-eastmere",
        "tm-northvale-north",
        "tm-northvale-south",
    ]
    assert active_northvale == [manager("northvale-north")]
    assert inactive == [gone]
    assert await handlers.count_auditors(uow=store.unit_of_work()) == 3


async def test_an_auditor_is_added_once_and_only_when_valid() -> None:
    store = a_store()
    auditor = manager("northvale-north")

    added = await handlers.add_auditor(auditor, uow=store.unit_of_work(), now=T0)
    with pytest.raises(AuditorExists) as taken:
        await handlers.add_auditor(replace(auditor, name="B"), uow=store.unit_of_work(), now=T0)
    with pytest.raises(Invalid) as invalid:
        await handlers.add_auditor(
            replace(auditor, id="tm-2", team_id=None), uow=store.unit_of_work(), now=T0
        )

    assert added == auditor
    assert [(p.field, p.code) for p in taken.value.problems] == [("id", "auditor_exists")]
    assert [(p.field, p.code) for p in invalid.value.problems] == [("team_id", "missing")]
    assert store.state.auditors == {auditor.id: auditor}
    assert await handlers.get_auditor(auditor.id, uow=store.unit_of_work()) == auditor


async def test_a_change_sets_the_given_fields_and_one_that_conflicts_changes_nothing() -> None:
    auditor = replace(head("northvale"), audits_per_month=2)
    store = a_store(auditors=(auditor,))

    changed = await handlers.change_auditor(
        auditor.id, {"name": "New", "audits_per_month": None}, uow=store.unit_of_work(), now=T0
    )
    with pytest.raises(ChangeConflicts) as conflicting:
        await handlers.change_auditor(
            auditor.id, {"team_id": "northvale-north"}, uow=store.unit_of_work(), now=T0
        )
    with pytest.raises(AuditorNotFound) as unknown:
        await handlers.change_auditor(
            "hos-nowhere", {"name": "X"}, uow=store.unit_of_work(), now=T0
        )

    assert changed == replace(auditor, name="New", audits_per_month=None)
    assert [(p.field, p.code) for p in conflicting.value.problems] == [("team_id", "not_allowed")]
    assert [(p.field, p.code) for p in unknown.value.problems] == [
        ("auditor_id", "unknown_auditor")
    ]
    assert store.state.auditors == {auditor.id: changed}


async def test_a_deactivated_auditor_is_kept_inactive_and_an_unknown_one_is_not_found() -> None:
    store = a_store(auditors=(head("northvale"),))

    deactivated = await handlers.deactivate_auditor(
        "hos-northvale", uow=store.unit_of_work(), now=T0
    )
    with pytest.raises(AuditorNotFound):
        await handlers.deactivate_auditor("hos-nowhere", uow=store.unit_of_work(), now=T0)
    with pytest.raises(AuditorNotFound):
        await handlers.get_auditor("hos-nowhere", uow=store.unit_of_work())

    assert deactivated == replace(head("northvale"), active=False)
    assert store.state.auditors == {"hos-northvale": deactivated}


async def test_the_sample_auditors_are_added_only_to_an_empty_register() -> None:
    store = a_store()
    sample = [head("a"), head("b")]

    first = await handlers.seed_auditors(sample, uow=store.unit_of_work(), now=T0)
    await handlers.deactivate_auditor("hos-a", uow=store.unit_of_work(), now=T0)
    second = await handlers.seed_auditors(sample, uow=store.unit_of_work(), now=T0)

    assert (first, second) == (2, 0)
    assert store.state.auditors == {"hos-a": replace(head("a"), active=False), "hos-b": head("b")}


# ---------------------------------------------------------------------------------------------
# Draws

NORTH, SOUTH = manager("northvale-north"), manager("northvale-south")
NORTH_CASE, SOUTH_CASE = open_case("case-n"), open_case("case-s", "northvale-south")


async def test_a_first_round_draws_what_every_auditor_owes_with_a_fresh_seed() -> None:
    store = a_store(cases=(NORTH_CASE, SOUTH_CASE), auditors=(NORTH, SOUTH))

    drawn = await draw(store, fresh_seed=8)

    north_audit, _ = assign_audit(NORTH, SOUTH_CASE, month="2026-10", seed=8, now=T0)
    south_audit, _ = assign_audit(SOUTH, NORTH_CASE, month="2026-10", seed=8, now=T0)
    assert store.state.audits == {north_audit.id: north_audit, south_audit.id: south_audit}
    assert by_id(store.published.staged) == by_id(
        [assigned(NORTH, SOUTH_CASE, "2026-10", 8), assigned(SOUTH, NORTH_CASE, "2026-10", 8)]
    )
    recorded = DrawRecord("2026-10", 8, T0, [DrawRound(seed=8, at=T0, assigned=2)])
    assert store.state.draws == {"2026-10": recorded}
    assert drawn == replace(
        recorded,
        first_round=True,
        new_audit_ids=[audit.id for audit in store.state.audits.values()],
    )


async def test_a_later_round_keeps_the_months_seed_and_draws_only_what_is_still_owed() -> None:
    store = a_store(cases=(NORTH_CASE, SOUTH_CASE), auditors=(NORTH, SOUTH))
    await draw(store, fresh_seed=8)
    first_events = list(store.published.staged)
    newcomer, new_case = head("northvale"), open_case("case-new", "northvale-south")
    store.state.auditors[newcomer.id] = newcomer
    store.state.cases[new_case.case_id] = new_case
    later = T0 + timedelta(days=3)

    drawn = await draw(store, fresh_seed=99, now=later)

    audit, event = assign_audit(newcomer, new_case, month="2026-10", seed=8, now=later)
    assert (drawn.first_round, drawn.new_audit_ids, drawn.seed) == (False, [audit.id], 8)
    assert drawn.rounds == [
        DrawRound(seed=8, at=T0, assigned=2),
        DrawRound(seed=8, at=later, assigned=1),
    ]
    assert store.state.audits[audit.id] == audit
    assert len(store.state.audits) == 3
    assert store.published.staged == [
        *first_events,
        StagedEvent(event, "draw-2026-10", f"{audit.id}.assigned"),
    ]


async def test_a_round_with_nothing_owed_assigns_nothing_and_is_recorded() -> None:
    store = a_store(cases=(NORTH_CASE, SOUTH_CASE), auditors=(NORTH, SOUTH))
    await draw(store, fresh_seed=8)
    audits, events = dict(store.state.audits), list(store.published.staged)

    drawn = await draw(store, fresh_seed=9)

    assert (drawn.first_round, drawn.new_audit_ids) == (False, [])
    assert [r.assigned for r in drawn.rounds] == [2, 0]
    assert (store.state.audits, store.published.staged) == (audits, events)


async def test_cases_drawn_within_twelve_months_are_not_drawn_again() -> None:
    auditor = head("northvale")
    last_month, a_year_ago = open_case("case-recent"), open_case("case-old")
    store = a_store(
        cases=(last_month, a_year_ago),
        auditors=(auditor,),
        audits=(
            assign_audit(NORTH, last_month, month="2025-11", seed=1, now=T0)[0],
            assign_audit(NORTH, a_year_ago, month="2025-10", seed=1, now=T0)[0],
        ),
    )

    drawn = await draw(store)

    audit, _ = assign_audit(auditor, a_year_ago, month="2026-10", seed=8, now=T0)
    assert drawn.new_audit_ids == [audit.id]
    assert store.state.audits[audit.id] == audit


async def test_a_requested_seed_is_used_and_the_months_first_seed_is_recorded() -> None:
    store = a_store(cases=(NORTH_CASE,), auditors=(SOUTH,))
    await draw(store, requested_seed=5, fresh_seed=8)
    store.state.auditors[NORTH.id] = NORTH
    store.state.cases[SOUTH_CASE.case_id] = SOUTH_CASE

    again = await draw(store, requested_seed=6, fresh_seed=9)

    assert (again.seed, [r.seed for r in again.rounds]) == (5, [5, 6])
    assert {audit.draw_seed for audit in store.state.audits.values()} == {5, 6}
    first, _ = assign_audit(SOUTH, NORTH_CASE, month="2026-10", seed=5, now=T0)
    assert store.state.audits[first.id] == first


async def test_a_draw_that_meets_another_writer_is_run_again_and_assigns_once() -> None:
    store = a_store(cases=(NORTH_CASE,), auditors=(SOUTH,))

    async def another_draw() -> DrawRecord:
        return await draw(store, fresh_seed=7)

    store.meanwhile.append(another_draw)
    drawn = await draw(store, fresh_seed=8)

    audit, event = assign_audit(SOUTH, NORTH_CASE, month="2026-10", seed=7, now=T0)
    assert (drawn.first_round, drawn.new_audit_ids, drawn.seed) == (False, [], 7)
    assert store.state.audits == {audit.id: audit}
    assert store.published.staged == [StagedEvent(event, "draw-2026-10", f"{audit.id}.assigned")]
    assert [r.assigned for r in store.state.draws["2026-10"].rounds] == [1, 0]


async def test_the_monthly_check_draws_the_month_once() -> None:
    store = a_store(cases=(NORTH_CASE,), auditors=(SOUTH,))
    now = datetime(2026, 10, 2, 1, 0, tzinfo=UTC)

    first = await handlers.draw_current_month_if_due(
        uow=store.unit_of_work(), now=now, policy=POLICY, fresh_seed=3
    )
    second = await handlers.draw_current_month_if_due(
        uow=store.unit_of_work(), now=now, policy=POLICY, fresh_seed=4
    )

    assert first is not None
    assert (first.month, first.seed, first.first_round, len(first.new_audit_ids)) == (
        "2026-10",
        3,
        True,
        1,
    )
    assert second is None
    assert await handlers.list_draws(uow=store.unit_of_work()) == [
        DrawRecord("2026-10", 3, now, [DrawRound(seed=3, at=now, assigned=1)])
    ]


# ---------------------------------------------------------------------------------------------
# Audits


def an_audit() -> Audit:
    audit, _ = assign_audit(head("northvale"), NORTH_CASE, month="2026-10", seed=1, now=T0)
    return audit


async def submit(
    store: InMemoryAuditStore,
    audit_id: str,
    submission: Submission,
    *,
    claimed: str | None = None,
    auditor_id: str | None = "hos-northvale",
    now: datetime = T0 + timedelta(days=1),
) -> AuditAsOf:
    return await handlers.submit_audit(
        audit_id,
        submission,
        claimed_auditor_id=claimed,
        auditor_id=auditor_id,
        uow=store.unit_of_work(),
        now=now,
        correlation_id="corr-1",
    )


async def test_completing_an_audit_stores_its_grades_and_publishes_it_once() -> None:
    audit = an_audit()
    store = a_store(audits=(audit,))
    submission = Submission({**ALL_GOOD, "plan_quality": "inadequate"}, learning_points=["Plan."])
    at = T0 + timedelta(days=1)

    done = await submit(store, audit.id, submission)
    with pytest.raises(AlreadyCompleted):
        await submit(store, audit.id, Submission(ALL_GOOD))

    completed, event = complete_audit(audit, submission, auditor_id="hos-northvale", now=at)
    assert done == AuditAsOf(completed, AuditStatus.COMPLETED)
    assert store.state.audits == {audit.id: completed}
    assert store.published.staged == [StagedEvent(event, "corr-1", f"{audit.id}.completed")]


async def test_a_refused_submission_stores_and_publishes_nothing() -> None:
    audit = an_audit()
    store = a_store(audits=(audit,))

    with pytest.raises(NotTheAuditor):
        await submit(store, audit.id, Submission(ALL_GOOD), claimed="hos-eastmere")
    with pytest.raises(NotTheAuditor):
        await submit(store, audit.id, Submission(ALL_GOOD), auditor_id="hos-eastmere")
    with pytest.raises(Invalid):
        await submit(store, audit.id, Submission({}))
    with pytest.raises(AuditNotFound):
        await submit(store, "aud-unknown", Submission(ALL_GOOD))

    assert store.state.audits == {audit.id: audit}
    assert store.published.staged == []


async def test_a_submission_that_meets_another_is_refused_as_already_completed() -> None:
    audit = an_audit()
    store = a_store(audits=(audit,))
    other = Submission({**ALL_GOOD, "plan_quality": "outstanding"})
    at = T0 + timedelta(days=1)

    async def the_other_submission() -> AuditAsOf:
        return await submit(store, audit.id, other, now=at)

    store.meanwhile.append(the_other_submission)
    with pytest.raises(AlreadyCompleted):
        await submit(store, audit.id, Submission(ALL_GOOD), now=at)

    completed, event = complete_audit(audit, other, auditor_id="hos-northvale", now=at)
    assert store.state.audits == {audit.id: completed}
    assert store.published.staged == [StagedEvent(event, "corr-1", f"{audit.id}.completed")]


async def test_audits_are_shown_with_their_status_at_the_time_asked() -> None:
    audit = an_audit()
    store = a_store(audits=(audit,))
    due = audit.due_by

    before = await handlers.get_audit(audit.id, uow=store.unit_of_work(), now=due - timedelta(1))
    overdue, following = await handlers.find_audits(
        uow=store.unit_of_work(),
        now=due,
        month="2026-10",
        auditor_id=None,
        status=AuditStatus.OVERDUE,
        limit=10,
    )
    with pytest.raises(AuditNotFound):
        await handlers.get_audit("aud-unknown", uow=store.unit_of_work(), now=due)

    assert before == AuditAsOf(audit, AuditStatus.ASSIGNED)
    assert (overdue, following) == ([AuditAsOf(audit, AuditStatus.OVERDUE)], None)


async def test_a_months_compliance_counts_each_auditors_audits_at_the_time_asked() -> None:
    late, done = (
        an_audit(),
        replace(
            assign_audit(SOUTH, NORTH_CASE, month="2026-10", seed=1, now=T0)[0],
            completed_at=T0,
            overall_grade="good",
            scores=ALL_GOOD,
        ),
    )
    auditors = (head("northvale"), SOUTH, replace(NORTH, active=False))
    store = a_store(auditors=auditors, audits=(late, done))
    now = datetime(2026, 11, 2, tzinfo=UTC)

    report = await handlers.month_compliance(
        "2026-10", uow=store.unit_of_work(), now=now, policy=POLICY
    )

    assert report.as_of == now
    assert [
        (row.auditor_id, row.owed, row.assigned, row.completed, row.overdue)
        for row in report.figures.auditors
    ] == [("hos-northvale", 1, 1, 0, 1), ("tm-northvale-south", 1, 1, 1, 0)]
    assert [(d.district, d.completed, d.overall["good"]) for d in report.figures.districts] == [
        ("northvale", 1, 1)
    ]
    assert report.auditors == {auditor.id: auditor for auditor in auditors}
