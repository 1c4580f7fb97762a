"""Audit rules: pure functions over typed values, no I/O and no clock.

Months are calendar months in UTC, written ``YYYY-MM``; an audit assigned for a month is
due by the first instant of the next one.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.events import (
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    LevelOfNeed,
    OfstedGrade,
    StandardScore,
)
from shared.months import month_end, month_of, month_start, shift_month

GRADE_ORDER = (
    OfstedGrade.OUTSTANDING,
    OfstedGrade.GOOD,
    OfstedGrade.REQUIRES_IMPROVEMENT,
    OfstedGrade.INADEQUATE,
)

QUALITY_STANDARDS: dict[str, str] = {
    "assessment_timeliness": "The assessment was started and completed on time.",
    "voice_of_the_child": "The child's voice, wishes and lived experience shape the work.",
    "plan_quality": "The plan is specific, measurable and agreed with the family.",
    "multi_agency_working": "Partners share information and work to the one plan.",
    "management_oversight": "Supervision and management decisions are recorded and acted on.",
    "outcomes_for_family": "The family's circumstances are improving because of the help.",
}
"""The Early Help Quality Standards every audit grades, by id, in the order they are shown."""

NO_REPEAT_MONTHS = 12
"""A case audited (or drawn for audit) is not drawn again within this many months."""


class AuditorRole(StrEnum):
    TEAM_MANAGER = "team_manager"
    HEAD_OF_SERVICE = "head_of_service"


class AuditStatus(StrEnum):
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    OVERDUE = "overdue"


@dataclass(frozen=True)
class Auditor:
    """A team manager (of one locality team) or a head of service (of one district)."""

    id: str
    name: str
    role: AuditorRole
    district: str
    team_id: str | None = None
    active: bool = True
    audits_per_month: int | None = None
    """Overrides the service's default when set."""

    def owes(self, default_per_month: int) -> int:
        if not self.active:
            return 0
        return default_per_month if self.audits_per_month is None else self.audits_per_month


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field's dotted path, a code and a sentence."""

    field: str
    code: str
    message: str


# ---------------------------------------------------------------------------------------------
# Refusals: what the rules say no to, with every reason found; the HTTP edge picks the status


class Refused(Exception):
    """A request the audit rules refuse, changing nothing, with every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


class Invalid(Refused):
    """The request breaks a rule of its own fields (a team manager with no team, a grade
    that is not an Ofsted grade)."""


class NotFound(Refused):
    """The request names something that does not exist."""


class AuditNotFound(NotFound):
    def __init__(self, audit_id: str) -> None:
        super().__init__([Problem("audit_id", "unknown_audit", f"no audit {audit_id!r}")])


class AuditorNotFound(NotFound):
    def __init__(self, auditor_id: str) -> None:
        super().__init__([Problem("auditor_id", "unknown_auditor", f"no auditor {auditor_id!r}")])


class NotTheAuditor(Refused):
    """Only an audit's assigned auditor may submit it, and only as themselves."""


class Conflict(Refused):
    """What the request would do was done already."""


class ChangeConflicts(Conflict):
    """A change that, with what the auditor already is, would make one the rules refuse
    (a team for a head of service, say): the request is fine, the auditor's state is not."""


class AuditorExists(Conflict):
    def __init__(self, auditor_id: str) -> None:
        super().__init__(
            [Problem("id", "auditor_exists", f"auditor {auditor_id!r} already exists")]
        )


class AlreadyCompleted(Conflict):
    """An audit is completed once: a second submission would publish a second grade."""

    def __init__(self, audit_id: str, completed_at: datetime | None = None) -> None:
        when = f" at {completed_at.isoformat()}" if completed_at else ""
        super().__init__(
            [Problem("audit_id", "already_completed", f"audit {audit_id} was completed{when}")]
        )


# ---------------------------------------------------------------------------------------------
# The register of auditors

NULLABLE_AUDITOR_FIELDS = frozenset({"team_id", "audits_per_month"})
"""The fields a change may set to null: every auditor has a name, role, district and state."""


