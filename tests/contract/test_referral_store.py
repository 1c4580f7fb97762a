"""What the front door's store promises, held alike by ``InMemoryReferralStore`` and
``MongoReferralStore`` over the real database: each test runs on both."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.referral import domain
from services.referral.domain import FamilyHistory, FamilyRecord, KnownFamilies, referral_id_for
from services.referral.domain.erasure import StoredRejection
from services.referral.domain.partners import PartnerKeyRecord
from services.referral.ports import Accepted, AccessEntry, Decided, ReferralStore, Submissions
from services.referral.store import MongoReferralStore
from shared.events import (
    EventData,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    RejectionReason,
    ScreeningDecision,
)
from tests.contract.conftest import (
    MongoDatabase,
    Published,
    published_by,
    published_from,
)
from tests.factories import MATCH_KEYS
from tests.fakes.referral import InMemoryReferralStore

AT = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
LATER = AT + timedelta(days=1)
FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "referral.json").read_text()
)
PARTNER = FIXTURE["partner_id"]
ELDER, YOUNGER = FIXTURE["children"]
OKAFOR = {**YOUNGER, "family_name": "Okafor"}
"""A child of another family."""


def new_id_for(submission: ReferralSubmitted) -> str:
    """The id a new family gets in these tests (the service draws a random one)."""
    return f"fam-{submission.submission_id}"


@dataclass
class Backend:
    store: ReferralStore
    published: Published


@pytest.fixture
async def backend(database: MongoDatabase | None) -> Backend:
    if database is None:
        fake = InMemoryReferralStore()
        return Backend(fake, published_by(fake))
    store = MongoReferralStore(database.client, database.db, database.outbox)
    await store.ensure_indexes()
    return Backend(store, published_from(database))


def submitted(submission_id: str, **changes: Any) -> ReferralSubmitted:
    return ReferralSubmitted.model_validate({**FIXTURE, "submission_id": submission_id, **changes})


def key_values(submission: ReferralSubmitted) -> set[str]:
    return {key.value for key in domain.family_keys(submission, MATCH_KEYS)}


@dataclass
class Decisions:
    """Decides as the use case does (the family ``match_family`` finds), and remembers
    what each decision saw and gave."""

    seen: list[KnownFamilies] = field(default_factory=list)
    events: list[ReferralReceived] = field(default_factory=list)

    def of(
        self, submission: ReferralSubmitted, *, now: datetime = AT
    ) -> Callable[[KnownFamilies], Decided]:
        def decide(known: KnownFamilies) -> Decided:
            self.seen.append(known)
            match = domain.match_family(
                domain.family_keys(submission, MATCH_KEYS),
                known,
                new_family_id=new_id_for(submission),
            )
            history = known.histories.get(match.family_id)
            event = ReferralReceived(
                referral_id=referral_id_for(submission.partner_id, submission.submission_id),
                family_id=match.family_id,
                partner_id=submission.partner_id,
                submission_id=submission.submission_id,
                route=submission.route,
                referral_source="2A",
                district="northvale",
                level_of_need=submission.level_of_need,
                decision=ScreeningDecision.EARLY_HELP,
                needs=submission.needs,
                child_count=len(submission.children),
                social_care_case_reference="SC-2026-77",
                is_re_referral=domain.is_re_referral(history, now),
                received_at=now,
                child_ages=[9, 6][: len(submission.children)],
                family_match=match.rule,
                family_has_open_case=bool(history and history.open_cases),
                screening_reason="level 2",
            )
            self.events.append(event)
            return Decided(
                event=event, match=match, keys=domain.family_keys(submission, MATCH_KEYS)
            )

        return decide


async def accept(
    store: Submissions,
    submission: ReferralSubmitted,
    decisions: Decisions,
    *,
    now: datetime = AT,
    correlation_id: str = "corr-1",
) -> Accepted:
    return await store.accept(
        submission,
        domain.family_keys(submission, MATCH_KEYS),
        decisions.of(submission, now=now),
        correlation_id=correlation_id,
        now=now,
    )


def stored_referral(
    event: ReferralReceived, *, matched: bool, correlation_id: str
) -> dict[str, Any]:
    return {
        "_id": event.referral_id,
        **event.model_dump(mode="json"),
        "received_at": event.received_at,
        "matched_existing_family": matched,
        "possible_other_families": [],
        "correlation_id": correlation_id,
    }


def rejected(rejection_id: str, *, partner_id: str | None = PARTNER) -> ReferralRejected:
    return ReferralRejected(
        rejection_id=rejection_id,
        partner_id=partner_id,
        submission_id="s-9" if partner_id else None,
        route="school",
        reasons=[RejectionReason(field="referrer", code="missing", message="required")],
        received_at=AT,
    )


async def family(store: ReferralStore, family_id: str) -> FamilyRecord | None:
    async with store.unit_of_work() as uow:
        return await uow.families.get(family_id)


# ---------------------------------------------------------------------------------------------
# Accepting


async def test_an_unknown_submission_has_no_earlier_answer(backend: Backend) -> None:
    assert await backend.store.find_accepted(PARTNER, "s-1") is None


async def test_a_new_family_is_stored_with_its_keys_its_referral_and_its_event(
    backend: Backend,
) -> None:
    store, decisions, submission = backend.store, Decisions(), submitted("s-1")

    accepted = await accept(store, submission, decisions)

    [event] = decisions.events
    family_id = new_id_for(submission)
    referral_id = referral_id_for(PARTNER, "s-1")
    assert decisions.seen == [KnownFamilies()]
    assert accepted == Accepted(
        referral_id=referral_id,
        family_id=family_id,
        district="northvale",
        decision="early_help",
        family_match="new_family",
        screening_reason="level 2",
    )
    assert await store.find_accepted(PARTNER, "s-1") == replace(accepted, duplicate=True)
    assert await backend.published() == [(f"{referral_id}.received", event)]
    async with store.unit_of_work() as uow:
        assert await uow.families.get(family_id) == FamilyRecord(
            family_id, "northvale", last_referral_at=AT
        )
        assert await uow.families.key_values(family_id) == key_values(submission)
        assert await uow.referrals.get(referral_id) == stored_referral(
            event, matched=False, correlation_id="corr-1"
        )
        assert await uow.referrals.submissions_of(family_id) == [(PARTNER, "s-1")]


async def test_a_repeat_request_for_the_children_joins_their_family(backend: Backend) -> None:
    store, decisions = backend.store, Decisions()
    first = await accept(store, submitted("s-1"), decisions)

    again = await accept(store, submitted("s-2"), decisions, now=LATER, correlation_id="corr-2")

    assert decisions.seen[1] == KnownFamilies(
        by_key=dict.fromkeys(key_values(submitted("s-2")), first.family_id),
        histories={first.family_id: FamilyHistory(first.family_id)},
    )
    assert (again.family_id, again.family_match, again.duplicate) == (
        first.family_id,
        "upn",
        False,
    )
    async with store.unit_of_work() as uow:
        record = await uow.families.get(first.family_id)
        referral = await uow.referrals.get(again.referral_id)
        submissions = await uow.referrals.submissions_of(first.family_id)
    assert record == FamilyRecord(first.family_id, "northvale", last_referral_at=LATER)
    assert referral == stored_referral(decisions.events[1], matched=True, correlation_id="corr-2")
    assert sorted(submissions) == [(PARTNER, "s-1"), (PARTNER, "s-2")]


async def test_a_sibling_s_request_joins_the_family_and_brings_its_new_keys(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()
    first = await accept(store, submitted("s-1", children=[YOUNGER]), decisions)
    both = submitted("s-2")

    sibling = await accept(store, both, decisions)

    assert (sibling.family_id, sibling.family_match) == (first.family_id, "surname_dob_postcode")
    async with store.unit_of_work() as uow:
        assert await uow.families.key_values(first.family_id) == key_values(both)


async def test_a_submission_accepted_before_gives_its_first_answer_and_no_second_event(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()
    first = await accept(store, submitted("s-1"), decisions)
    changed = submitted("s-1", children=[YOUNGER], level_of_need=4)

    again = await accept(store, changed, decisions, now=LATER, correlation_id="corr-2")

    assert again == replace(first, duplicate=True)
    assert await backend.published() == [(f"{first.referral_id}.received", decisions.events[0])]
    async with store.unit_of_work() as uow:
        assert await uow.referrals.get(first.referral_id) == stored_referral(
            decisions.events[0], matched=False, correlation_id="corr-1"
        )


async def test_a_decision_that_fails_stores_nothing(backend: Backend) -> None:
    store = backend.store
    submission = submitted("s-1")

    def refuse(known: KnownFamilies) -> Decided:
        raise LookupError("no decision")

    with pytest.raises(LookupError):
        await store.accept(
            submission,
            domain.family_keys(submission, MATCH_KEYS),
            refuse,
            correlation_id="c",
            now=AT,
        )

    assert await store.find_accepted(PARTNER, "s-1") is None
    assert await family(store, new_id_for(submission)) is None
    assert await backend.published() == []


# ---------------------------------------------------------------------------------------------
# Rejecting


async def test_a_rejection_is_stored_with_its_event_and_kept_first_when_repeated(
    backend: Backend,
) -> None:
    store = backend.store
    event = rejected("rej-1")
    document = {
        "submission_json": json.dumps({"partner_id": PARTNER}),
        "submission_truncated": False,
    }

    await store.reject(document, event, correlation_id="corr-1")
    await store.reject({"submission_json": "[]"}, replace_event(event), correlation_id="corr-2")

    assert await backend.published() == [("rej-1.rejected", event)]
    async with store.unit_of_work() as uow:
        assert await uow.rejections.get("rej-1") == {
            "_id": "rej-1",
            **document,
            **event.model_dump(mode="json"),
            "received_at": AT,
            "correlation_id": "corr-1",
        }
        assert await uow.rejections.get("rej-2") is None


def replace_event(event: ReferralRejected) -> ReferralRejected:
    return event.model_copy(update={"route": "gp", "received_at": LATER})


# ---------------------------------------------------------------------------------------------
# Batches


async def test_a_later_submission_in_a_batch_matches_the_family_an_earlier_one_created(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()
    elder_only, younger_too = submitted("s-1", children=[ELDER]), submitted("s-2")

    async def work(batch: Submissions) -> tuple[Accepted, Accepted, list[tuple[str, EventData]]]:
        first = await accept(batch, elder_only, decisions)
        second = await accept(batch, younger_too, decisions)
        return first, second, await backend.published()

    first, second, inside = await store.in_batch([], work)

    assert inside == []
    assert decisions.seen[1] == KnownFamilies(
        by_key=dict.fromkeys(key_values(elder_only), first.family_id),
        histories={first.family_id: FamilyHistory(first.family_id)},
    )
    assert (second.family_id, second.family_match) == (first.family_id, "upn")
    assert await backend.published() == [
        (f"{first.referral_id}.received", decisions.events[0]),
        (f"{second.referral_id}.received", decisions.events[1]),
    ]
    async with store.unit_of_work() as uow:
        assert await uow.families.key_values(first.family_id) == key_values(younger_too)


async def test_a_resend_in_a_batch_finds_the_referral_accepted_before_it(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()

    async def work(batch: Submissions) -> tuple[Accepted, Accepted | None, Accepted | None]:
        accepted = await accept(batch, submitted("s-1"), decisions)
        outside = await store.find_accepted(PARTNER, "s-1")
        return accepted, await batch.find_accepted(PARTNER, "s-1"), outside

    accepted, resent, outside = await store.in_batch([], work)

    assert resent == replace(accepted, duplicate=True)
    assert outside is None
    assert await store.find_accepted(PARTNER, "s-1") == resent


async def test_a_batch_that_fails_keeps_nothing(backend: Backend) -> None:
    store, decisions = backend.store, Decisions()

    async def work(batch: Submissions) -> None:
        await accept(batch, submitted("s-1"), decisions)
        await batch.reject({}, rejected("rej-1"), correlation_id="c")
        raise LookupError("the batch fails")

    with pytest.raises(LookupError):
        await store.in_batch([], work)

    assert await store.find_accepted(PARTNER, "s-1") is None
    assert await family(store, new_id_for(submitted("s-1"))) is None
    assert await backend.published() == []
    async with store.unit_of_work() as uow:
        assert await uow.rejections.get("rej-1") is None


# ---------------------------------------------------------------------------------------------
# Cases, learnt from case-allocated and case-closed


async def a_family(store: ReferralStore, submission_id: str = "s-1", **changes: Any) -> str:
    return (await accept(store, submitted(submission_id, **changes), Decisions())).family_id


async def test_open_cases_are_kept_once_each_in_order(backend: Backend) -> None:
    store = backend.store
    family_id = await a_family(store)

    await store.note_cases_open([(family_id, "case-1"), (family_id, "case-2")])
    await store.note_cases_open([(family_id, "case-1")])

    record = await family(store, family_id)
    assert record is not None
    assert record.open_cases == ("case-1", "case-2")


async def test_a_closed_case_is_no_longer_open_and_sets_the_last_closure(
    backend: Backend,
) -> None:
    store = backend.store
    family_id = await a_family(store)
    await store.note_cases_open([(family_id, "case-1"), (family_id, "case-2")])

    await store.note_cases_closed([(family_id, "case-1", LATER)])

    assert await family(store, family_id) == FamilyRecord(
        family_id,
        "northvale",
        open_cases=("case-2",),
        last_closed_at=LATER,
        last_referral_at=AT,
    )


async def test_a_case_closed_before_it_was_noted_open_stays_closed(backend: Backend) -> None:
    store = backend.store
    family_id = await a_family(store)

    await store.note_cases_closed([(family_id, "case-1", LATER)])
    await store.note_cases_open([(family_id, "case-1"), (family_id, "case-2")])

    record = await family(store, family_id)
    assert record is not None
    assert (record.open_cases, record.last_closed_at) == (("case-2",), LATER)


async def test_closures_together_keep_each_family_s_latest_closure(backend: Backend) -> None:
    store = backend.store
    first = await a_family(store)
    other = await a_family(store, "s-2", children=[OKAFOR])
    await store.note_cases_open([(first, "case-1"), (first, "case-2"), (other, "case-3")])

    await store.note_cases_closed(
        [(first, "case-2", LATER), (first, "case-1", AT), (other, "case-3", AT)]
    )

    records = [await family(store, family_id) for family_id in (first, other)]
    assert [(r.open_cases, r.last_closed_at) for r in records if r is not None] == [
        ((), LATER),
        ((), AT),
    ]


async def test_a_case_of_an_unknown_family_is_logged_and_no_family_made(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.store

    with caplog.at_level(logging.WARNING):
        await store.note_cases_closed([("fam-unknown", "case-1", AT)])
        await store.note_cases_open([("fam-unknown", "case-1")])

    assert await family(store, "fam-unknown") is None
    assert [record.getMessage() for record in caplog.records] == [
        "case case-1 closed for family fam-unknown, unknown here"
    ]


async def test_a_family_s_open_case_and_last_closure_reach_the_next_decision(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()
    family_id = await a_family(store)
    await store.note_cases_open([(family_id, "case-1"), (family_id, "case-2")])
    await store.note_cases_closed([(family_id, "case-1", LATER)])

    await accept(store, submitted("s-2"), decisions, now=LATER)

    assert decisions.seen[0].histories == {
        family_id: FamilyHistory(family_id, open_cases=("case-2",), last_closed_at=LATER)
    }


# ---------------------------------------------------------------------------------------------
# Partner keys


def partner_key(key_id: str, *, created_at: datetime = AT) -> PartnerKeyRecord:
    return PartnerKeyRecord(
        key_id=key_id,
        hash=f"hash-{key_id}",
        partner_id=PARTNER,
        routes=("gp", "school"),
        name="MIS",
        created_at=created_at,
        created_by="admin-1",
    )


async def test_a_partner_key_is_found_by_its_hash_once_committed(backend: Backend) -> None:
    store = backend.store
    record = partner_key("pk-1")

    async with store.unit_of_work() as uow:
        await uow.partner_keys.add(record)
        assert await store.partner_keys.by_hash("hash-pk-1") is None
        await uow.commit()

    assert await store.partner_keys.by_hash("hash-pk-1") == record
    assert await store.partner_keys.by_hash("hash-pk-2") is None


async def test_partner_keys_are_listed_newest_issued_first_a_page_at_a_time(
    backend: Backend,
) -> None:
    store = backend.store
    issued = [
        partner_key(f"pk-{number}", created_at=AT + timedelta(minutes=number))
        for number in range(105)
    ]
    async with store.unit_of_work() as uow:
        for record in issued:
            await uow.partner_keys.add(record)
        await uow.commit()

    pages: list[list[PartnerKeyRecord]] = []
    before: int | None = None
    while not pages or before is not None:
        async with store.unit_of_work() as uow:
            page, before = await uow.partner_keys.page(40, before=before)
        pages.append(page)

    assert [len(page) for page in pages] == [40, 40, 25]
    assert [record for page in pages for record in page] == issued[::-1]


async def test_revoking_a_key_keeps_the_first_revocation(backend: Backend) -> None:
    store = backend.store
    record = partner_key("pk-1")
    revoked = replace(record, revoked_at=LATER, revoked_by="admin-2")
    async with store.unit_of_work() as uow:
        await uow.partner_keys.add(record)
        await uow.commit()

    async with store.unit_of_work() as uow:
        first = await uow.partner_keys.revoke("pk-1", by="admin-2", now=LATER)
        again = await uow.partner_keys.revoke("pk-1", by="admin-3", now=LATER + timedelta(1))
        unknown = await uow.partner_keys.revoke("pk-x", by="admin-2", now=LATER)
        await uow.commit()

    assert (first, again, unknown) == (revoked, revoked, None)
    assert await store.partner_keys.by_hash("hash-pk-1") == revoked


# ---------------------------------------------------------------------------------------------
# The access log


def look(minutes: int, sub: str, family_id: str | None) -> AccessEntry:
    return AccessEntry(
        at=AT + timedelta(minutes=minutes),
        sub=sub,
        role="practitioner",
        action="read_referral",
        family_id=family_id,
        resource=f"ref-{minutes}",
        reason="visit planning",
    )


async def every_page(
    store: ReferralStore, family_id: str | None, sub: str | None, limit: int
) -> list[list[AccessEntry]]:
    """Each page of the log, following the cursors to the end."""
    pages: list[list[AccessEntry]] = []
    before: int | None = None
    while True:
        async with store.unit_of_work() as uow:
            page, before = await uow.access_log.find(family_id, sub, limit, before=before)
        pages.append(page)
        if before is None:
            return pages


async def test_the_access_log_gives_the_newest_first_by_family_and_member_of_staff(
    backend: Backend,
) -> None:
    store = backend.store
    entries = [
        look(0, "pat", "fam-2"),
        look(1, "sam", None),
        look(2, "pat", "fam-1"),
        look(3, "sam", "fam-1"),
    ]
    async with store.unit_of_work() as uow:
        for entry in entries:
            await uow.access_log.record(entry)
        await uow.commit()

    async with store.unit_of_work() as uow:
        everything, _ = await uow.access_log.find(None, None, 10)
        newest, _ = await uow.access_log.find(None, None, 2)
        of_family, _ = await uow.access_log.find("fam-1", None, 10)
        of_staff, _ = await uow.access_log.find(None, "pat", 10)
        of_both, _ = await uow.access_log.find("fam-1", "pat", 10)

    assert [entry.resource for entry in everything] == ["ref-3", "ref-2", "ref-1", "ref-0"]
    assert newest == [entries[3], entries[2]]
    assert of_family == [entries[3], entries[2]]
    assert of_staff == [entries[2], entries[0]]
    assert of_both == [entries[2]]


async def test_the_access_log_comes_a_page_at_a_time_across_its_buckets(
    backend: Backend,
) -> None:
    store = backend.store
    entries = [
        look(minute, ("pat", "sam", "kim")[minute % 3], f"fam-{minute % 2}")
        for minute in range(230)
    ]
    async with store.unit_of_work() as uow:
        for entry in entries:
            await uow.access_log.record(entry)
        await uow.commit()

    pages = await every_page(store, None, None, 40)
    of_sam = await every_page(store, None, "sam", 25)
    of_family = await every_page(store, "fam-1", None, 30)

    assert [len(page) for page in pages] == [40] * 5 + [30]
    assert [entry for page in pages for entry in page] == entries[::-1]
    assert [entry for page in of_sam for entry in page] == [
        entry for entry in entries[::-1] if entry.sub == "sam"
    ]
    assert all(len(page) <= 25 for page in of_sam)
    assert [entry for page in of_family for entry in page] == [
        entry for entry in entries[::-1] if entry.family_id == "fam-1"
    ]
    assert [len(page) for page in of_family] == [30, 30, 30, 25]


# ---------------------------------------------------------------------------------------------
# Erasure and retention


async def test_an_unknown_referral_rejection_or_family_is_none(backend: Backend) -> None:
    async with backend.store.unit_of_work() as uow:
        assert await uow.referrals.get("ref-x") is None
        assert await uow.referrals.submissions_of("fam-x") == []
        assert await uow.rejections.get("rej-x") is None
        assert await uow.rejections.unerased() == []
        assert await uow.families.get("fam-x") is None
        assert await uow.families.key_values("fam-x") == set()
        assert await uow.families.erase("fam-x", by="a", reason="r", now=AT) == 0


async def test_erasing_a_family_s_referrals_removes_their_personal_fields_only(
    backend: Backend,
) -> None:
    store, decisions = backend.store, Decisions()
    mine = await accept(store, submitted("s-1"), decisions)
    other = await accept(store, submitted("s-2", children=[OKAFOR]), decisions)

    async with store.unit_of_work() as uow:
        await uow.referrals.erase_personal_data(mine.family_id, now=LATER)
        await uow.commit()

    async with store.unit_of_work() as uow:
        erased = await uow.referrals.get(mine.referral_id)
        kept = await uow.referrals.get(other.referral_id)
    expected = stored_referral(decisions.events[0], matched=False, correlation_id="corr-1")
    del expected["social_care_case_reference"]
    assert erased == {**expected, "personal_data_erased_at": LATER}
    assert kept == stored_referral(decisions.events[1], matched=False, correlation_id="corr-1")


async def test_erasing_rejections_removes_their_stored_submission_and_keeps_the_reasons(
    backend: Backend,
) -> None:
    store = backend.store
    submission = {"partner_id": PARTNER, "children": [ELDER]}
    await store.reject(
        {"submission_json": json.dumps(submission)}, rejected("rej-1"), correlation_id="c"
    )
    await store.reject(
        {"raw_base64": "eyE=", "raw_text": "{!", "raw_size": 2},
        rejected("rej-2", partner_id=None),
        correlation_id="c",
    )
    await store.reject({"submission_json": "{not json"}, rejected("rej-3"), correlation_id="c")

    async with store.unit_of_work() as uow:
        unerased = await uow.rejections.unerased()
        await uow.rejections.erase_personal_data(["rej-1", "rej-2", "rej-x"], now=LATER)
        await uow.commit()

    assert sorted(unerased, key=lambda rejection: rejection.rejection_id) == [
        StoredRejection("rej-1", PARTNER, "s-9", submission),
        StoredRejection("rej-2", None, None, None),
        StoredRejection("rej-3", PARTNER, "s-9", None),
    ]
    async with store.unit_of_work() as uow:
        assert [rejection.rejection_id for rejection in await uow.rejections.unerased()] == [
            "rej-3"
        ]
        assert await uow.rejections.get("rej-2") == {
            "_id": "rej-2",
            "raw_size": 2,
            **rejected("rej-2", partner_id=None).model_dump(mode="json"),
            "received_at": AT,
            "correlation_id": "c",
            "personal_data_erased_at": LATER,
        }


async def test_erasing_a_family_forgets_its_keys_and_marks_it_erased(backend: Backend) -> None:
    store = backend.store
    mine = await a_family(store)
    other = await a_family(store, "s-2", children=[OKAFOR])

    async with store.unit_of_work() as uow:
        removed = await uow.families.erase(mine, by="admin-1", reason="ICO 7", now=LATER)
        await uow.commit()

    assert removed == 3
    async with store.unit_of_work() as uow:
        assert await uow.families.key_values(mine) == set()
        assert await uow.families.key_values(other) == key_values(
            submitted("s-2", children=[OKAFOR])
        )
        assert await uow.families.get(mine) == FamilyRecord(
            mine, "northvale", last_referral_at=AT, personal_data_erased_at=LATER
        )


async def test_families_closed_by_a_cutoff_are_those_closed_then_and_not_erased(
    backend: Backend,
) -> None:
    store = backend.store
    families = [
        await a_family(store, f"s-{name}", children=[{**YOUNGER, "family_name": name}])
        for name in ("Early", "Exact", "Late", "Open", "Erased")
    ]
    early, exact, late, _, erased = families
    await store.note_cases_closed(
        [
            (early, "c-1", AT - timedelta(days=1)),
            (exact, "c-2", AT),
            (late, "c-3", LATER),
            (erased, "c-5", AT),
        ]
    )
    async with store.unit_of_work() as uow:
        await uow.families.erase(erased, by="a", reason="r", now=AT)
        await uow.commit()

    async with store.unit_of_work() as uow:
        closed = await uow.families.closed_by(AT)

    assert sorted((record.family_id, record.last_closed_at) for record in closed) == sorted(
        [(early, AT - timedelta(days=1)), (exact, AT)]
    )


# ---------------------------------------------------------------------------------------------
# The unit of work


async def test_leaving_a_unit_of_work_without_commit_keeps_nothing(backend: Backend) -> None:
    store = backend.store
    family_id = await a_family(store)
    referral_id = referral_id_for(PARTNER, "s-1")
    before = await family(store, family_id)

    async with store.unit_of_work() as uow:
        await uow.partner_keys.add(partner_key("pk-1"))
        await uow.access_log.record(look(0, "pat", family_id))
        await uow.referrals.erase_personal_data(family_id, now=LATER)
        assert await uow.families.erase(family_id, by="a", reason="r", now=LATER) == 3

    async with store.unit_of_work() as uow:
        assert await uow.partner_keys.page(10) == ([], None)
        assert await uow.access_log.find(None, None, 10) == ([], None)
        assert await uow.families.key_values(family_id) == key_values(submitted("s-1"))
        referral = await uow.referrals.get(referral_id)
    assert await family(store, family_id) == before
    assert referral is not None
    assert "personal_data_erased_at" not in referral


async def test_a_commit_keeps_what_another_committed_on_other_records_meanwhile(
    backend: Backend,
) -> None:
    store = backend.store

    async with store.unit_of_work() as uow:
        await uow.access_log.record(look(0, "pat", None))
        family_id = await a_family(store)
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert await uow.access_log.find(None, None, 10) == ([look(0, "pat", None)], None)
        assert await uow.families.key_values(family_id) == key_values(submitted("s-1"))
