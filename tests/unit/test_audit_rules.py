"""Audit rules: the overall grade and the audit's identity."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.audit.domain import audit_id_for, audit_month, overall_grade
from shared.events import OfstedGrade, StandardScore

OUT = OfstedGrade.OUTSTANDING
GOOD = OfstedGrade.GOOD
RI = OfstedGrade.REQUIRES_IMPROVEMENT
INAD = OfstedGrade.INADEQUATE


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