def check_auditor(auditor: Auditor) -> None:
    """A team manager manages one team; a head of service a whole district."""
    if auditor.role is AuditorRole.TEAM_MANAGER and not auditor.team_id:
        raise Invalid([Problem("team_id", "missing", "a team manager needs the team they manage")])
    if auditor.role is AuditorRole.HEAD_OF_SERVICE and auditor.team_id:
        raise Invalid(
            [
                Problem(
                    "team_id",
                    "not_allowed",
                    "a head of service covers a district, not one team: leave team_id out",
                )
            ]
        )


def change_auditor(auditor: Auditor, given: Mapping[str, Any]) -> Auditor:
    """``auditor`` with the ``given`` fields changed, still a valid auditor."""
    for name, value in given.items():
        if value is None and name not in NULLABLE_AUDITOR_FIELDS:
            raise Invalid([Problem(name, "missing", f"{name} cannot be null")])
    changed = replace(auditor, **given)
    try:
        check_auditor(changed)
    except Invalid as invalid:
        raise ChangeConflicts(invalid.problems) from None
    return changed


# ---------------------------------------------------------------------------------------------
# Months


def audit_month(at: datetime) -> str:
    """The month a draw made at ``at`` is for: the calendar month it falls in, in UTC, so its
    audits fall due at that month's end."""
    return month_of(at)


# ---------------------------------------------------------------------------------------------
# The population of cases, projected from case-allocated and case-closed


@dataclass(frozen=True)
class CaseState:
    """What the audit service knows of a case: enough to sample it and label its audit.

    ``as_of`` is the time of the newest allocation event applied, so an older event that
    arrives late (or again) cannot undo a newer one, whatever the order of delivery.
    """

    case_id: str
    family_id: str
    district: str
    team_id: str | None = None
    worker_id: str | None = None
    level_of_need: int | None = None
    first_allocated_at: datetime | None = None
    as_of: datetime | None = None
    closed_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.closed_at is not None:
            return "closed"
        return "queued" if self.first_allocated_at is None else "open"

    @property
    def stratum(self) -> tuple[str, int]:
        return (self.district, self.level_of_need or 0)


def apply_allocation(case: CaseState | None, event: CaseAllocated) -> CaseState:
    """Keep the newest team, worker and level, and the first time it was allocated."""
    first = case.first_allocated_at if case else None
    if event.status is AllocationStatus.ALLOCATED:
        first = event.allocated_at if first is None else min(first, event.allocated_at)
    if case is not None and case.as_of is not None and event.allocated_at <= case.as_of:
        return replace(case, first_allocated_at=first)
    return CaseState(
        case_id=event.case_id,
        family_id=event.family_id,
        district=event.district,
        team_id=event.team_id,
        worker_id=event.worker_id,
        level_of_need=int(event.level_of_need),
        first_allocated_at=first,
        as_of=event.allocated_at,
        closed_at=case.closed_at if case else None,
    )


def apply_closure(case: CaseState | None, event: CaseClosed) -> CaseState:
    """A case closes once; a closure seen before the allocation still counts."""
    if case is None:
        return CaseState(
            case_id=event.case_id,
            family_id=event.family_id,
            district=event.district,
            team_id=event.team_id,
            worker_id=event.worker_id,
            closed_at=event.closed_at,
        )
    closed_at = event.closed_at if case.closed_at is None else min(case.closed_at, event.closed_at)
    return replace(case, closed_at=closed_at)


def apply_case_event(case: CaseState | None, event: CaseAllocated | CaseClosed) -> CaseState:
    """The case as ``event`` leaves it: an allocation or a closure."""
    if isinstance(event, CaseAllocated):
        return apply_allocation(case, event)
    return apply_closure(case, event)


def is_auditable(case: CaseState, month: str, closed_within_months: int) -> bool:
    """Allocated before the month ends, and open or closed within the previous months.

    A queued case has had no work to audit yet; a case closed long ago is history.
    """
    if case.first_allocated_at is None or case.level_of_need is None:
        return False
    if case.first_allocated_at >= month_end(month):
        return False
    cutoff = month_start(shift_month(month, -closed_within_months))
    return case.closed_at is None or case.closed_at >= cutoff


# ---------------------------------------------------------------------------------------------
# The monthly draw


@dataclass(frozen=True)
class Assignment:
    auditor_id: str
    case_id: str


