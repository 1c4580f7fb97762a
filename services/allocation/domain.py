"""Allocation rules: pure functions over typed values, no I/O and no clock.

This is the walking skeleton's rule set: a family with an open case keeps it; a step-down
and an open statutory case are marked as such; every new case goes to its district's
locality team. Workers, caseload caps and the waiting queue come with the full service.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    ReferralReceived,
    ScreeningDecision,
)


@dataclass(frozen=True)
class OpenCase:
    case_id: str
    family_id: str
    district: str
    team_id: str | None
    worker_id: str | None


def team_for(district: str) -> str:
    return f"{district}-locality"


def case_id_for(referral_id: str) -> str:
    """Deterministic, so a redelivered referral cannot open a second case."""
    return "case-" + hashlib.sha256(referral_id.encode()).hexdigest()[:20]


def allocate(
    referral: ReferralReceived, open_case: OpenCase | None, now: datetime
) -> CaseAllocated | None:
    """The allocation for a screened referral, or None when it is not for Early Help."""
    if referral.decision is not ScreeningDecision.EARLY_HELP:
        return None
    if open_case is not None:
        case_id, team_id, worker_id = open_case.case_id, open_case.team_id, open_case.worker_id
        kind = AllocationKind.EXISTING_CASE
    else:
        case_id, team_id, worker_id = (
            case_id_for(referral.referral_id),
            team_for(referral.district),
            None,
        )
        if referral.is_step_down:
            kind = AllocationKind.STEP_DOWN
        elif referral.open_to_social_care:
            kind = AllocationKind.CO_WORKING
        else:
            kind = AllocationKind.STANDARD
    return CaseAllocated(
        case_id=case_id,
        family_id=referral.family_id,
        referral_id=referral.referral_id,
        district=referral.district,
        team_id=team_id,
        worker_id=worker_id,
        status=AllocationStatus.ALLOCATED,
        kind=kind,
        level_of_need=referral.level_of_need,
        social_care_case_reference=referral.social_care_case_reference,
        referral_received_at=referral.received_at,
        allocated_at=now,
    )
