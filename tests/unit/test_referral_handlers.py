"""The front door's use cases against an in-memory store."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.referral.handlers import (
    Accepted,
    Origin,
    Rejected,
    receive_submission,
    receive_unreadable,
    referral_id_for,
    rejection_id_for,
)
from services.referral.ports import ReferralStore
from shared.events import (
    HeadlineOutcome,
    LevelOfNeed,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    ScreeningDecision,
)

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 11, 4, 14, 0, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"
ORIGIN = Origin(source="/partners/northvale-primary", event_id="evt-1", correlation_id="corr-1")


def submission_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


@dataclass(frozen=True)
class StoredRejection:
    document: dict[str, Any]
    event: ReferralRejected
    correlation_id: str


class InMemoryReferralStore:
    """The ReferralStore port over dicts, recording every event it stages."""

    def __init__(self) -> None:
        self.referrals: dict[tuple[str, str], Accepted] = {}
        self.submissions: dict[str, ReferralSubmitted] = {}
        self.rejections: dict[str, StoredRejection] = {}
        self.received: list[ReferralReceived] = []
        self.rejected: list[ReferralRejected] = []
        self.correlation_ids: list[str] = []

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        found = self.referrals.get((partner_id, submission_id))
        return None if found is None else replace(found, duplicate=True)

    async def accept(
        self, submission: ReferralSubmitted, event: ReferralReceived, *, correlation_id: str
    ) -> Accepted:
        key = (event.partner_id, event.submission_id)
        if key in self.referrals:
            return replace(self.referrals[key], duplicate=True)
        accepted = Accepted(
            referral_id=event.referral_id,
            family_id=event.family_id,
            district=event.district,
            decision=event.decision.value,
        )
        self.referrals[key] = accepted
        self.submissions[event.referral_id] = submission
        self.received.append(event)
        self.correlation_ids.append(correlation_id)
        return accepted

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> None:
        self.rejections.setdefault(
            event.rejection_id, StoredRejection(document, event, correlation_id)
        )
        self.rejected.append(event)
        self.correlation_ids.append(correlation_id)


@pytest.fixture
def store() -> InMemoryReferralStore:
    return InMemoryReferralStore()


def test_the_in_memory_store_implements_the_referral_store_port() -> None:
    port: ReferralStore = InMemoryReferralStore()

    assert callable(port.find_accepted)


# ---------------------------------------------------------------------------------------------
# Accepting


async def test_a_valid_submission_is_accepted_with_one_referral_received(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_submission(submission_document(), origin=ORIGIN, store=store, now=NOW)

    assert store.rejected == []
    [event] = store.received
    assert outcome == Accepted(
        referral_id=referral_id_for("northvale-primary", "np-2026-0001"),
        family_id=event.family_id,
        district="northvale",
        decision="early_help",
        duplicate=False,
    )
    assert event.referral_id == referral_id_for("northvale-primary", "np-2026-0001")
    assert event.family_id.startswith("fam-")
    assert event.partner_id == "northvale-primary"
    assert event.submission_id == "np-2026-0001"
    assert event.route == "school"
    assert event.referral_source == "2A"
    assert event.district == "northvale"
    assert event.level_of_need is LevelOfNeed.EARLY_HELP_SINGLE_AGENCY
    assert event.decision is ScreeningDecision.EARLY_HELP
    assert event.needs == [HeadlineOutcome.EDUCATION, HeadlineOutcome.FAMILY_RELATIONSHIPS]
    assert event.child_count == 2
    assert event.is_step_down is False
    assert event.open_to_social_care is False
    assert event.received_at == NOW
    assert store.correlation_ids == ["corr-1"]
    assert store.submissions[event.referral_id].partner_id == "northvale-primary"


@pytest.mark.parametrize(
    ("level", "decision"),
    [(1, ScreeningDecision.SIGNPOST), (3, ScreeningDecision.EARLY_HELP), (4, "step_up")],
)
async def test_a_valid_submission_is_screened_by_its_level_of_need(
    store: InMemoryReferralStore, level: int, decision: str
) -> None:
    document = {**submission_document(), "level_of_need": level}

    outcome = await receive_submission(document, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Accepted)
    assert outcome.decision == decision
    assert store.received[0].decision == decision


async def test_a_step_down_is_accepted_marked_with_its_social_care_reference(
    store: InMemoryReferralStore,
) -> None:
    document = {
        **submission_document(),
        "route": "social_care_step_down",
        "social_care_case_reference": "SC-2026-77",
    }

    outcome = await receive_submission(document, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Accepted)
    [event] = store.received
    assert event.is_step_down is True
    assert event.referral_source == "5A"
    assert event.social_care_case_reference == "SC-2026-77"


async def test_the_same_partner_and_submission_twice_gives_one_referral_marked_duplicate(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(submission_document(), origin=ORIGIN, store=store, now=NOW)
    again = Origin(source=ORIGIN.source, event_id="evt-2", correlation_id="corr-2")

    second = await receive_submission(submission_document(), origin=again, store=store, now=LATER)

    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert second.referral_id == first.referral_id
    assert second.family_id == first.family_id
    assert first.duplicate is False
    assert second.duplicate is True
    assert len(store.received) == 1
    assert store.received[0].received_at == NOW


async def test_a_resubmission_with_changed_content_still_answers_with_the_first_referral(
    store: InMemoryReferralStore,
) -> None:
    await receive_submission(submission_document(), origin=ORIGIN, store=store, now=NOW)
    changed = {**submission_document(), "level_of_need": 4}

    second = await receive_submission(changed, origin=ORIGIN, store=store, now=LATER)

    assert isinstance(second, Accepted)
    assert second.duplicate is True
    assert second.decision == "early_help"
    assert len(store.received) == 1


async def test_different_submission_ids_from_one_partner_are_different_referrals(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(submission_document(), origin=ORIGIN, store=store, now=NOW)
    other = {**submission_document(), "submission_id": "np-2026-0002"}

    second = await receive_submission(other, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert second.referral_id != first.referral_id
    assert second.family_id == first.family_id
    assert second.duplicate is False
    assert len(store.received) == 2


# ---------------------------------------------------------------------------------------------
# Rejecting


async def test_an_invalid_submission_is_rejected_with_reasons_and_a_stored_rejection(
    store: InMemoryReferralStore,
) -> None:
    document = submission_document()
    del document["referrer"]
    document["children"][0]["date_of_birth"] = "not a date"

    outcome = await receive_submission(document, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Rejected)
    assert {reason.field for reason in outcome.reasons} == {
        "referrer",
        "children.0.date_of_birth",
    }
    assert outcome.rejection_id == rejection_id_for(ORIGIN)
    assert store.received == []
    [event] = store.rejected
    assert event.rejection_id == outcome.rejection_id
    assert event.partner_id == "northvale-primary"
    assert event.submission_id == "np-2026-0001"
    assert event.route == "school"
    assert event.reasons == outcome.reasons
    assert event.received_at == NOW
    stored = store.rejections[outcome.rejection_id]
    assert stored.document["submission"]["children"][0]["date_of_birth"] == "not a date"
    assert stored.correlation_id == "corr-1"


async def test_a_submission_breaking_a_rule_is_rejected_and_stored(
    store: InMemoryReferralStore,
) -> None:
    document = submission_document()
    document["address"]["postcode"] = "SW1A 2AA"
    document["consent"] = {"given": False}

    outcome = await receive_submission(document, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Rejected)
    assert [reason.code for reason in outcome.reasons] == ["outside_area", "no_consent"]
    assert store.received == []
    assert [event.partner_id for event in store.rejected] == ["northvale-primary"]
    assert store.referrals == {}


async def test_a_rejected_submission_without_readable_ids_is_stored_without_them(
    store: InMemoryReferralStore,
) -> None:
    document = {"partner_id": 42, "submission_id": "", "route": ["school"]}

    outcome = await receive_submission(document, origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Rejected)
    [event] = store.rejected
    assert event.partner_id is None
    assert event.submission_id is None
    assert event.route is None


async def test_a_document_that_is_not_an_object_is_rejected_and_stored(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_submission(["a", "list"], origin=ORIGIN, store=store, now=NOW)

    assert isinstance(outcome, Rejected)
    [event] = store.rejected
    assert event.partner_id is None
    assert store.rejections[outcome.rejection_id].document == {"submission": '["a", "list"]'}


async def test_unreadable_bytes_are_stored_as_a_rejection_with_code_unreadable(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_unreadable(
        b"\xff{not json", "not JSON: Expecting value", origin=ORIGIN, store=store, now=NOW
    )

    assert outcome.rejection_id == rejection_id_for(ORIGIN)
    assert [(reason.field, reason.code) for reason in outcome.reasons] == [("", "unreadable")]
    assert outcome.reasons[0].message == "not JSON: Expecting value"
    [event] = store.rejected
    assert event.reasons == outcome.reasons
    assert event.partner_id is None
    assert event.submission_id is None
    assert event.received_at == NOW
    raw = store.rejections[outcome.rejection_id].document["submission"]["raw"]
    assert raw.endswith("{not json")
    assert store.received == []


async def test_unreadable_bytes_are_stored_cut_to_twenty_thousand_characters(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_unreadable(
        b"x" * 50_000, "too big", origin=ORIGIN, store=store, now=NOW
    )

    stored = store.rejections[outcome.rejection_id].document
    assert len(stored["submission"]["raw"]) == 20_000


async def test_rejection_ids_are_deterministic_for_the_same_origin(
    store: InMemoryReferralStore,
) -> None:
    same = Origin(source=ORIGIN.source, event_id=ORIGIN.event_id, correlation_id="other")

    first = await receive_unreadable(b"?", "bad", origin=ORIGIN, store=store, now=NOW)
    second = await receive_unreadable(b"?", "bad", origin=same, store=store, now=LATER)

    assert rejection_id_for(ORIGIN) == rejection_id_for(same)
    assert first.rejection_id == second.rejection_id == rejection_id_for(ORIGIN)
    assert first.rejection_id.startswith("rej-")
    assert len(store.rejections) == 1


@pytest.mark.parametrize(
    "other",
    [
        Origin(source="/partners/northvale-primary", event_id="evt-2", correlation_id="corr-1"),
        Origin(source="/partners/eastmere-gp", event_id="evt-1", correlation_id="corr-1"),
    ],
    ids=["other-event-id", "other-source"],
)
def test_rejection_ids_differ_for_another_origin(other: Origin) -> None:
    assert rejection_id_for(other) != rejection_id_for(ORIGIN)


def test_referral_ids_are_deterministic_per_partner_and_submission() -> None:
    assert referral_id_for("p", "s") == referral_id_for("p", "s")
    assert referral_id_for("p", "s").startswith("ref-")
    assert referral_id_for("p", "s") != referral_id_for("p", "t")
    assert referral_id_for("p", "s") != referral_id_for("q", "s")
    assert referral_id_for("ab", "c") != referral_id_for("a", "bc")
