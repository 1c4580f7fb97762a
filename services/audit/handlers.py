"""Use cases of the audit service: draw a month's audits, complete one, report compliance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.audit import domain
from services.audit.domain import Problem
from services.audit.ports import AuditNotOpen, AuditStore, DrawDecision, DrawInputs, DrawRecord
from shared.events import AuditCompleted, LevelOfNeed, OfstedGrade


class Refused(Exception):
    """A request that cannot be carried out, with its HTTP status and every reason found."""

    def __init__(self, status: int, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.status = status
        self.problems = list(problems)


@dataclass(frozen=True)
class DrawPolicy:
    """The council's audit framework: how many audits are owed and which cases qualify."""

    audits_per_month: int = 1
    closed_within_months: int = 3


@dataclass(frozen=True)
class Submission:
    scores: Mapping[str, str]
    overall_grade: str | None = None
    learning_points: list[str] = field(default_factory=list)


async def draw_month(
    month: str,
    *,
    store: AuditStore,
    now: datetime,
    policy: DrawPolicy,
    requested_seed: int | None,
    fresh_seed: int,
) -> DrawRecord:
    """Assign every active auditor what they still owe for ``month``.

    Drawing a month again only fills what is still owed (an auditor added since, a higher
    quota), so it never assigns twice. The seed is the one asked for, else the month's
    recorded seed, else ``fresh_seed``; with the same population the draw is the same.
    """

    def decide(inputs: DrawInputs) -> DrawDecision:
        seed = requested_seed
        if seed is None:
            seed = inputs.recorded_seed if inputs.recorded_seed is not None else fresh_seed
        owed = [
            (
                auditor,
                auditor.owes(policy.audits_per_month) - inputs.already_assigned.get(auditor.id, 0),
            )
            for auditor in inputs.auditors
        ]
        outcome = domain.draw_audits(
            month=month,
            seed=seed,
            owed=[(auditor, count) for auditor, count in owed if count > 0],
            population=inputs.population,
            recently_drawn=inputs.recently_drawn,
            closed_within_months=policy.closed_within_months,
        )
        return DrawDecision(seed=seed, outcome=outcome)

    return await store.draw(month, decide, now=now)


async def draw_current_month_if_due(
    *, store: AuditStore, now: datetime, policy: DrawPolicy, fresh_seed: int
) -> DrawRecord | None:
    """At the start of a month (or of the service), draw the month unless it was drawn."""
    month = domain.audit_month(now)
    if await store.get_draw(month) is not None:
        return None
    return await draw_month(
        month, store=store, now=now, policy=policy, requested_seed=None, fresh_seed=fresh_seed
    )


async def submit_audit(
    audit_id: str,
    submission: Submission,
    *,
    auditor_id: str | None,
    store: AuditStore,
    now: datetime,
    correlation_id: str,
) -> dict[str, Any]:
    """Complete an assigned audit: only its auditor, only once, every standard graded.

    Storing the grades and staging ``audit-completed`` happen in one transaction, and the
    event's id is derived from the audit, so it can never be published for it twice.
    """
    audit = await store.get_audit(audit_id)
    if audit is None:
        raise Refused(404, [Problem("audit_id", "unknown_audit", f"no audit {audit_id!r}")])
    if not auditor_id:
        raise Refused(
            422,
            [
                Problem(
                    "auditor_id",
                    "missing",
                    "sign in as the auditor: the token's sub is the auditor id",
                )
            ],
        )
    if auditor_id != audit["auditor_id"]:
        raise Refused(
            403,
            [
                Problem(
                    "auditor_id",
                    "not_assigned_auditor",
                    f"audit {audit_id} is assigned to another auditor, not {auditor_id!r}",
                )
            ],
        )
    if audit["status"] == "completed":
        raise Refused(409, [_already_completed(audit_id, audit["completed_at"])])
    problems = domain.check_submission(submission.scores, submission.overall_grade)
    if problems:
        raise Refused(422, problems)

    scores = domain.standard_scores(submission.scores)
    overall = (
        OfstedGrade(submission.overall_grade)
        if submission.overall_grade is not None
        else domain.overall_grade(scores)
    )
    event = AuditCompleted(
        audit_id=audit_id,
        case_id=audit["case_id"],
        family_id=audit["family_id"],
        district=audit["district"],
        team_id=audit.get("team_id"),
        auditor_id=auditor_id,
        auditor_role=audit.get("auditor_role"),
        month=audit["month"],
        scores=scores,
        overall_grade=overall,
        learning_points=submission.learning_points,
        completed_at=now,
        level_of_need=(LevelOfNeed(audit["level_of_need"]) if audit.get("level_of_need") else None),
        due_by=audit["due_by"],
    )
    changes = {
        "scores": {score.standard: score.grade.value for score in scores},
        "overall_grade": overall.value,
        "overall_grade_given": submission.overall_grade is not None,
        "learning_points": submission.learning_points,
        "completed_at": now,
    }
    try:
        await store.complete(audit_id, changes, event, correlation_id=correlation_id)
    except AuditNotOpen:
        raise Refused(409, [_already_completed(audit_id, None)]) from None
    completed = await store.get_audit(audit_id)
    assert completed is not None
    return completed


def _already_completed(audit_id: str, completed_at: datetime | None) -> Problem:
    when = f" at {completed_at.isoformat()}" if completed_at else ""
    return Problem("audit_id", "already_completed", f"audit {audit_id} was completed{when}")


async def month_compliance(
    month: str, *, store: AuditStore, now: datetime, policy: DrawPolicy
) -> domain.Compliance:
    audits = [
        domain.AuditRecord(
            audit_id=document["_id"],
            auditor_id=document["auditor_id"],
            district=document["district"],
            month=document["month"],
            due_by=document["due_by"],
            completed_at=document.get("completed_at"),
            overall_grade=document.get("overall_grade"),
            scores=document.get("scores") or {},
        )
        for document in await store.month_audits(month)
    ]
    return domain.compliance(
        month,
        await store.auditors(),
        audits,
        now=now,
        default_per_month=policy.audits_per_month,
    )
