"""The front door's data protection use cases over an in-memory unit of work: partner keys,
the access log, erasure and the retention review, each committed whole or not at all."""

from __future__ import annotations

import copy
import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from services.referral.domain import (
    Conflict,
    FamilyRecord,
    Forbidden,
    Invalid,
    NotFound,
    Unauthenticated,
    family_keys,
)
from services.referral.domain.erasure import StoredRejection
from services.referral.domain.partners import PartnerKeyRecord
from services.referral.handlers import access_log, erasure, partners, retention
from services.referral.handlers.access_log import Reader
from services.referral.ports import AccessEntry, ReferralUnitOfWork
from shared.events import ReferralSubmitted

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"
READER = Reader("pat-1", "practitioner", "visit planning")


@dataclass
class Records:
    referrals: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejections: dict[str, dict[str, Any]] = field(default_factory=dict)
    families: dict[str, FamilyRecord] = field(default_factory=dict)
    family_keys: dict[str, str] = field(default_factory=dict)
    erasures: dict[str, tuple[str, str]] = field(default_factory=dict)
    partner_keys: dict[str, PartnerKeyRecord] = field(default_factory=dict)
    access_log: list[AccessEntry] = field(default_factory=list)


class InMemoryReferrals:
    def __init__(self, records: Records) -> None:
        self._records = records

    async def get(self, referral_id: str) -> dict[str, Any] | None:
        found = self._records.referrals.get(referral_id)
        return None if found is None else {k: v for k, v in found.items() if k != "submission"}

    async def submissions_of(self, family_id: str) -> list[tuple[str, str]]:
        return [
            (referral["partner_id"], referral["submission_id"])
            for referral in self._records.referrals.values()
            if referral["family_id"] == family_id
        ]

    async def erase_personal_data(self, family_id: str, *, now: datetime) -> None:
        for referral in self._records.referrals.values():
            if referral["family_id"] == family_id:
                referral.pop("submission", None)
                referral["personal_data_erased_at"] = now


class InMemoryRejections:
    def __init__(self, records: Records) -> None:
        self._records = records

    async def get(self, rejection_id: str) -> dict[str, Any] | None:
        return self._records.rejections.get(rejection_id)

    async def unerased(self) -> list[StoredRejection]:
        return [
            StoredRejection(
                rejection_id,
                rejection.get("partner_id"),
                rejection.get("submission_id"),
                json.loads(rejection["submission_json"])
                if "submission_json" in rejection
                else None,
            )
            for rejection_id, rejection in self._records.rejections.items()
            if rejection.get("personal_data_erased_at") is None
        ]

    async def erase_personal_data(self, rejection_ids: Collection[str], *, now: datetime) -> None:
        for rejection_id in rejection_ids:
            rejection = self._records.rejections[rejection_id]
            rejection.pop("submission_json", None)
            rejection["personal_data_erased_at"] = now


class InMemoryFamilies:
    def __init__(self, records: Records) -> None:
        self._records = records

    async def get(self, family_id: str) -> FamilyRecord | None:
        return self._records.families.get(family_id)

    async def key_values(self, family_id: str) -> set[str]:
        return {key for key, family in self._records.family_keys.items() if family == family_id}

    async def erase(self, family_id: str, *, by: str, reason: str, now: datetime) -> int:
        keys = await self.key_values(family_id)
        for key in keys:
            del self._records.family_keys[key]
        family = self._records.families[family_id]
        self._records.families[family_id] = replace(family, personal_data_erased_at=now)
        self._records.erasures[family_id] = (by, reason)
        return len(keys)

    async def closed_by(self, cutoff: datetime) -> list[FamilyRecord]:
        return [
            family
            for family in self._records.families.values()
            if family.last_closed_at is not None
            and family.last_closed_at <= cutoff
            and family.personal_data_erased_at is None
        ]


class InMemoryPartnerKeys:
    def __init__(self, records: Records) -> None:
        self._records = records

    async def add(self, record: PartnerKeyRecord) -> None:
        self._records.partner_keys[record.key_id] = record

    async def by_hash(self, digest: str) -> PartnerKeyRecord | None:
        found = [key for key in self._records.partner_keys.values() if key.hash == digest]
        return found[0] if found else None

    async def all(self) -> list[PartnerKeyRecord]:
        return sorted(self._records.partner_keys.values(), key=lambda key: key.created_at)

    async def revoke(self, key_id: str, *, by: str, now: datetime) -> PartnerKeyRecord | None:
        found = self._records.partner_keys.get(key_id)
        if found is not None and found.revoked_at is None:
            found = self._records.partner_keys[key_id] = replace(
                found, revoked_at=now, revoked_by=by
            )
        return found


