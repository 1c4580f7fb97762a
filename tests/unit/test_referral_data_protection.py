"""The front door's data protection use cases over the in-memory store: partner keys,
the access log, erasure and the retention review, each committed whole or not at all."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.referral.domain import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from services.referral.handlers import (
    FrontDoor,
    Origin,
    Rejected,
    access_log,
    erasure,
    partners,
    receive_submission,
    retention,
)
from services.referral.ports import Accepted, AccessEntry
from shared.access_log import Reader
from tests.factories import MATCH_KEYS
from tests.fakes.referral import FamilyState, InMemoryReferralStore, InMemoryReferralUnitOfWork

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"
READER = Reader("pat-1", "practitioner", "visit planning")


@pytest.fixture
def store() -> InMemoryReferralStore:
    return InMemoryReferralStore()


@pytest.fixture
def uow(store: InMemoryReferralStore) -> InMemoryReferralUnitOfWork:
    return store.unit_of_work()


def request(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return {**document, **changes}


async def receive(store: InMemoryReferralStore, document: Any, event_id: str) -> Any:
    origin = Origin(source="/partners/test", event_id=event_id, correlation_id="corr-1")
    return await receive_submission(
        document, origin=origin, store=store, now=NOW, front_door=FrontDoor.sample(MATCH_KEYS)
    )


async def a_family(
    store: InMemoryReferralStore, *, open_cases: tuple[str, ...] = ()
) -> tuple[Accepted, str, str]:
    """A family with one referral and its keys, a rejection of another request for the same
    children (so found only by its keys) and one of a request for no children."""
    accepted = await receive(store, request(submission_id="s-1"), "evt-1")
    same_children = await receive(
        store,
        request(partner_id="another-partner", submission_id="s-9", route="carrier_pigeon"),
        "evt-2",
    )
    no_children = await receive(store, request(children=[], submission_id="s-8"), "evt-3")
    assert isinstance(accepted, Accepted)
    assert isinstance(same_children, Rejected)
    assert isinstance(no_children, Rejected)
    await store.note_cases_open([(accepted.family_id, case_id) for case_id in open_cases])
    return accepted, same_children.rejection_id, no_children.rejection_id


# ---------------------------------------------------------------------------------------------
# Erasure


async def test_erasure_removes_the_family_s_data_and_records_it_in_one_commit(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    accepted, same_children, no_children = await a_family(store)
    family_id = accepted.family_id
    commits = store.version

    erased = await erasure.erase_family(
        uow,
        family_id,
        by="admin-1",
        role="administrator",
        reason="ICO case 7",
        now=NOW,
        match_keys=MATCH_KEYS,
    )

    assert (erased.referrals, erased.rejections, erased.keys) == (1, 1, 3)
    records = store.state
    assert store.version == commits + 1
    assert "submission" not in records.referrals[accepted.referral_id]
    assert "submission_json" not in records.rejections[same_children].document
    assert "submission_json" in records.rejections[no_children].document
    assert records.family_keys == {}
    assert records.families[family_id].erasure == ("admin-1", "ICO case 7")
    assert records.access_log == [
        AccessEntry(
            NOW, "admin-1", "administrator", "erase_family", family_id, family_id, "ICO case 7"
        )
    ]


async def test_erasure_of_a_family_with_an_open_case_is_a_conflict_and_changes_nothing(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    accepted, _, _ = await a_family(store, open_cases=("case-1",))
    before = copy.deepcopy(store.state)

    with pytest.raises(Conflict, match="has an open case: close it before erasing"):
        await erasure.erase_family(
            uow,
            accepted.family_id,
            by="a",
            role="administrator",
            reason="r",
            now=NOW,
            match_keys=MATCH_KEYS,
        )

    assert store.state == before


async def test_erasure_of_an_unknown_family_is_not_found(uow: InMemoryReferralUnitOfWork) -> None:
    with pytest.raises(NotFound, match="no family fam-x"):
        await erasure.erase_family(
            uow, "fam-x", by="a", role="administrator", reason="r", now=NOW, match_keys=MATCH_KEYS
        )


# ---------------------------------------------------------------------------------------------
# Partner keys


async def test_an_issued_key_authenticates_until_it_is_revoked(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    record, key = await partners.issue_key(
        uow, partner_id="p-1", routes=["school", "gp", "school"], name=None, by="adm", now=NOW
    )
    assert record.routes == ("gp", "school")
    assert key not in repr(store.state)  # only its hash is kept

    assert (await partners.authenticate(store.partner_keys, key)).partner_id == "p-1"

    await partners.revoke_key(uow, record.key_id, by="adm", now=NOW)
    with pytest.raises(Unauthenticated, match="revoked") as refused:
        await partners.authenticate(store.partner_keys, key)
    assert (refused.value.partner_id, refused.value.key_id) == ("p-1", record.key_id)


async def test_a_key_for_an_unknown_route_is_invalid_and_none_is_stored(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    with pytest.raises(Invalid, match=r"unknown routes \['carrier_pigeon'\]"):
        await partners.issue_key(
            uow, partner_id="p-1", routes=["carrier_pigeon"], name=None, by="adm", now=NOW
        )
    assert store.state.partner_keys == {}


async def test_revoking_an_unknown_key_is_not_found(uow: InMemoryReferralUnitOfWork) -> None:
    with pytest.raises(NotFound, match="no partner key pk-x"):
        await partners.revoke_key(uow, "pk-x", by="adm", now=NOW)


async def test_a_missing_or_unknown_key_is_unauthenticated(store: InMemoryReferralStore) -> None:
    with pytest.raises(Unauthenticated, match="send your partner key"):
        await partners.authenticate(store.partner_keys, None)
    with pytest.raises(Unauthenticated, match="unknown partner key"):
        await partners.authenticate(store.partner_keys, "ehpk_guess")


async def test_a_key_may_not_submit_for_another_partner(uow: InMemoryReferralUnitOfWork) -> None:
    record, _ = await partners.issue_key(
        uow, partner_id="p-1", routes=["school"], name=None, by="adm", now=NOW
    )
    with pytest.raises(Forbidden, match="belongs to partner 'p-1'"):
        partners.authorise(record.key, {"partner_id": "p-2", "route": "school"})
    partners.authorise(record.key, {"partner_id": "p-1", "route": "school"})


# ---------------------------------------------------------------------------------------------
# The access log


async def test_a_look_at_a_referral_is_recorded_with_the_data_it_returns(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    accepted, _, _ = await a_family(store)
    family_id, referral_id = accepted.family_id, accepted.referral_id

    found = await access_log.read_referral(uow, referral_id, reader=READER, now=NOW)

    assert (found["_id"], found["family_id"]) == (referral_id, family_id)
    assert "submission" not in found
    assert await access_log.access_log(uow, family_id=family_id, sub=None, limit=10) == (
        [
            AccessEntry(
                NOW,
                "pat-1",
                "practitioner",
                "read_referral",
                family_id,
                referral_id,
                "visit planning",
            )
        ],
        None,
    )


async def test_a_look_at_nothing_is_not_found_and_not_recorded(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    with pytest.raises(NotFound, match="no rejection rej-x"):
        await access_log.read_rejection(uow, "rej-x", reader=READER, now=NOW)
    assert store.state.access_log == []


# ---------------------------------------------------------------------------------------------
# Retention


def closed_family(
    family_id: str, district: str | None, closed: datetime, asked: datetime | None = None
) -> FamilyState:
    return FamilyState(
        family_id,
        district,
        created_at=datetime(2016, 1, 1, tzinfo=UTC),
        last_referral_at=asked,
        last_closed_at=closed,
    )


async def test_the_review_lists_closed_families_past_retention_longest_closed_first(
    store: InMemoryReferralStore, uow: InMemoryReferralUnitOfWork
) -> None:
    for family in (
        closed_family("old", "eastmere", datetime(2018, 1, 5, tzinfo=UTC)),
        closed_family("older", None, datetime(2017, 3, 1, tzinfo=UTC)),
        closed_family("recent", None, datetime(2024, 1, 1, tzinfo=UTC)),
        closed_family(
            "asked_again",
            None,
            datetime(2017, 1, 1, tzinfo=UTC),
            asked=datetime(2025, 1, 1, tzinfo=UTC),
        ),
    ):
        store.state.families[family.family_id] = family

    due = await retention.review(uow, now=NOW, years=6)

    assert [family.family_id for family in due] == ["older", "old"]
    assert due[1].review_due_since == datetime(2024, 1, 5, tzinfo=UTC)
