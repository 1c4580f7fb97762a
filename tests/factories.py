"""Valid events for tests, with any field overridden by keyword."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from services.referral.domain import MatchKeys
from shared.events import (
    CaseAllocated,
    EventData,
    HeadlineOutcome,
    LevelOfNeed,
    ReferralReceived,
    ScreeningDecision,
)
from shared.events.envelope import EXAMPLES_DIR
from tests.auth import TEST_MATCH_KEY_SECRET

EventT = TypeVar("EventT", bound=EventData)

MATCH_KEYS = MatchKeys(TEST_MATCH_KEY_SECRET.encode())
"""The front door's family keys under the tests' own secret."""


def example(model: type[EventT], **changes: Any) -> EventT:
    """The first documented example of ``model``'s event type, with ``changes``."""
    found = json.loads((EXAMPLES_DIR / f"{model.event_type}.json").read_text(encoding="utf-8"))
    return model.model_validate({**found[0], **changes})


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


def case_allocated(case: str, team: str | None, when: datetime, **changes: Any) -> CaseAllocated:
    """The example allocation of ``case-<case>`` for ``ref-<case>``: to ``team`` (and its
    first worker), or queued when ``team`` is None."""
    fields: dict[str, Any] = {
        "case_id": f"case-{case}",
        "referral_id": f"ref-{case}",
        "team_id": team,
        "worker_id": None if team is None else f"{team}-w1",
        "status": "allocated" if team else "queued",
        "allocated_at": when,
    }
    return example(CaseAllocated, **{**fields, **changes})
