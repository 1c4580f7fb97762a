"""Allocation rules: which rule places a referral, caps, and the queue's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation.domain import (
    QueuePlace,
    case_id_for,
    caseload_cap,
    is_for_allocation,
    new_case_kind,
    queue_priority,
    seconds_between,
)
from shared.events import AllocationKind, LevelOfNeed, ReferralReceived, ScreeningDecision
from tests.factories import referral_received

RECEIVED_AT = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def referral(**changes: Any) -> ReferralReceived:
    return referral_received(
        **{
            "level_of_need": LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
            "received_at": RECEIVED_AT,
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("decision", "allocated"),
    [
        (ScreeningDecision.SIGNPOST, False),
        (ScreeningDecision.STEP_UP, False),
        (ScreeningDecision.EARLY_HELP, True),
    ],
)
def test_only_early_help_referrals_are_allocated(
    decision: ScreeningDecision, allocated: bool
) -> None:
    assert is_for_allocation(referral(decision=decision)) is allocated


def test_a_step_down_is_placed_by_the_step_down_rule_even_when_open_to_social_care() -> None:
    step_down = referral(
        is_step_down=True, open_to_social_care=True, social_care_case_reference="CSC-1"
    )

    assert new_case_kind(step_down) is AllocationKind.STEP_DOWN


def test_a_family_open_to_social_care_is_co_worked() -> None:
    co_worked = referral(open_to_social_care=True, social_care_case_reference="CSC-2")

    assert new_case_kind(co_worked) is AllocationKind.CO_WORKING


def test_any_other_family_gets_a_standard_allocation() -> None:
    assert new_case_kind(referral()) is AllocationKind.STANDARD


def test_case_ids_are_stable_per_referral_and_distinct_between_referrals() -> None:
    assert case_id_for("ref-1") == case_id_for("ref-1")
    assert case_id_for("ref-1") != case_id_for("ref-2")
    assert case_id_for("ref-1").startswith("case-")


@pytest.mark.parametrize(
    ("fte", "per_fte", "own", "cap"),
    [
        (1.0, 18, None, 18),
        (0.5, 18, None, 9),
        (0.8, 18, None, 14),  # 14.4: never more than the worker's share
        (0.6, 15, None, 9),  # 0.6 x 15 is 8.999... in floating point
        (1.0, 18, 12, 12),  # a protected caseload
        (0.5, 18, 0, 0),
    ],
)
def test_a_workers_cap_is_their_own_or_their_fte_share_rounded_down(
    fte: float, per_fte: int, own: int | None, cap: int
) -> None:
    assert caseload_cap(fte, per_fte, own) == cap


def test_the_queue_takes_step_downs_first_then_higher_need_then_the_oldest() -> None:
    earlier, later = RECEIVED_AT, RECEIVED_AT + timedelta(hours=1)

    def place(name: str, kind: AllocationKind, level: int, at: datetime) -> QueuePlace:
        return QueuePlace(queue_priority(kind), -level, at, name)

    places = [
        place("standard-2-earlier", AllocationKind.STANDARD, 2, earlier),
        place("co-working-3-later", AllocationKind.CO_WORKING, 3, later),
        place("step-down-2-later", AllocationKind.STEP_DOWN, 2, later),
        place("standard-3-earlier", AllocationKind.STANDARD, 3, earlier),
        place("step-down-3-later", AllocationKind.STEP_DOWN, 3, later),
        place("standard-2-later", AllocationKind.STANDARD, 2, later),
    ]

    assert [entry.case_id for entry in sorted(places)] == [
        "step-down-3-later",
        "step-down-2-later",
        "standard-3-earlier",
        "co-working-3-later",
        "standard-2-earlier",
        "standard-2-later",
    ]


def test_the_case_id_breaks_a_tie_so_every_replica_sees_one_order() -> None:
    a = QueuePlace(1, -2, RECEIVED_AT, "case-a")
    b = QueuePlace(1, -2, RECEIVED_AT, "case-b")

    assert sorted([b, a]) == [a, b]


def test_time_to_allocation_is_never_negative() -> None:
    assert seconds_between(RECEIVED_AT, RECEIVED_AT + timedelta(minutes=2)) == 120.0
    assert seconds_between(RECEIVED_AT, RECEIVED_AT - timedelta(seconds=1)) == 0.0
