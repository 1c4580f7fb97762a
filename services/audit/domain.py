"""Audit rules: pure functions, no I/O and no clock."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.events import OfstedGrade, StandardScore

GRADE_ORDER = (
    OfstedGrade.OUTSTANDING,
    OfstedGrade.GOOD,
    OfstedGrade.REQUIRES_IMPROVEMENT,
    OfstedGrade.INADEQUATE,
)


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


def audit_month(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def audit_id_for(auditor_id: str, case_id: str, month: str) -> str:
    """One audit of a case by an auditor a month: posting it again gives the same audit."""
    digest = hashlib.sha256(f"{auditor_id}\0{case_id}\0{month}".encode()).hexdigest()
    return f"aud-{digest[:20]}"