@dataclass(frozen=True)
class DrawOutcome:
    assignments: tuple[Assignment, ...]
    unfilled: dict[str, int] = field(default_factory=dict)
    """Audits still owed, by auditor, for want of cases to draw."""


@dataclass(frozen=True)
class DrawPolicy:
    """The council's audit framework: how many audits are owed and which cases qualify."""

    audits_per_month: int = 1
    closed_within_months: int = 3


@dataclass(frozen=True)
class DrawRound:
    """One run of a month's draw: drawing a month again adds a round, never a second audit."""

    seed: int
    at: datetime
    assigned: int
    unfilled: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DrawRecord:
    """A month's draw: the seed it was first drawn with and each round that filled it."""

    month: str
    seed: int
    drawn_at: datetime
    rounds: list[DrawRound] = field(default_factory=list)
    new_audit_ids: list[str] = field(default_factory=list)
    first_round: bool = False


def draw_seed(requested: int | None, recorded: int | None, fresh: int) -> int:
    """The seed asked for, else the month's recorded seed, else a fresh one: with the same
    population a month's draw is then the same however often it runs."""
    if requested is not None:
        return requested
    return recorded if recorded is not None else fresh


def still_owed(
    auditors: Iterable[Auditor], already_assigned: Mapping[str, int], default_per_month: int
) -> list[tuple[Auditor, int]]:
    """What each auditor still owes for the month: drawing again only fills the gap (an
    auditor added since, a higher quota), so it never assigns an audit twice."""
    owed = [
        (auditor, auditor.owes(default_per_month) - already_assigned.get(auditor.id, 0))
        for auditor in auditors
    ]
    return [(auditor, count) for auditor, count in owed if count > 0]


def no_repeat_window(month: str) -> list[str]:
    """The months whose drawn cases ``month`` may not draw again."""
    return [shift_month(month, step) for step in range(1 - NO_REPEAT_MONTHS, NO_REPEAT_MONTHS)]


