"""Projection rules: which counters each event moves, in which month and district."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from services.reporting.domain import (
    UNKNOWN_DISTRICT,
    Counts,
    FigureChange,
    add_counts,
    figures_for,
    month_of,
)
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    OfstedGrade,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    ScreeningDecision,
    StandardScore,
)
from tests.factories import referral_received

NOV = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
DEC = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def received(**changes: Any) -> ReferralReceived:
    return referral_received(**{"received_at": NOV, **changes})


def allocated(**changes: Any) -> CaseAllocated:
    fields: dict[str, Any] = {
        "case_id": "case-1",
        "family_id": "fam-1",
        "referral_id": "ref-1",
        "district": "eastmere",
        "team_id": "eastmere-locality",
        "worker_id": None,
        "status": AllocationStatus.ALLOCATED,
        "kind": AllocationKind.STANDARD,
        "level_of_need": LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
        "referral_received_at": NOV,
        "allocated_at": DEC,
    }
    return CaseAllocated.model_validate({**fields, **changes})


def reason(code: str, field: str = "") -> RejectionReason:
    return RejectionReason(field=field, code=code, message=f"{field}: {code}")


# ---------------------------------------------------------------------------------------------
# figures_for


def test_figures_for_a_referral_received_counts_it_by_source_route_and_decision() -> None:
    change = figures_for(received())

    assert change == FigureChange(
        month="2026-11",
        district="northvale",
        increments={
            "referrals_received": 1,
            "by_source.2A": 1,
            "by_route.school": 1,
            "accepted_for_early_help": 1,
        },
    )


@pytest.mark.parametrize(
    ("decision", "counter"),
    [
        (ScreeningDecision.SIGNPOST, "signposted"),
        (ScreeningDecision.EARLY_HELP, "accepted_for_early_help"),
        (ScreeningDecision.STEP_UP, "stepped_up"),
    ],
)
def test_figures_for_a_referral_received_counts_its_decision(
    decision: ScreeningDecision, counter: str
) -> None:
    increments = figures_for(received(decision=decision)).increments

    assert increments[counter] == 1
    decision_counters = {"signposted", "accepted_for_early_help", "stepped_up"}
    assert decision_counters & set(increments) == {counter}


def test_figures_for_a_referral_received_counts_step_downs_and_re_referrals() -> None:
    change = figures_for(
        received(
            route="social_care_step_down",
            referral_source="5A",
            is_step_down=True,
            is_re_referral=True,
            district="westbrook",
            received_at=DEC,
        )
    )

    assert change.month == "2026-12"
    assert change.district == "westbrook"
    assert change.increments["step_downs"] == 1
    assert change.increments["re_referrals"] == 1
    assert change.increments["by_source.5A"] == 1
    assert change.increments["by_route.social_care_step_down"] == 1


def test_figures_for_an_ordinary_referral_moves_no_step_down_or_re_referral_counter() -> None:
    increments = figures_for(received()).increments

    assert "step_downs" not in increments
    assert "re_referrals" not in increments


def test_figures_for_a_rejection_go_to_the_unknown_district_counting_each_reason_once() -> None:
    rejection = ReferralRejected(
        rejection_id="rej-1",
        partner_id="northvale-primary",
        submission_id="np-2026-0001",
        route="school",
        reasons=[
            reason("missing", "referrer"),
            reason("missing", "children.0.date_of_birth"),
            reason("no_consent", "consent"),
        ],
        received_at=NOV,
    )

    change = figures_for(rejection)

    assert UNKNOWN_DISTRICT == "unknown"
    assert change == FigureChange(
        month="2026-11",
        district="unknown",
        increments={
            "referrals_rejected": 1,
            "rejections_by_reason.missing": 1,
            "rejections_by_reason.no_consent": 1,
        },
    )


def test_figures_for_an_allocated_case_count_it_by_kind_in_the_allocation_month() -> None:
    change = figures_for(allocated(kind=AllocationKind.CO_WORKING))

    assert change == FigureChange(
        month="2026-12",
        district="eastmere",
        increments={"cases_allocated": 1, "allocations_by_kind.co_working": 1},
    )


def test_figures_for_a_queued_case_count_it_as_queued() -> None:
    change = figures_for(allocated(status=AllocationStatus.QUEUED, team_id=None))

    assert change.increments == {"cases_queued": 1, "allocations_by_kind.standard": 1}


def test_figures_for_a_closed_case_count_it_by_outcome() -> None:
    closed = CaseClosed(
        case_id="case-1",
        family_id="fam-1",
        district="southford",
        team_id="southford-locality",
        worker_id="worker-3",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=datetime(2027, 1, 15, tzinfo=UTC),
    )

    assert figures_for(closed) == FigureChange(
        month="2027-01",
        district="southford",
        increments={"cases_closed": 1, "closures_by_outcome.needs_met": 1},
    )


def test_figures_for_an_audit_count_it_by_grade_in_the_audit_month() -> None:
    audit = AuditCompleted(
        audit_id="aud-1",
        case_id="case-1",
        family_id="fam-1",
        district="eastmere",
        auditor_id="manager-1",
        month="2026-10",
        scores=[StandardScore(standard="voice-of-the-child", grade=OfstedGrade.GOOD)],
        overall_grade=OfstedGrade.GOOD,
        completed_at=NOV,
    )

    assert figures_for(audit) == FigureChange(
        month="2026-10",
        district="eastmere",
        increments={"audits_completed": 1, "grades.good": 1},
    )


def test_figures_for_an_event_without_a_projection_raises_type_error() -> None:
    submission = ReferralSubmitted.model_validate(
        {
            "partner_id": "p",
            "submission_id": "s",
            "route": "school",
            "referrer": {"name": "A", "organisation": "B", "role": "C"},
            "children": [
                {
                    "given_name": "D",
                    "family_name": "E",
                    "date_of_birth": "2016-01-01",
                    "gender": "not_known",
                }
            ],
            "address": {"line1": "1 Road", "postcode": "WX1 1AA"},
            "needs": ["health"],
            "level_of_need": 2,
            "consent": {"given": True},
        }
    )

    with pytest.raises(TypeError, match="ReferralSubmitted"):
        figures_for(submission)


def test_month_of_is_year_and_month() -> None:
    assert month_of(NOV) == "2026-11"
    assert month_of(datetime(2027, 1, 31, 23, 59, tzinfo=UTC)) == "2027-01"


# ---------------------------------------------------------------------------------------------
# add_counts


def test_add_counts_adds_to_existing_counters_and_creates_new_ones() -> None:
    total: Counts = {"referrals_received": 2, "signposted": 1}

    add_counts(total, {"referrals_received": 3, "stepped_up": 1})

    assert total == {"referrals_received": 5, "signposted": 1, "stepped_up": 1}


def test_add_counts_merges_nested_dicts() -> None:
    total: Counts = {
        "referrals_received": 4,
        "by_source": {"2A": 3, "3A": 1},
        "rejections": {"by_reason": {"missing": 2}},
    }
    counts: Counts = {
        "referrals_received": 2,
        "by_source": {"2A": 1, "6": 1},
        "rejections": {"by_reason": {"missing": 1, "no_consent": 1}},
        "grades": {"good": 1},
    }

    add_counts(total, counts)

    assert total == {
        "referrals_received": 6,
        "by_source": {"2A": 4, "3A": 1, "6": 1},
        "rejections": {"by_reason": {"missing": 3, "no_consent": 1}},
        "grades": {"good": 1},
    }


def test_add_counts_leaves_the_added_counts_unchanged() -> None:
    counts: Counts = {"by_source": {"2A": 1}, "grades": {"good": 1}}
    before = copy.deepcopy(counts)
    total: Counts = {}

    add_counts(total, counts)
    add_counts(total, counts)

    assert counts == before
    assert total == {"by_source": {"2A": 2}, "grades": {"good": 2}}
