"""Audit rules: the case projection, the register of auditors, the monthly draw, submissions,
grades and compliance (the use cases over them are in ``test_audit_handlers``)."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.audit.domain import (
    QUALITY_STANDARDS,
    AlreadyCompleted,
    Assignment,
    Audit,
    Auditor,
    AuditorRole,
    AuditRecord,
    CaseState,
    ChangeConflicts,
    Invalid,
    NotTheAuditor,
    Submission,
    apply_allocation,
    apply_case_event,
    apply_closure,
    assign_audit,
    audit_id_for,
    audit_month,
    audit_status,
    change_auditor,
    check_auditor,
    check_claimed_auditor,
    check_submission,
    complete_audit,
    compliance,
    draw_audits,
    draw_seed,
    is_auditable,
    overall_grade,
    standard_scores,
    still_owed,
    stratum_quotas,
)
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    OfstedGrade,
    StandardScore,
)
from shared.months import month_end

OUT = OfstedGrade.OUTSTANDING
GOOD = OfstedGrade.GOOD
RI = OfstedGrade.REQUIRES_IMPROVEMENT
INAD = OfstedGrade.INADEQUATE
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def scores(*grades: OfstedGrade) -> list[StandardScore]:
    return [
        StandardScore(standard=f"standard-{number}", grade=grade)
        for number, grade in enumerate(grades, start=1)
    ]


@pytest.mark.parametrize(
    ("grades", "expected"),
    [
        ((GOOD,), GOOD),
        ((OUT, OUT, RI), OUT),
        ((RI, OUT, GOOD), GOOD),
        ((OUT, RI, RI, RI, OUT), RI),
        ((GOOD, OUT, OUT, OUT, RI), OUT),
    ],
)
def test_overall_grade_is_the_median_grade(
    grades: tuple[OfstedGrade, ...], expected: OfstedGrade
) -> None:
    assert overall_grade(scores(*grades)) is expected


@pytest.mark.parametrize(
    ("grades", "expected"),
    [
        ((OUT, GOOD), GOOD),
        ((GOOD, OUT), GOOD),
        ((OUT, OUT, RI, RI), RI),
        ((OUT, GOOD, GOOD, RI), GOOD),
        ((RI, OUT, OUT, GOOD), GOOD),
    ],
)
def test_overall_grade_takes_the_worse_of_two_middle_grades(
    grades: tuple[OfstedGrade, ...], expected: OfstedGrade
) -> None:
    assert overall_grade(scores(*grades)) is expected


@pytest.mark.parametrize(
    "grades",
    [(INAD,), (OUT, OUT, OUT, OUT, INAD), (INAD, OUT, OUT), (GOOD, GOOD, RI, INAD)],
)
def test_overall_grade_is_inadequate_when_any_standard_is(grades: tuple[OfstedGrade, ...]) -> None:
    assert overall_grade(scores(*grades)) is OfstedGrade.INADEQUATE


def test_overall_grade_of_no_scores_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least one scored standard"):
        overall_grade([])


def test_audit_id_for_is_deterministic() -> None:
    first = audit_id_for("manager-1", "case-1", "2026-11")

    assert first == audit_id_for("manager-1", "case-1", "2026-11")
    assert first.startswith("aud-")


def test_audit_id_for_differs_per_month() -> None:
    assert audit_id_for("manager-1", "case-1", "2026-11") != audit_id_for(
        "manager-1", "case-1", "2026-12"
    )


def test_audit_id_for_differs_per_case_and_per_auditor() -> None:
    ids = {
        audit_id_for("manager-1", "case-1", "2026-11"),
        audit_id_for("manager-1", "case-2", "2026-11"),
        audit_id_for("manager-2", "case-1", "2026-11"),
    }

    assert len(ids) == 3


def test_audit_month_is_year_and_month() -> None:
    assert audit_month(datetime(2026, 11, 3, tzinfo=UTC)) == "2026-11"
    assert audit_month(datetime(2027, 1, 31, 23, 59, tzinfo=UTC)) == "2027-01"


# ---------------------------------------------------------------------------------------------
# The case projection


def allocated(
    at: datetime,
    *,
    team: str = "northvale-north",
    worker: str = "w-1",
    level: int = 2,
    status: AllocationStatus = AllocationStatus.ALLOCATED,
) -> CaseAllocated:
    return CaseAllocated(
        case_id="case-1",
        family_id="fam-1",
        referral_id="ref-1",
        district="northvale",
        team_id=team,
        worker_id=worker if status is AllocationStatus.ALLOCATED else None,
        status=status,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed(level),
        referral_received_at=at,
        allocated_at=at,
    )


def closed(at: datetime) -> CaseClosed:
    return CaseClosed(
        case_id="case-1",
        family_id="fam-1",
        district="northvale",
        team_id="northvale-north",
        worker_id="w-2",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=at,
    )


def project(events: list[CaseAllocated | CaseClosed]) -> CaseState | None:
    case: CaseState | None = None
    for event in events:
        case = (
            apply_allocation(case, event)
            if isinstance(event, CaseAllocated)
            else apply_closure(case, event)
        )
    return case


def test_the_case_keeps_the_latest_allocation_and_the_first_allocated_time_in_any_order() -> None:
    events: list[CaseAllocated | CaseClosed] = [
        allocated(T0, status=AllocationStatus.QUEUED, level=3),
        allocated(T0 + timedelta(days=2), team="northvale-north", worker="w-1", level=3),
        allocated(T0 + timedelta(days=9), team="northvale-south", worker="w-7", level=2),
        closed(T0 + timedelta(days=30)),
    ]
    outcomes = {project(list(order)) for order in itertools.permutations(events)}

    assert len(outcomes) == 1
    [case] = outcomes
    assert case is not None
    assert (case.team_id, case.worker_id, case.level_of_need) == ("northvale-south", "w-7", 2)
    assert case.first_allocated_at == T0 + timedelta(days=2)
    assert case.closed_at == T0 + timedelta(days=30)
    assert case.status == "closed"


def test_a_repeated_allocation_changes_nothing() -> None:
    once = project([allocated(T0)])

    assert project([allocated(T0), allocated(T0)]) == once


def test_a_queued_case_is_not_auditable_until_allocated() -> None:
    queued = project([allocated(T0, status=AllocationStatus.QUEUED)])
    assert queued is not None
    assert queued.status == "queued"
    assert not is_auditable(queued, "2026-11", 3)


@pytest.mark.parametrize(
    ("closed_at", "auditable"),
    [
        (None, True),
        (datetime(2026, 8, 1, tzinfo=UTC), True),
        (datetime(2026, 7, 31, 23, 59, tzinfo=UTC), False),
        (datetime(2026, 11, 20, tzinfo=UTC), True),
    ],
)
def test_open_and_recently_closed_cases_are_auditable(
    closed_at: datetime | None, auditable: bool
) -> None:
    case = CaseState(
        "c", "f", "northvale", "t", "w", 2, first_allocated_at=T0, as_of=T0, closed_at=closed_at
    )

    assert is_auditable(case, "2026-11", closed_within_months=3) is auditable


def test_a_case_allocated_after_the_month_is_not_auditable_in_it() -> None:
    case = CaseState("c", "f", "northvale", "t", "w", 2, datetime(2026, 12, 1, tzinfo=UTC))

    assert not is_auditable(case, "2026-11", 3)
    assert is_auditable(case, "2026-12", 3)


# ---------------------------------------------------------------------------------------------
# The draw


def case(number: int, district: str, level: int, team: str) -> CaseState:
    return CaseState(
        case_id=f"case-{number:03d}",
        family_id=f"fam-{number:03d}",
        district=district,
        team_id=team,
        worker_id="w",
        level_of_need=level,
        first_allocated_at=T0,
        as_of=T0,
    )


def manager(team: str, district: str = "northvale") -> Auditor:
    return Auditor(f"tm-{team}", team, AuditorRole.TEAM_MANAGER, district, team)


def head(district: str) -> Auditor:
    return Auditor(f"hos-{district}", district, AuditorRole.HEAD_OF_SERVICE, district)


STRATA = [("northvale", 2), ("northvale", 3), ("eastmere", 2), ("eastmere", 3)]
POPULATION = [
    case(index * 10 + number, district, level, f"{district}-team-{number % 2}")
    for index, (district, level) in enumerate(STRATA)
    for number in range(8)
]
EIGHT_HEADS = [head(f"district-{number}") for number in range(8)]


@pytest.mark.parametrize("seed", range(10))
def test_the_draw_spreads_audits_across_districts_and_levels_in_proportion(seed: int) -> None:
    outcome = draw_audits(
        month="2026-11",
        seed=seed,
        owed=[(auditor, 1) for auditor in EIGHT_HEADS],
        population=POPULATION,
    )
    by_case = {item.case_id: item for item in POPULATION}

    strata = Counter(by_case[a.case_id].stratum for a in outcome.assignments)
    assert strata == dict.fromkeys(STRATA, 2)
    assert len({a.case_id for a in outcome.assignments}) == 8


def test_stratum_quotas_follow_the_strata_sizes_and_add_up() -> None:
    sizes = {("a", 2): 50, ("a", 3): 30, ("b", 2): 20}

    quotas = stratum_quotas(sizes, 10, random.Random(1))

    assert quotas == {("a", 2): 5, ("a", 3): 3, ("b", 2): 2}
    assert sum(stratum_quotas(sizes, 7, random.Random(1)).values()) == 7
    assert stratum_quotas(sizes, 500, random.Random(1)) == sizes


def test_the_same_seed_and_population_give_the_same_draw_in_any_input_order() -> None:
    owed = [(auditor, 1) for auditor in EIGHT_HEADS]
    first = draw_audits(month="2026-11", seed=42, owed=owed, population=POPULATION)

    again = draw_audits(
        month="2026-11", seed=42, owed=owed[::-1], population=list(reversed(POPULATION))
    )
    other_seeds = {
        draw_audits(month="2026-11", seed=seed, owed=owed, population=POPULATION).assignments
        for seed in range(43, 48)
    }

    assert again == first
    assert any(assignments != first.assignments for assignments in other_seeds)


@pytest.mark.parametrize("seed", range(20))
def test_auditors_are_given_cases_outside_their_own_team_when_there_are_any(seed: int) -> None:
    population = [
        case(1, "northvale", 2, "northvale-north"),
        case(2, "northvale", 2, "northvale-south"),
        case(3, "northvale", 2, "northvale-south"),
    ]
    auditors = [manager("northvale-north"), manager("northvale-south")]

    outcome = draw_audits(
        month="2026-11", seed=seed, owed=[(a, 1) for a in auditors], population=population
    )

    given = {a.auditor_id: a.case_id for a in outcome.assignments}
    assert given["tm-northvale-north"] in {"case-002", "case-003"}
    assert given["tm-northvale-south"] == "case-001"


def test_an_own_team_case_is_drawn_only_when_nothing_else_is_left() -> None:
    population = [case(1, "northvale", 2, "northvale-north")]

    outcome = draw_audits(
        month="2026-11",
        seed=1,
        owed=[(manager("northvale-north"), 1)],
        population=population,
    )

    assert outcome.assignments == (Assignment("tm-northvale-north", "case-001"),)


def test_recently_drawn_cases_are_excluded_and_a_shortfall_is_reported() -> None:
    population = [case(1, "northvale", 2, "t"), case(2, "northvale", 2, "t")]

    outcome = draw_audits(
        month="2026-11",
        seed=3,
        owed=[(head("northvale"), 2), (head("eastmere"), 1)],
        population=population,
        recently_drawn={"case-001"},
    )

    assert [a.case_id for a in outcome.assignments] == ["case-002"]
    assert sum(outcome.unfilled.values()) == 2


def test_an_auditor_owes_their_own_quota_or_the_default_and_nothing_when_inactive() -> None:
    assert head("a").owes(1) == 1
    assert replace(head("a"), audits_per_month=3).owes(1) == 3
    assert replace(head("a"), active=False).owes(1) == 0


# ---------------------------------------------------------------------------------------------
# Submissions and compliance


ALL_GOOD = dict.fromkeys(QUALITY_STANDARDS, "good")


def test_a_submission_grading_every_standard_is_valid() -> None:
    assert check_submission(ALL_GOOD, "outstanding") == []


def test_a_submission_names_each_missing_or_unknown_standard_and_bad_grade() -> None:
    scores = {**ALL_GOOD, "childs_voice": "good", "plan_quality": "great"}
    del scores["voice_of_the_child"]

    problems = check_submission(scores, "superb")

    assert {(p.field, p.code) for p in problems} == {
        ("scores.voice_of_the_child", "missing_standard"),
        ("scores.childs_voice", "unknown_standard"),
        ("scores.plan_quality", "invalid_grade"),
        ("overall_grade", "invalid_grade"),
    }


def test_standard_scores_follow_the_standards_order() -> None:
    scores = standard_scores(dict(reversed(list(ALL_GOOD.items()))))

    assert [score.standard for score in scores] == list(QUALITY_STANDARDS)


def record(auditor: str, *, completed: bool, grade: str = "good") -> AuditRecord:
    return AuditRecord(
        audit_id=f"a-{auditor}-{completed}",
        auditor_id=auditor,
        district="northvale",
        month="2026-11",
        due_by=month_end("2026-11"),
        completed_at=T0 if completed else None,
        overall_grade=grade if completed else None,
        scores=dict.fromkeys(QUALITY_STANDARDS, grade) if completed else {},
    )


def test_an_audit_not_completed_by_the_end_of_its_month_is_overdue() -> None:
    open_audit = record("a", completed=False)

    assert audit_status(open_audit, datetime(2026, 11, 30, 23, 59, tzinfo=UTC)).value == "assigned"
    assert audit_status(open_audit, datetime(2026, 12, 1, tzinfo=UTC)).value == "overdue"
    assert audit_status(record("a", completed=True), datetime(2027, 1, 1, tzinfo=UTC)).value == (
        "completed"
    )


def test_compliance_counts_per_auditor_and_grades_per_district() -> None:
    auditors = [head("a"), head("b"), replace(head("c"), active=False)]
    audits = [
        record("hos-a", completed=True, grade="good"),
        record("hos-b", completed=False),
        record("hos-c", completed=True, grade="inadequate"),
    ]

    figures = compliance(
        "2026-11", auditors, audits, now=datetime(2026, 12, 2, tzinfo=UTC), default_per_month=1
    )

    assert [
        (r.auditor_id, r.owed, r.assigned, r.completed, r.overdue) for r in figures.auditors
    ] == [
        ("hos-a", 1, 1, 1, 0),
        ("hos-b", 1, 1, 0, 1),
        ("hos-c", 0, 1, 1, 0),
    ]
    [district] = figures.districts
    assert district.completed == 2
    assert district.overall == {
        "outstanding": 0,
        "good": 1,
        "requires_improvement": 0,
        "inadequate": 1,
    }
    assert district.by_standard["plan_quality"]["good"] == 1


# ---------------------------------------------------------------------------------------------
# The register of auditors


def test_a_team_manager_needs_a_team_and_a_head_of_service_has_none() -> None:
    manager = Auditor("tm-1", "A", AuditorRole.TEAM_MANAGER, "northvale")

    with pytest.raises(Invalid) as no_team:
        check_auditor(manager)
    with pytest.raises(Invalid) as with_team:
        check_auditor(replace(head("northvale"), team_id="northvale-north"))

    assert [(p.field, p.code) for p in no_team.value.problems] == [("team_id", "missing")]
    assert [(p.field, p.code) for p in with_team.value.problems] == [("team_id", "not_allowed")]
    check_auditor(replace(manager, team_id="northvale-north"))


def test_a_change_sets_only_the_given_fields_and_clears_only_the_optional_ones() -> None:
    auditor = replace(head("eastmere"), audits_per_month=3)

    assert change_auditor(auditor, {"audits_per_month": None}).audits_per_month is None
    assert change_auditor(auditor, {"name": "B"}) == replace(auditor, name="B")
    with pytest.raises(Invalid) as nulled:
        change_auditor(auditor, {"district": None})
    assert [(p.field, p.code) for p in nulled.value.problems] == [("district", "missing")]
    # A head of service made a team manager without a team: the change conflicts with them.
    with pytest.raises(ChangeConflicts) as conflicting:
        change_auditor(auditor, {"role": AuditorRole.TEAM_MANAGER})
    assert [(p.field, p.code) for p in conflicting.value.problems] == [("team_id", "missing")]


# ---------------------------------------------------------------------------------------------
# Drawing and completing, as rules


def test_the_seed_is_the_one_asked_for_else_the_recorded_one_else_a_fresh_one() -> None:
    assert draw_seed(5, 7, 9) == 5
    assert draw_seed(None, 7, 9) == 7
    assert draw_seed(None, None, 9) == 9


def test_an_auditor_is_owed_only_what_the_month_has_not_assigned_them_yet() -> None:
    auditors = [head("a"), replace(head("b"), audits_per_month=2), head("c")]

    owed = still_owed(auditors, {"hos-a": 1, "hos-b": 1}, default_per_month=1)

    assert [(auditor.id, count) for auditor, count in owed] == [("hos-b", 1), ("hos-c", 1)]


def open_case(case_id: str = "case-1", team_id: str = "northvale-north") -> CaseState:
    return CaseState(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        district="northvale",
        team_id=team_id,
        level_of_need=3,
        first_allocated_at=T0,
        as_of=T0,
    )


def an_audit(auditor: Auditor | None = None) -> Audit:
    audit, _ = assign_audit(
        auditor or head("northvale"), open_case(), month="2026-10", seed=1, now=T0
    )
    return audit


ALL_GOOD = dict.fromkeys(QUALITY_STANDARDS, "good")


def test_a_drawn_audit_is_due_at_the_end_of_its_month_and_announced() -> None:
    audit, event = assign_audit(head("northvale"), open_case(), month="2026-10", seed=4, now=T0)

    assert audit.id == audit_id_for("hos-northvale", "case-1", "2026-10")
    assert (audit.due_by, audit.case_status, audit.draw_seed) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        "open",
        4,
    )
    assert (event.audit_id, event.auditor_id, event.due_by) == (
        audit.id,
        "hos-northvale",
        audit.due_by,
    )


def test_completing_an_audit_grades_it_and_gives_the_event_to_publish() -> None:
    audit = an_audit()
    at = T0 + timedelta(days=3)

    completed, event = complete_audit(
        audit,
        Submission({**ALL_GOOD, "plan_quality": "inadequate"}, learning_points=["Measure it."]),
        auditor_id="hos-northvale",
        now=at,
    )

    assert (completed.completed_at, completed.overall_grade, completed.overall_grade_given) == (
        at,
        "inadequate",
        False,
    )
    assert (event.audit_id, event.overall_grade, event.level_of_need) == (
        audit.id,
        INAD,
        LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
    )
    assert event.learning_points == ["Measure it."]


def test_an_audit_is_completed_only_by_its_auditor_once_with_every_standard_graded() -> None:
    audit = an_audit()
    done, _ = complete_audit(audit, Submission(ALL_GOOD), auditor_id="hos-northvale", now=T0)

    with pytest.raises(Invalid) as unsigned:
        complete_audit(audit, Submission(ALL_GOOD), auditor_id=None, now=T0)
    with pytest.raises(NotTheAuditor) as someone_else:
        complete_audit(audit, Submission(ALL_GOOD), auditor_id="hos-eastmere", now=T0)
    with pytest.raises(AlreadyCompleted):
        complete_audit(done, Submission(ALL_GOOD), auditor_id="hos-northvale", now=T0)
    with pytest.raises(Invalid) as ungraded:
        complete_audit(audit, Submission({}), auditor_id="hos-northvale", now=T0)
    with pytest.raises(NotTheAuditor) as mismatch:
        check_claimed_auditor("hos-eastmere", "hos-northvale")

    assert unsigned.value.problems[0].code == "missing"
    assert someone_else.value.problems[0].code == "not_assigned_auditor"
    assert len(ungraded.value.problems) == len(QUALITY_STANDARDS)
    assert mismatch.value.problems[0].code == "auditor_mismatch"
    check_claimed_auditor(None, "hos-northvale")


def test_a_case_event_is_applied_as_an_allocation_or_a_closure() -> None:
    case = apply_case_event(apply_case_event(None, allocated(T0)), closed(T0 + timedelta(days=1)))

    assert (case.first_allocated_at, case.closed_at) == (T0, T0 + timedelta(days=1))