class InMemoryAccessLog:
    def __init__(self, records: Records) -> None:
        self._records = records

    async def record(self, entry: AccessEntry) -> None:
        self._records.access_log.append(entry)

    async def find(self, family_id: str | None, sub: str | None, limit: int) -> list[AccessEntry]:
        found = [
            entry
            for entry in reversed(self._records.access_log)
            if (family_id is None or entry.family_id == family_id)
            and (sub is None or entry.sub == sub)
        ]
        return found[:limit]


class InMemoryUnitOfWork:
    """Works on a copy of ``committed``; ``commit`` makes the copy the committed state."""

    def __init__(self) -> None:
        self.committed = Records()
        self.commits = 0

    async def __aenter__(self) -> Self:
        self._working = copy.deepcopy(self.committed)
        self.referrals = InMemoryReferrals(self._working)
        self.rejections = InMemoryRejections(self._working)
        self.families = InMemoryFamilies(self._working)
        self.partner_keys = InMemoryPartnerKeys(self._working)
        self.access_log = InMemoryAccessLog(self._working)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        del self._working

    async def commit(self) -> None:
        self.committed = self._working
        self.commits += 1


@pytest.fixture
def uow() -> InMemoryUnitOfWork:
    return InMemoryUnitOfWork()


def test_the_in_memory_unit_of_work_implements_the_port() -> None:
    port: ReferralUnitOfWork = InMemoryUnitOfWork()

    assert callable(port.commit)


