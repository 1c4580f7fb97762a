"""The front door's use cases against an in-memory store."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.referral.domain import referral_id_for
from services.referral.handlers import (
    FrontDoor,
    Origin,
    Rejected,
    note_cases_closed,
    note_cases_open,
    receive_submission,
    receive_unreadable,
    rejection_id_for,
    rejection_id_of_bytes,
)
from services.referral.ports import Accepted
from shared.events import (
    FamilyMatchRule,
    HeadlineOutcome,
    LevelOfNeed,
    ScreeningDecision,
)
from tests.factories import MATCH_KEYS

# Named here too: the hostile-input tests import the fake from this module.
from tests.fakes.referral import InMemoryReferralStore as InMemoryReferralStore

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 11, 4, 14, 0, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"
ORIGIN = Origin(source="/partners/northvale-primary", event_id="evt-1", correlation_id="corr-1")
SAMPLE = FrontDoor.sample(MATCH_KEYS)


def submission_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


@pytest.fixture
def store() -> InMemoryReferralStore:
    return InMemoryReferralStore()


# ---------------------------------------------------------------------------------------------
# Accepting


async def test_a_valid_submission_is_accepted_with_one_referral_received(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_submission(
        submission_document(), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Accepted)
    assert store.rejected == []
    [event] = store.received
    assert outcome.referral_id == referral_id_for("northvale-primary", "np-2026-0001")
    assert (outcome.family_id, outcome.district, outcome.decision, outcome.duplicate) == (
        event.family_id,
        "northvale",
        "early_help",
        False,
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
    assert [event.correlation_id for event in store.published.staged] == ["corr-1"]
    assert store.state.referrals[event.referral_id]["submission"]["partner_id"] == (
        "northvale-primary"
    )


@pytest.mark.parametrize(
    ("level", "decision"),
    [(1, ScreeningDecision.SIGNPOST), (3, ScreeningDecision.EARLY_HELP), (4, "step_up")],
)
async def test_a_valid_submission_is_screened_by_its_level_of_need(
    store: InMemoryReferralStore, level: int, decision: str
) -> None:
    document = {**submission_document(), "level_of_need": level}

    outcome = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

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

    outcome = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Accepted)
    [event] = store.received
    assert event.is_step_down is True
    assert event.referral_source == "5A"
    assert event.social_care_case_reference == "SC-2026-77"


async def test_the_same_partner_and_submission_twice_gives_one_referral_marked_duplicate(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(
        submission_document(), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    again = Origin(source=ORIGIN.source, event_id="evt-2", correlation_id="corr-2")

    second = await receive_submission(
        submission_document(), origin=again, store=store, now=LATER, front_door=SAMPLE
    )

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
    await receive_submission(
        submission_document(), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    changed = {**submission_document(), "level_of_need": 4}

    second = await receive_submission(
        changed, origin=ORIGIN, store=store, now=LATER, front_door=SAMPLE
    )

    assert isinstance(second, Accepted)
    assert second.duplicate is True
    assert second.decision == "early_help"
    assert len(store.received) == 1


async def test_different_submission_ids_from_one_partner_are_different_referrals(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(
        submission_document(), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    other = {**submission_document(), "submission_id": "np-2026-0002"}

    second = await receive_submission(other, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE)

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

    outcome = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Rejected)
    assert {reason.field for reason in outcome.reasons} == {
        "referrer",
        "children.0.date_of_birth",
    }
    assert outcome.rejection_id == rejection_id_for(document)
    assert store.received == []
    [event] = store.rejected
    assert event.rejection_id == outcome.rejection_id
    assert event.partner_id == "northvale-primary"
    assert event.submission_id == "np-2026-0001"
    assert event.route == "school"
    assert event.reasons == outcome.reasons
    assert event.received_at == NOW
    stored = store.rejections[outcome.rejection_id]
    assert json.loads(stored.document["submission_json"]) == document
    assert stored.correlation_id == "corr-1"


async def test_a_submission_breaking_a_rule_is_rejected_and_stored(
    store: InMemoryReferralStore,
) -> None:
    document = submission_document()
    document["address"]["postcode"] = "SW1A 2AA"
    document["consent"] = {"given": False}

    outcome = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Rejected)
    assert [reason.code for reason in outcome.reasons] == ["outside_area", "no_consent"]
    assert store.received == []
    assert [event.partner_id for event in store.rejected] == ["northvale-primary"]
    assert store.state.referrals == {}


async def test_a_rejected_submission_without_readable_ids_is_stored_without_them(
    store: InMemoryReferralStore,
) -> None:
    document = {"partner_id": 42, "submission_id": "", "route": ["school"]}

    outcome = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Rejected)
    [event] = store.rejected
    assert event.partner_id is None
    assert event.submission_id is None
    assert event.route is None


async def test_a_document_that_is_not_an_object_is_rejected_and_stored(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_submission(
        ["a", "list"], origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    assert isinstance(outcome, Rejected)
    [event] = store.rejected
    assert event.partner_id is None
    assert store.rejections[outcome.rejection_id].document == {
        "submission_json": '["a", "list"]',
        "submission_truncated": False,
    }


async def test_unreadable_bytes_are_stored_as_a_rejection_with_code_unreadable(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_unreadable(
        b"\xff{not json", "not JSON: Expecting value", origin=ORIGIN, store=store, now=NOW
    )

    assert outcome.rejection_id == rejection_id_of_bytes(b"\xff{not json")
    assert [(reason.field, reason.code) for reason in outcome.reasons] == [("", "unreadable")]
    assert outcome.reasons[0].message == "not JSON: Expecting value"
    [event] = store.rejected
    assert event.reasons == outcome.reasons
    assert event.partner_id is None
    assert event.submission_id is None
    assert event.received_at == NOW
    stored = store.rejections[outcome.rejection_id].document
    assert base64.b64decode(stored["raw_base64"]) == b"\xff{not json"
    assert stored["raw_text"].endswith("{not json")
    assert store.received == []


async def test_unreadable_bytes_are_kept_whole_with_a_readable_excerpt(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_unreadable(
        b"x" * 50_000, "too big", origin=ORIGIN, store=store, now=NOW
    )

    stored = store.rejections[outcome.rejection_id].document
    assert base64.b64decode(stored["raw_base64"]) == b"x" * 50_000
    assert len(stored["raw_text"]) == 20_000


async def test_the_same_bad_request_resent_is_answered_with_its_first_rejection(
    store: InMemoryReferralStore,
) -> None:
    document = submission_document()
    del document["referrer"]
    resent = Origin(source=ORIGIN.source, event_id="evt-resent", correlation_id="other")

    first = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    second = await receive_submission(
        copy.deepcopy(document), origin=resent, store=store, now=LATER, front_door=SAMPLE
    )
    unreadable = [
        await receive_unreadable(b"?", "bad", origin=origin, store=store, now=NOW)
        for origin in (ORIGIN, resent)
    ]

    assert isinstance(first, Rejected)
    assert isinstance(second, Rejected)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.rejection_id == first.rejection_id
    assert [outcome.duplicate for outcome in unreadable] == [False, True]
    assert unreadable[0].rejection_id == unreadable[1].rejection_id != first.rejection_id
    assert len(store.rejections) == 2
    assert [event.rejection_id for event in store.rejected] == [
        first.rejection_id,
        unreadable[0].rejection_id,
    ]


async def test_a_resend_wrong_in_a_new_way_is_answered_anew(
    store: InMemoryReferralStore,
) -> None:
    document = submission_document()
    del document["referrer"]
    worse = copy.deepcopy(document)
    worse["children"][0]["date_of_birth"] = "not a date"

    first = await receive_submission(
        document, origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    second = await receive_submission(
        worse, origin=ORIGIN, store=store, now=LATER, front_door=SAMPLE
    )

    assert isinstance(first, Rejected)
    assert isinstance(second, Rejected)
    assert second.rejection_id != first.rejection_id
    assert not second.duplicate
    assert {reason.field for reason in second.reasons} == {"referrer", "children.0.date_of_birth"}
    assert len(store.rejected) == 2


@pytest.mark.parametrize(
    "change",
    [{"partner_id": "eastmere-gp"}, {"submission_id": "np-2026-0002"}, {"route": "health"}],
    ids=["other-partner", "other-submission", "other-content"],
)
def test_rejection_ids_differ_for_another_request(change: dict[str, str]) -> None:
    document = submission_document()

    assert rejection_id_for(document | change) != rejection_id_for(document)
    assert rejection_id_for(copy.deepcopy(document)) == rejection_id_for(document)


def test_referral_ids_are_deterministic_per_partner_and_submission() -> None:
    assert referral_id_for("p", "s") == referral_id_for("p", "s")
    assert referral_id_for("p", "s").startswith("ref-")
    assert referral_id_for("p", "s") != referral_id_for("p", "t")
    assert referral_id_for("p", "s") != referral_id_for("q", "s")
    assert referral_id_for("ab", "c") != referral_id_for("a", "bc")


# ---------------------------------------------------------------------------------------------
# Matching, case history and screening on the event


def child_request(submission_id: str, **changes: Any) -> dict[str, Any]:
    return {**submission_document(), "submission_id": submission_id, **changes}


async def test_a_second_request_for_a_sibling_joins_the_first_family(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(
        child_request("s-1"), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    sibling_only = child_request("s-2", children=[submission_document()["children"][1]])

    second = await receive_submission(
        sibling_only, origin=ORIGIN, store=store, now=LATER, front_door=SAMPLE
    )

    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert second.family_id == first.family_id
    assert [event.family_match for event in store.received] == [
        FamilyMatchRule.NEW_FAMILY,
        FamilyMatchRule.SURNAME_DOB_POSTCODE,
    ]


async def test_an_open_case_is_flagged_and_a_closure_within_a_year_makes_a_re_referral(
    store: InMemoryReferralStore,
) -> None:
    first = await receive_submission(
        child_request("s-1"), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )
    assert isinstance(first, Accepted)
    await note_cases_open([(first.family_id, "case-1")], store=store)

    while_open = await receive_submission(
        child_request("s-2"), origin=ORIGIN, store=store, now=LATER, front_door=SAMPLE
    )
    await note_cases_closed([(first.family_id, "case-1", LATER)], store=store)
    after_closure = await receive_submission(
        child_request("s-3"),
        origin=ORIGIN,
        store=store,
        now=datetime(2027, 6, 1, tzinfo=UTC),
        front_door=SAMPLE,
    )
    a_year_on = await receive_submission(
        child_request("s-4"),
        origin=ORIGIN,
        store=store,
        now=datetime(2027, 11, 5, tzinfo=UTC),
        front_door=SAMPLE,
    )

    flags = [(event.family_has_open_case, event.is_re_referral) for event in store.received]
    assert flags == [(False, False), (True, False), (False, True), (False, False)]
    assert isinstance(while_open, Accepted)
    assert while_open.family_has_open_case
    assert isinstance(after_closure, Accepted)
    assert after_closure.is_re_referral
    assert isinstance(a_year_on, Accepted)
    assert not a_year_on.is_re_referral


async def test_a_signposted_request_names_local_services_for_its_needs_ages_and_district(
    store: InMemoryReferralStore,
) -> None:
    outcome = await receive_submission(
        child_request("s-1", level_of_need=1),
        origin=ORIGIN,
        store=store,
        now=NOW,
        front_door=SAMPLE,
    )

    assert isinstance(outcome, Accepted)
    [event] = store.received
    assert event.decision is ScreeningDecision.SIGNPOST
    assert event.signposted_services
    assert list(outcome.signposted_services) == event.signposted_services
    directory = {service.id: service for service in FrontDoor.sample(MATCH_KEYS).directory}
    for service_id in event.signposted_services:
        service = directory[service_id]
        assert "northvale" in service.service_areas
        assert set(service.needs) & {
            HeadlineOutcome.EDUCATION,
            HeadlineOutcome.FAMILY_RELATIONSHIPS,
        }


async def test_early_help_and_step_up_requests_are_not_signposted(
    store: InMemoryReferralStore,
) -> None:
    await receive_submission(
        child_request("s-2", level_of_need=2),
        origin=ORIGIN,
        store=store,
        now=NOW,
        front_door=SAMPLE,
    )
    await receive_submission(
        child_request("s-4", level_of_need=4),
        origin=ORIGIN,
        store=store,
        now=NOW,
        front_door=SAMPLE,
    )

    assert [event.signposted_services for event in store.received] == [[], []]


async def test_a_safeguarding_concern_is_stepped_up_with_the_reason_and_rules_version(
    store: InMemoryReferralStore,
) -> None:
    await receive_submission(
        child_request("s-1", safeguarding_concern=True),
        origin=ORIGIN,
        store=store,
        now=NOW,
        front_door=SAMPLE,
    )

    [event] = store.received
    assert event.decision is ScreeningDecision.STEP_UP
    assert event.safeguarding_concern
    assert event.screening_reason is not None
    assert "safeguarding" in event.screening_reason
    assert event.screening_rules_version == "2026.11"


async def test_the_event_carries_ages_not_names_or_dates_of_birth(
    store: InMemoryReferralStore,
) -> None:
    await receive_submission(
        submission_document(), origin=ORIGIN, store=store, now=NOW, front_door=SAMPLE
    )

    [event] = store.received
    assert event.child_ages == [10, 7]
    wire = event.model_dump_json()
    for personal in ("Amira", "Hassan", "2016-04-12", "A123456789012", "Mill Lane", "WX3 4AB"):
        assert personal not in wire