def stratum_quotas(
    sizes: Mapping[tuple[str, int], int], wanted: int, rng: random.Random
) -> dict[tuple[str, int], int]:
    """How many cases to draw from each stratum: in proportion to its size.

    Largest remainder: each stratum gets the whole part of its share, and the cases left
    over go to the largest fractions (ties by lot), so a month's audits spread across
    districts and levels of need as the caseload does.
    """
    total = sum(sizes.values())
    if wanted >= total:
        return dict(sizes)
    strata = sorted(sizes)
    quotas = {stratum: wanted * sizes[stratum] // total for stratum in strata}
    lots = {stratum: rng.random() for stratum in strata}
    by_remainder = sorted(
        strata, key=lambda stratum: (-(wanted * sizes[stratum] % total), lots[stratum])
    )
    for stratum in by_remainder[: wanted - sum(quotas.values())]:
        quotas[stratum] += 1
    return quotas


def draw_audits(
    *,
    month: str,
    seed: int,
    owed: Sequence[tuple[Auditor, int]],
    population: Iterable[CaseState],
    recently_drawn: Iterable[str] = (),
    closed_within_months: int = 3,
) -> DrawOutcome:
    """Give each auditor the cases they owe for ``month``, at random, reproducibly.

    The same seed, month, auditors and population always give the same assignments (inputs
    are sorted first, so the order the database returns them in does not matter). Cases are
    drawn stratified by district and level of need, never one drawn in the last twelve
    months, and matched so that as few auditors as possible audit their own team's work.
    """
    rng = random.Random(f"{month}|{seed}")
    excluded = set(recently_drawn)
    pool = sorted(
        (
            case
            for case in population
            if case.case_id not in excluded and is_auditable(case, month, closed_within_months)
        ),
        key=lambda case: case.case_id,
    )
    slots = [
        auditor for auditor, count in sorted(owed, key=lambda o: o[0].id) for _ in range(count)
    ]
    rng.shuffle(slots)  # who goes short when cases run out is chance, not the alphabet

    by_stratum: dict[tuple[str, int], list[CaseState]] = {}
    for case in pool:
        by_stratum.setdefault(case.stratum, []).append(case)
    quotas = stratum_quotas(Counter(case.stratum for case in pool), len(slots), rng)
    chosen: list[CaseState] = []
    spare: dict[tuple[str, int], list[CaseState]] = {}
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        rng.shuffle(members)
        chosen.extend(members[: quotas[stratum]])
        spare[stratum] = members[quotas[stratum] :]

    placed = _place_outside_own_team(slots[: len(chosen)], chosen)
    placed = _swap_within_stratum(slots[: len(chosen)], placed, spare)
    unfilled = Counter(auditor.id for auditor in slots[len(chosen) :])
    return DrawOutcome(
        assignments=tuple(
            Assignment(auditor_id=slot.id, case_id=case.case_id)
            for slot, case in zip(slots, placed, strict=False)
        ),
        unfilled=dict(sorted(unfilled.items())),
    )


def _own_team(auditor: Auditor, case: CaseState) -> bool:
    return auditor.team_id is not None and auditor.team_id == case.team_id


def _place_outside_own_team(slots: list[Auditor], cases: list[CaseState]) -> list[CaseState]:
    """Match slots to cases, as many as possible outside the auditor's own team.

    A maximum bipartite matching (augmenting paths) over "not my team" pairs; the slots it
    cannot match take the cases left, which are then all their own team's.
    """
    case_holder: dict[int, int] = {}

    def seat(slot: int, tried: set[int]) -> bool:
        for index, case in enumerate(cases):
            if index in tried or _own_team(slots[slot], case):
                continue
            tried.add(index)
            if index not in case_holder or seat(case_holder[index], tried):
                case_holder[index] = slot
                return True
        return False

    for slot in range(len(slots)):
        seat(slot, set())
    placed: dict[int, CaseState] = {slot: cases[index] for index, slot in case_holder.items()}
    leftovers = iter(case for index, case in enumerate(cases) if index not in case_holder)
    return [placed[slot] if slot in placed else next(leftovers) for slot in range(len(slots))]


def _swap_within_stratum(
    slots: list[Auditor],
    placed: list[CaseState],
    spare: dict[tuple[str, int], list[CaseState]],
) -> list[CaseState]:
    """Replace an own-team case with an undrawn case of the same stratum from another team."""
    result = list(placed)
    for slot, case in enumerate(placed):
        if not _own_team(slots[slot], case):
            continue
        others = spare.get(case.stratum, [])
        swap = next((other for other in others if not _own_team(slots[slot], other)), None)
        if swap is not None:
            others.remove(swap)
            others.append(case)
            result[slot] = swap
    return result


# ---------------------------------------------------------------------------------------------
# Submitting an audit


@dataclass(frozen=True)
class Audit:
    """A case drawn for an auditor's monthly audit, and its grades once completed.

    It holds the case's district, team and level of need as they were when drawn, and
    refers to the case and family by id only.
    """

    id: str
    month: str
    auditor_id: str
    auditor_role: AuditorRole
    case_id: str
    family_id: str
    district: str
    team_id: str | None
    level_of_need: int | None
    case_status: str | None
    draw_seed: int | None
    assigned_at: datetime
    due_by: datetime
    completed_at: datetime | None = None
    scores: dict[str, str] = field(default_factory=dict)
    overall_grade: str | None = None
    overall_grade_given: bool | None = None
    learning_points: list[str] = field(default_factory=list)

    @property
    def record(self) -> AuditRecord:
        return AuditRecord(
            audit_id=self.id,
            auditor_id=self.auditor_id,
            district=self.district,
            month=self.month,
            due_by=self.due_by,
            completed_at=self.completed_at,
            overall_grade=self.overall_grade,
            scores=self.scores,
        )


@dataclass(frozen=True)
class AuditAsOf:
    """An audit with its status at a moment: whether it is overdue depends on the time."""

    audit: Audit
    status: AuditStatus


def as_of(audit: Audit, now: datetime) -> AuditAsOf:
    return AuditAsOf(audit, audit_status(audit.record, now))


def assign_audit(
    auditor: Auditor, case: CaseState, *, month: str, seed: int, now: datetime
) -> tuple[Audit, AuditAssigned]:
    """The audit a draw gives ``auditor`` of ``case``, and the event that announces it."""
    audit = Audit(
        id=audit_id_for(auditor.id, case.case_id, month),
        month=month,
        auditor_id=auditor.id,
        auditor_role=auditor.role,
        case_id=case.case_id,
        family_id=case.family_id,
        district=case.district,
        team_id=case.team_id,
        level_of_need=case.level_of_need,
        case_status=case.status,
        draw_seed=seed,
        assigned_at=now,
        due_by=month_end(month),
    )
    event = AuditAssigned(
        audit_id=audit.id,
        case_id=audit.case_id,
        family_id=audit.family_id,
        district=audit.district,
        team_id=audit.team_id,
        auditor_id=audit.auditor_id,
        month=audit.month,
        assigned_at=audit.assigned_at,
        due_by=audit.due_by,
    )
    return audit, event


@dataclass(frozen=True)
class Submission:
    """An auditor's grades for an audit, as given: ``complete_audit`` checks them."""

    scores: Mapping[str, str]
    overall_grade: str | None = None
    learning_points: list[str] = field(default_factory=list)


def check_claimed_auditor(claimed: str | None, signed_in: str | None) -> None:
    """A submission that names its auditor must name the one signed in."""
    if claimed and claimed != signed_in:
        raise NotTheAuditor(
            [
                Problem(
                    "auditor_id",
                    "auditor_mismatch",
                    f"you are signed in as {signed_in!r}, not {claimed!r}",
                )
            ]
        )


def complete_audit(
    audit: Audit, submission: Submission, *, auditor_id: str | None, now: datetime
) -> tuple[Audit, AuditCompleted]:
    """Complete an assigned audit: only its auditor, only once, every standard graded.

    Returns the completed audit and the ``audit-completed`` event it publishes.
    """
    if not auditor_id:
        raise Invalid(
            [
                Problem(
                    "auditor_id",
                    "missing",
                    "sign in as the auditor: the token's sub is the auditor id",
                )
            ]
        )
    if auditor_id != audit.auditor_id:
        raise NotTheAuditor(
            [
                Problem(
                    "auditor_id",
                    "not_assigned_auditor",
                    f"audit {audit.id} is assigned to another auditor, not {auditor_id!r}",
                )
            ]
        )
    if audit.completed_at is not None:
        raise AlreadyCompleted(audit.id, audit.completed_at)
    problems = check_submission(submission.scores, submission.overall_grade)
    if problems:
        raise Invalid(problems)
    scores = standard_scores(submission.scores)
    overall = (
        OfstedGrade(submission.overall_grade)
        if submission.overall_grade is not None
        else overall_grade(scores)
    )
    completed = replace(
        audit,
        scores={score.standard: score.grade.value for score in scores},
        overall_grade=overall.value,
        overall_grade_given=submission.overall_grade is not None,
        learning_points=list(submission.learning_points),
        completed_at=now,
    )
    event = AuditCompleted(
        audit_id=audit.id,
        case_id=audit.case_id,
        family_id=audit.family_id,
        district=audit.district,
        team_id=audit.team_id,
        auditor_id=auditor_id,
        auditor_role=audit.auditor_role.value,
        month=audit.month,
        scores=scores,
        overall_grade=overall,
        learning_points=submission.learning_points,
        completed_at=now,
        level_of_need=LevelOfNeed(audit.level_of_need) if audit.level_of_need else None,
        due_by=audit.due_by,
    )
    return completed, event


def check_submission(scores: Mapping[str, str], overall: str | None) -> list[Problem]:
    """Every standard graded once on the Ofsted scale; nothing else."""
    grades = ", ".join(grade.value for grade in GRADE_ORDER)
    problems = [
        Problem(f"scores.{standard}", "missing_standard", f"grade the standard: {description}")
        for standard, description in QUALITY_STANDARDS.items()
        if standard not in scores
    ]
    for standard, grade in scores.items():
        if standard not in QUALITY_STANDARDS:
            problems.append(
                Problem(
                    f"scores.{standard}",
                    "unknown_standard",
                    f"{standard!r} is not a quality standard; the standards are: "
                    + ", ".join(QUALITY_STANDARDS),
                )
            )
        elif grade not in GRADE_ORDER:
            problems.append(
                Problem(
                    f"scores.{standard}",
                    "invalid_grade",
                    f"{grade!r} is not an Ofsted grade; use one of: {grades}",
                )
            )
    if overall is not None and overall not in GRADE_ORDER:
        problems.append(
            Problem(
                "overall_grade",
                "invalid_grade",
                f"{overall!r} is not an Ofsted grade; use one of: {grades}",
            )
        )
    return problems


def standard_scores(scores: Mapping[str, str]) -> list[StandardScore]:
    """The scores in the standards' own order, for the event."""
    return [
        StandardScore(standard=standard, grade=OfstedGrade(scores[standard]))
        for standard in QUALITY_STANDARDS
        if standard in scores
    ]


def overall_grade(scores: Sequence[StandardScore]) -> OfstedGrade:
    """The median standard's grade, taking the worse of two middles.

    Any inadequate standard makes the audit inadequate: a case is only as safe as its
    weakest safeguarding practice.
    """
    if not scores:
        raise ValueError("an audit needs at least one scored standard")
    ranks = sorted(GRADE_ORDER.index(score.grade) for score in scores)
    if ranks[-1] == GRADE_ORDER.index(OfstedGrade.INADEQUATE):
        return OfstedGrade.INADEQUATE
    return GRADE_ORDER[ranks[len(ranks) // 2]]


def audit_id_for(auditor_id: str, case_id: str, month: str) -> str:
    """One audit of a case by an auditor a month: drawing it again gives the same audit."""
    digest = hashlib.sha256(f"{auditor_id}\0{case_id}\0{month}".encode()).hexdigest()
    return f"aud-{digest[:20]}"


# ---------------------------------------------------------------------------------------------
# Compliance


@dataclass(frozen=True)
class AuditRecord:
    """An assigned audit as compliance sees it."""

    audit_id: str
    auditor_id: str
    district: str
    month: str
    due_by: datetime
    completed_at: datetime | None = None
    overall_grade: str | None = None
    scores: Mapping[str, str] = field(default_factory=dict)


def audit_status(audit: AuditRecord, now: datetime) -> AuditStatus:
    """Overdue once its month is over and it is still not completed."""
    if audit.completed_at is not None:
        return AuditStatus.COMPLETED
    return AuditStatus.OVERDUE if now >= audit.due_by else AuditStatus.ASSIGNED


@dataclass(frozen=True)
class AuditorCompliance:
    auditor_id: str
    owed: int
    assigned: int
    completed: int
    overdue: int


@dataclass(frozen=True)
class DistrictGrades:
    district: str
    completed: int
    overall: dict[str, int]
    by_standard: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Compliance:
    month: str
    auditors: list[AuditorCompliance]
    districts: list[DistrictGrades]


def compliance(
    month: str,
    auditors: Sequence[Auditor],
    audits: Sequence[AuditRecord],
    *,
    now: datetime,
    default_per_month: int,
) -> Compliance:
    """Per auditor: owed, assigned, completed and overdue; per district: the grades given.

    Auditors who owe nothing (inactive) still appear when they hold audits for the month.
    """
    statuses = Counter(
        (audit.auditor_id, audit_status(audit, now)) for audit in audits if audit.month == month
    )
    assigned = Counter(audit.auditor_id for audit in audits if audit.month == month)
    rows = [
        AuditorCompliance(
            auditor_id=auditor.id,
            owed=auditor.owes(default_per_month),
            assigned=assigned[auditor.id],
            completed=statuses[(auditor.id, AuditStatus.COMPLETED)],
            overdue=statuses[(auditor.id, AuditStatus.OVERDUE)],
        )
        for auditor in sorted(auditors, key=lambda auditor: auditor.id)
        if auditor.owes(default_per_month) or assigned[auditor.id]
    ]
    districts: dict[str, list[AuditRecord]] = {}
    for audit in audits:
        if audit.month == month and audit.completed_at is not None:
            districts.setdefault(audit.district, []).append(audit)
    return Compliance(
        month=month,
        auditors=rows,
        districts=[
            DistrictGrades(
                district=district,
                completed=len(done),
                overall=_distribution(audit.overall_grade for audit in done),
                by_standard={
                    standard: _distribution(audit.scores.get(standard) for audit in done)
                    for standard in QUALITY_STANDARDS
                },
            )
            for district, done in sorted(districts.items())
        ],
    )


def _distribution(grades: Iterable[str | None]) -> dict[str, int]:
    counts = Counter(grade for grade in grades if grade is not None)
    return {grade.value: counts[grade.value] for grade in GRADE_ORDER}
