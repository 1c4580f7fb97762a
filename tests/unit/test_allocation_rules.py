"""Allocation rules: where a screened referral's case goes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.allocation.domain import OpenCase, allocate, case_id_for, team_for
from shared.events import (
    AllocationKind,
    AllocationStatus,
    LevelOfNeed,
    ReferralReceived,
    ScreeningDecision,
)
from tests.factories import referral_received

RECEIVED_AT = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


def referral(**changes: Any) -> ReferralReceived:
    return referral_received(
        **{
            "level_of_need": LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
            "received_at": RECEIVED_AT,
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("level", "decision"),
    [
        (LevelOfNeed.UNIVERSAL, ScreeningDecision.SIGNPOST),
        (LevelOfNeed.STATUTORY, ScreeningDecision.STEP_UP),
    ],
)
def test_allocate_gives_none_for_a_referral_not_for_early_help(
    level: LevelOfNeed, decision: ScreeningDecision
) -> None:
    assert allocate(referral(level_of_need=level, decision=decision), None, NOW) is None


def test_allocate_gives_none_for_a_step_up_even_with_an_open_case() -> None:
    open_case = OpenCase("case-9", "fam-1", "northvale", "northvale-locality", "worker-7")

    assert allocate(referral(decision=ScreeningDecision.STEP_UP), open_case, NOW) is None


def test_allocate_gives_early_help_a_standard_case_with_the_district_locality_team() -> None:
    allocation = allocate(referral(district="eastmere"), None, NOW)

    assert allocation is not None
    assert allocation.case_id == case_id_for("ref-1")
    assert allocation.family_id == "fam-1"
    assert allocation.referral_id == "ref-1"
    assert allocation.district == "eastmere"
    assert allocation.team_id == "eastmere-locality"
    assert allocation.worker_id is None
    assert allocation.status is AllocationStatus.ALLOCATED
    assert allocation.kind is AllocationKind.STANDARD
    assert allocation.level_of_need is LevelOfNeed.EARLY_HELP_MULTI_AGENCY
    assert allocation.social_care_case_reference is None
    assert allocation.referral_received_at == RECEIVED_AT
    assert allocation.allocated_at == NOW


def test_allocate_gives_the_same_case_id_for_the_same_referral() -> None:
    first = allocate(referral(), None, NOW)
    again = allocate(referral(), None, datetime(2026, 11, 5, tzinfo=UTC))
    other = allocate(referral(referral_id="ref-2"), None, NOW)

    assert first is not None
    assert again is not None
    assert other is not None
    assert first.case_id == again.case_id
    assert first.case_id.startswith("case-")
    assert other.case_id != first.case_id


def test_team_for_names_the_district_locality_team() -> None:
    assert team_for("southford") == "southford-locality"


def test_allocate_marks_a_step_down_with_its_social_care_reference() -> None:
    step_down = referral(
        route="social_care_step_down",
        referral_source="5A",
        is_step_down=True,
        social_care_case_reference="SC-2026-77",
    )

    allocation = allocate(step_down, None, NOW)

    assert allocation is not None
    assert allocation.kind is AllocationKind.STEP_DOWN
    assert allocation.social_care_case_reference == "SC-2026-77"
    assert allocation.team_id == "northvale-locality"


def test_allocate_marks_a_family_open_to_social_care_as_co_working() -> None:
    co_working = referral(open_to_social_care=True, social_care_case_reference="SC-2026-12")

    allocation = allocate(co_working, None, NOW)

    assert allocation is not None
    assert allocation.kind is AllocationKind.CO_WORKING
    assert allocation.social_care_case_reference == "SC-2026-12"
    assert allocation.case_id == case_id_for("ref-1")
    assert allocation.team_id == "northvale-locality"


def test_allocate_continues_a_familys_open_case_with_its_team_and_worker() -> None:
    open_case = OpenCase(
        case_id="case-open",
        family_id="fam-1",
        district="northvale",
        team_id="northvale-family-support",
        worker_id="worker-7",
    )

    allocation = allocate(referral(referral_id="ref-2"), open_case, NOW)

    assert allocation is not None
    assert allocation.kind is AllocationKind.EXISTING_CASE
    assert allocation.case_id == "case-open"
    assert allocation.team_id == "northvale-family-support"
    assert allocation.worker_id == "worker-7"
    assert allocation.referral_id == "ref-2"
    assert allocation.status is AllocationStatus.ALLOCATED


def test_allocate_continues_an_open_case_even_for_a_step_down() -> None:
    open_case = OpenCase("case-open", "fam-1", "northvale", "northvale-locality", None)
    step_down = referral(is_step_down=True, social_care_case_reference="SC-1")

    allocation = allocate(step_down, open_case, NOW)

    assert allocation is not None
    assert allocation.kind is AllocationKind.EXISTING_CASE
    assert allocation.case_id == "case-open"
    assert allocation.worker_id is None
    assert allocation.social_care_case_reference == "SC-1"
