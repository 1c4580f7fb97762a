"""Allocation rules: pure functions over typed values, no I/O and no clock.

The rules are tried in order: a family with an open case keeps it and its worker; a
step-down from Children's Social Care comes next, with priority in the queue; then a family
open to social care, co-worked; then everyone else. A new case goes to the worker with the
most spare capacity among the teams serving the family's district, or waits in that
district's queue. The store applies these rules atomically against the database.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime

from shared.events import AllocationKind, ReferralReceived, ScreeningDecision

DEFAULT_CAP_PER_FTE = 18
"""Families a full-time lead practitioner holds, unless their team or they are set otherwise."""


def is_for_allocation(referral: ReferralReceived) -> bool:
    """Only Early Help referrals get a case: signposting and step-ups leave the service."""
    return referral.decision is ScreeningDecision.EARLY_HELP


def new_case_kind(referral: ReferralReceived) -> AllocationKind:
    """The rule that places a family without an open case (rule 1 is the store's look-up)."""
    if referral.is_step_down:
        return AllocationKind.STEP_DOWN
    if referral.open_to_social_care:
        return AllocationKind.CO_WORKING
    return AllocationKind.STANDARD


def case_id_for(referral_id: str) -> str:
    """Deterministic, so a redelivered referral cannot open a second case."""
    return "case-" + hashlib.sha256(referral_id.encode()).hexdigest()[:20]


def caseload_cap(fte: float, cap_per_fte: int, cap_override: int | None = None) -> int:
    """Families a worker may hold: their own cap when set, else their FTE share of the team's.

    Rounded down, so a part-timer is never given more than their share.
    """
    if cap_override is not None:
        return cap_override
    return math.floor(fte * cap_per_fte + 1e-9)


@dataclass(frozen=True, order=True)
class QueuePlace:
    """Where a queued case stands: step-downs first, then higher need, then the oldest.

    Ordering the dataclass orders the queue; the case id makes the order total, so every
    replica drains the same queue in the same order.
    """

    priority: int
    need_rank: int
    referral_received_at: datetime
    case_id: str


def queue_priority(kind: AllocationKind) -> int:
    """0 for a step-down (allocated with priority), 1 for every other case."""
    return 0 if kind is AllocationKind.STEP_DOWN else 1


def seconds_between(start: datetime, end: datetime) -> float:
    """Time to allocation, never negative when clocks disagree slightly."""
    return max(0.0, (end - start).total_seconds())