def request(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return {**document, **changes}


def a_family(uow: InMemoryUnitOfWork, *, open_cases: tuple[str, ...] = ()) -> str:
    """A family with one referral and its keys, and a rejection of another request for the
    same children (so found only by its keys)."""
    document = request(submission_id="s-1")
    records = uow.committed
    records.families["fam-1"] = FamilyRecord("fam-1", "northvale", open_cases=open_cases)
    records.referrals["ref-1"] = {
        "family_id": "fam-1",
        "partner_id": document["partner_id"],
        "submission_id": "s-1",
        "submission": document,
    }
    for key in family_keys(ReferralSubmitted.model_validate(document)):
        records.family_keys[key.value] = "fam-1"
    records.rejections["rej-1"] = {
        "partner_id": "another-partner",
        "submission_id": "s-9",
        "submission_json": json.dumps(request(submission_id="s-9", route="carrier_pigeon")),
    }
    records.rejections["rej-2"] = {
        "submission_json": json.dumps(request(children=[], submission_id="s-8")),
    }
    return "fam-1"


# ---------------------------------------------------------------------------------------------
# Erasure


async def test_erasure_removes_the_family_s_data_and_records_it_in_one_commit(
    uow: InMemoryUnitOfWork,
) -> None:
    family_id = a_family(uow)

    erased = await erasure.erase_family(
        uow, family_id, by="admin-1", role="administrator", reason="ICO case 7", now=NOW
    )

    assert (erased.referrals, erased.rejections, erased.keys) == (1, 1, 3)
    records = uow.committed
    assert uow.commits == 1
    assert "submission" not in records.referrals["ref-1"]
    assert "submission_json" not in records.rejections["rej-1"]
    assert "submission_json" in records.rejections["rej-2"]  # another family's children
    assert records.family_keys == {}
    assert records.erasures == {family_id: ("admin-1", "ICO case 7")}
    assert records.access_log == [
        AccessEntry(
            NOW, "admin-1", "administrator", "erase_family", family_id, family_id, "ICO case 7"
        )
    ]


async def test_erasure_of_a_family_with_an_open_case_is_a_conflict_and_changes_nothing(
    uow: InMemoryUnitOfWork,
) -> None:
    family_id = a_family(uow, open_cases=("case-1",))
    before = copy.deepcopy(uow.committed)

    with pytest.raises(Conflict, match="has an open case: close it before erasing"):
        await erasure.erase_family(
            uow, family_id, by="a", role="administrator", reason="r", now=NOW
        )

    assert uow.committed == before


async def test_erasure_of_an_unknown_family_is_not_found(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(NotFound, match="no family fam-x"):
        await erasure.erase_family(uow, "fam-x", by="a", role="administrator", reason="r", now=NOW)


# ---------------------------------------------------------------------------------------------
# Partner keys


async def test_an_issued_key_authenticates_until_it_is_revoked(uow: InMemoryUnitOfWork) -> None:
    record, key = await partners.issue_key(
        uow, partner_id="p-1", routes=["school", "gp", "school"], name=None, by="adm", now=NOW
    )
    assert record.routes == ("gp", "school")
    assert key not in repr(uow.committed)  # only its hash is kept

    keys = InMemoryPartnerKeys(uow.committed)
    assert (await partners.authenticate(keys, key)).partner_id == "p-1"

    await partners.revoke_key(uow, record.key_id, by="adm", now=NOW)
    with pytest.raises(Unauthenticated, match="revoked") as refused:
        await partners.authenticate(InMemoryPartnerKeys(uow.committed), key)
    assert (refused.value.partner_id, refused.value.key_id) == ("p-1", record.key_id)


async def test_a_key_for_an_unknown_route_is_invalid_and_none_is_stored(
    uow: InMemoryUnitOfWork,
) -> None:
    with pytest.raises(Invalid, match=r"unknown routes \['carrier_pigeon'\]"):
        await partners.issue_key(
            uow, partner_id="p-1", routes=["carrier_pigeon"], name=None, by="adm", now=NOW
        )
    assert uow.committed.partner_keys == {}


async def test_revoking_an_unknown_key_is_not_found(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(NotFound, match="no partner key pk-x"):
        await partners.revoke_key(uow, "pk-x", by="adm", now=NOW)


async def test_a_missing_or_unknown_key_is_unauthenticated(uow: InMemoryUnitOfWork) -> None:
    keys = InMemoryPartnerKeys(uow.committed)
    with pytest.raises(Unauthenticated, match="send your partner key"):
        await partners.authenticate(keys, None)
    with pytest.raises(Unauthenticated, match="unknown partner key"):
        await partners.authenticate(keys, "ehpk_guess")


async def test_a_key_may_not_submit_for_another_partner(uow: InMemoryUnitOfWork) -> None:
    record, _ = await partners.issue_key(
        uow, partner_id="p-1", routes=["school"], name=None, by="adm", now=NOW
    )
    with pytest.raises(Forbidden, match="belongs to partner 'p-1'"):
        partners.authorise(record.key, {"partner_id": "p-2", "route": "school"})
    partners.authorise(record.key, {"partner_id": "p-1", "route": "school"})


# ---------------------------------------------------------------------------------------------
# The access log


async def test_a_look_at_a_referral_is_recorded_with_the_data_it_returns(
    uow: InMemoryUnitOfWork,
) -> None:
    family_id = a_family(uow)

    found = await access_log.read_referral(uow, "ref-1", reader=READER, now=NOW)

    assert "submission" not in found
    assert await access_log.access_log(uow, family_id=family_id, sub=None, limit=10) == [
        AccessEntry(
            NOW, "pat-1", "practitioner", "read_referral", family_id, "ref-1", "visit planning"
        )
    ]


async def test_a_look_at_nothing_is_not_found_and_not_recorded(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(NotFound, match="no rejection rej-x"):
        await access_log.read_rejection(uow, "rej-x", reader=READER, now=NOW)
    assert uow.committed.access_log == []


# ---------------------------------------------------------------------------------------------
# Retention


async def test_the_review_lists_closed_families_past_retention_longest_closed_first(
    uow: InMemoryUnitOfWork,
) -> None:
    families = uow.committed.families
    families["old"] = FamilyRecord(
        "old", "eastmere", last_closed_at=datetime(2018, 1, 5, tzinfo=UTC)
    )
    families["older"] = FamilyRecord("older", None, last_closed_at=datetime(2017, 3, 1, tzinfo=UTC))
    families["recent"] = FamilyRecord(
        "recent", None, last_closed_at=datetime(2024, 1, 1, tzinfo=UTC)
    )
    families["asked_again"] = FamilyRecord(
        "asked_again",
        None,
        last_closed_at=datetime(2017, 1, 1, tzinfo=UTC),
        last_referral_at=datetime(2025, 1, 1, tzinfo=UTC),
    )

    due = await retention.review(uow, now=NOW, years=6)

    assert [family.family_id for family in due] == ["older", "old"]
    assert due[1].review_due_since == datetime(2024, 1, 5, tzinfo=UTC)
