"""Valid events for tests, with any field overridden by keyword."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.referral.domain import MatchKeys
from shared.events import HeadlineOutcome, LevelOfNeed, ReferralReceived, ScreeningDecision
from tests.auth import TEST_MATCH_KEY_SECRET

MATCH_KEYS = MatchKeys(TEST_MATCH_KEY_SECRET.encode())
"""The front door's family keys under the tests' own secret."""


def referral_received(**changes: Any) -> ReferralReceived:
    fields: dict[str, Any] = {
        "referral_id": "ref-1",
        "family_id": "fam-1",
        "partner_id": "northvale-primary",
        "submission_id": "np-2026-0001",
        "route": "school",
        "referral_source": "2A",
        "district": "northvale",
        "level_of_need": LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        "decision": ScreeningDecision.EARLY_HELP,
        "needs": [HeadlineOutcome.EDUCATION],
        "child_count": 1,
        "received_at": datetime(2026, 11, 3, 9, 30, tzinfo=UTC),
    }
    return ReferralReceived.model_validate({**fields, **changes})
