"""Retention: closed families whose personal data has been kept its full period. The rules.

A family is due for review when it has no open case, its last case closed at least
``EARLYHELP_RETENTION_YEARS`` (default 6) years ago, and no request has come for it since
that cut-off. Review, not deletion: a person decides (a sibling's later case, a legal hold),
then erases with ``POST /families/{id}/erasure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.months import add_months


def years_before(moment: datetime, years: int) -> datetime:
    """The same day ``years`` earlier, or the month's last day (29 February's 28th)."""
    return add_months(moment, -12 * years)


def due_for_review(family: Mapping[str, Any], now: datetime, years: int) -> bool:
    """The rule, for one family's fields (those of ``domain.FamilyRecord``)."""
    if family.get("open_cases") or family.get("personal_data_erased_at") is not None:
        return False
    closed = family.get("last_closed_at")
    if closed is None:
        return False
    cutoff = years_before(now, years)
    last_referral = family.get("last_referral_at") or closed
    return bool(closed <= cutoff and last_referral <= cutoff)


def review_due_since(
    last_closed_at: datetime, last_referral_at: datetime | None, years: int
) -> datetime:
    """When the retention period ended: ``years`` after the later of closure and request."""
    return years_before(max(last_closed_at, last_referral_at or last_closed_at), -years)
