"""The stored history is what the services would have stored: every document reads back
through the services' own parsers, the aggregates agree with the cases they count, and
allocation's rules go on from it as from any day of their own."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.history import (
    ALLOCATION,
    AUDIT,
    REFERRAL,
    Lived,
    apply_update,
    arrival_times,
    live_history,
)
from services.allocation import handlers as allocation_handlers
from services.allocation import store as allocation_store
from services.allocation.domain import HEAD_SIZE, Case, QueuePlace, place_of
from services.audit import store as audit_store
from services.referral import store as referral_store
from shared.events import AllocationStatus, CaseOutcome, EventData, ScreeningDecision
from shared.months import months_ending
from tests.factories import MATCH_KEYS, referral_received
from tests.fakes.allocation import InMemoryAllocationStore, QueueEntry

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
REFERRALS = 4_000

Documents = dict[tuple[str, str], list[dict[str, object]]]


class Kept:
    """A sink that keeps everything, by service and collection."""

    def __init__(self) -> None:
        self.documents: Documents = defaultdict(list)
        self.events: list[EventData] = []

    def add(self, service: str, collection: str, document: dict[str, object]) -> None:
        self.documents[service, collection].append(document)

    def event(self, event: EventData) -> None:
        self.events.append(event)

    async def pump(self) -> None:
        return None


@pytest.fixture(scope="module")
def history() -> tuple[Lived, Kept]:
    kept = Kept()
    lived = asyncio.run(
        live_history(kept, referrals=REFERRALS, seed=3, now=NOW, match_keys=MATCH_KEYS)
    )
    return lived, kept


def by_id(kept: Kept, service: str, collection: str) -> dict[str, dict[str, object]]:
    documents = kept.documents[service, collection]
    found = {str(document["_id"]): document for document in documents}
    assert len(found) == len(documents), f"{service}.{collection} has an id twice"
    return found


def cases_of(kept: Kept) -> dict[str, Case]:
    return {
        case_id: allocation_store.case_from(document)
        for case_id, document in by_id(kept, ALLOCATION, allocation_store.CASES).items()
    }


def test_history_spans_two_years_of_working_hours() -> None:
    times = list(arrival_times(5_000, NOW - timedelta(days=730), NOW, random.Random(1)))
    assert len(times) == 5_000
    assert times == sorted(times)
    assert times[0] >= NOW - timedelta(days=730)
    assert times[-1] < NOW
    weekends = sum(at.weekday() >= 5 for at in times)
    assert 0 < weekends < 0.05 * len(times)


def test_most_cases_are_closed_every_worker_is_full_and_a_queue_stands(
    history: tuple[Lived, Kept],
) -> None:
    lived, kept = history
    assert lived.referrals == REFERRALS
    assert 0.03 * REFERRALS < lived.rejected < 0.08 * REFERRALS
    assert lived.cases_closed > 0.8 * lived.cases_opened
    assert lived.cases_queued > 0
    districts = [
        allocation_store._district(document)
        for document in kept.documents[ALLOCATION, allocation_store.DISTRICTS]
    ]
    assert sum(district.queue_length for district in districts) == lived.cases_queued
    for district in districts:
        if district.queue_length:
            assert district.choose_worker() is None, "a worker has room while families wait"


def test_district_aggregates_agree_with_the_cases_and_queue_entries(
    history: tuple[Lived, Kept],
) -> None:
    _, kept = history
    cases = cases_of(kept)
    open_cases = [case for case in cases.values() if case.open]
    held = Counter(case.worker_id for case in open_cases if case.allocation.value == "allocated")
    entries: dict[str, list[QueuePlace]] = defaultdict(list)
    for document in kept.documents[ALLOCATION, allocation_store.QUEUE_ENTRIES]:
        entries[str(document["district"])].append(allocation_store._entry_place(document))
    queued = sorted(place_of(case) for case in open_cases if case.allocation.value == "queued")
    assert sorted(place for places in entries.values() for place in places) == queued
    claims = {str(doc["_id"]) for doc in kept.documents[ALLOCATION, "district_versions"]}
    for document in kept.documents[ALLOCATION, allocation_store.DISTRICTS]:
        district = allocation_store._district(document)
        assert f"{district.id}:{district.version}" in claims
        for worker in district.workers.values():
            assert worker.open_cases == held[worker.id] <= worker.cap
        waiting = sorted(entries[district.id])
        assert district.queue_length == len(waiting)
        assert district.head == waiting[:HEAD_SIZE]
        for band, state in district.bands.items():
            whole = [place for place in waiting if place.band == band]
            assert state.count == len(whole)
            assert state.newest == whole[-len(state.newest) :]
    lookups = by_id(kept, ALLOCATION, allocation_store.OPEN_CASES)
    assert {doc["case_id"] for doc in lookups.values()} == {case.id for case in open_cases}
    assert len({case.family_id for case in open_cases}) == len(open_cases)


def test_cases_have_their_places_in_the_lists_newest_opened_last(
    history: tuple[Lived, Kept],
) -> None:
    _, kept = history
    documents = kept.documents[ALLOCATION, allocation_store.CASES]
    heads = {
        str(doc["_id"]): doc["next"]
        for doc in kept.documents[ALLOCATION, allocation_store.LIST_POSITIONS]
    }
    assert heads[allocation_store.COUNTY_LIST] == len(documents)
    county = sorted(documents, key=lambda doc: int(str(doc["list_position"])))
    assert [doc["list_position"] for doc in county] == list(range(len(documents)))
    opened = [doc["opened_at"] for doc in county]
    assert opened == sorted(opened)  # type: ignore[type-var]
    for doc in documents:
        expected = allocation_store.list_fields(
            str(doc["district"]), int(str(doc["list_position"])), int(str(doc["district_position"]))
        )
        assert {name: doc[name] for name in expected} == expected
    by_district = Counter(str(doc["district"]) for doc in documents)
    assert {name: heads[name] for name in by_district} == dict(by_district)


def test_the_front_door_knows_each_family_and_its_cases(history: tuple[Lived, Kept]) -> None:
    _, kept = history
    families = by_id(kept, REFERRAL, referral_store.FAMILIES)
    referrals = by_id(kept, REFERRAL, referral_store.REFERRALS)
    assert {doc["family_id"] for doc in referrals.values()} == set(families)
    keyed = {doc["family_id"] for doc in by_id(kept, REFERRAL, referral_store.FAMILY_KEYS).values()}
    assert keyed == set(families)
    for case in cases_of(kept).values():
        record = referral_store._family_record(families[case.family_id])
        assert (case.id in record.open_cases) == case.open
    assert any(document["is_re_referral"] for document in referrals.values())
    assert any(document["family_has_open_case"] for document in referrals.values())
    decisions = Counter(str(document["decision"]) for document in referrals.values())
    assert set(decisions) == {decision.value for decision in ScreeningDecision}
    assert kept.documents[REFERRAL, referral_store.REJECTIONS]


def test_audit_knows_every_case_and_drew_every_month(history: tuple[Lived, Kept]) -> None:
    lived, kept = history
    cases = cases_of(kept)
    states = {
        case_id: audit_store._case(document)
        for case_id, document in by_id(kept, AUDIT, audit_store.CASES).items()
    }
    assert set(states) == set(cases)
    for case_id, state in states.items():
        assert (state.closed_at is None) == cases[case_id].open
    audits = [audit_store._audit(doc) for doc in kept.documents[AUDIT, audit_store.AUDITS]]
    months = {audit.month for audit in audits}
    assert months == set(months_ending("2026-12", 24))
    assert sum(audit.completed_at is not None for audit in audits) == lived.audits_completed
    assert len(kept.documents[AUDIT, audit_store.DRAWS]) == len(months)
    assert {str(doc["_id"]) for doc in kept.documents[AUDIT, audit_store.AUDITORS]}


def test_reporting_is_given_every_event_the_history_gave(history: tuple[Lived, Kept]) -> None:
    lived, kept = history
    types = Counter(type(event).event_type for event in kept.events)
    assert types["referral-received"] + types["referral-rejected"] == lived.referrals
    assert types["case-closed"] == lived.cases_closed
    assert types["team-capacity-changed"] == len(kept.documents[ALLOCATION, allocation_store.TEAMS])
    assert types["audit-assigned"] == lived.audits
    assert types["audit-completed"] == lived.audits_completed


async def test_allocation_goes_on_from_the_history(history: tuple[Lived, Kept]) -> None:
    """A case closing gives its place to the head of its district's queue, and a new
    referral waits behind everyone already waiting."""
    _, kept = history
    store = InMemoryAllocationStore()
    state = store.state
    for document in kept.documents[ALLOCATION, allocation_store.DISTRICTS]:
        district = allocation_store._district(document)
        state.districts[district.id] = district
    for document in kept.documents[ALLOCATION, allocation_store.QUEUE_ENTRIES]:
        place = allocation_store._entry_place(document)
        state.queue[place.case_id] = QueueEntry(str(document["district"]), place)
    state.cases = cases_of(kept)
    for document in kept.documents[ALLOCATION, allocation_store.TEAMS]:
        team = allocation_store._team(document)
        state.teams[team.id] = team
    for document in kept.documents[ALLOCATION, allocation_store.WORKERS]:
        worker = allocation_store._worker(document)
        state.workers[worker.id] = worker
    district_id = max(state.districts.values(), key=lambda district: district.queue_length).id
    allocated = next(
        case
        for case in sorted(state.cases.values(), key=lambda case: case.id)
        if case.open
        and case.allocation is AllocationStatus.ALLOCATED
        and case.district == district_id
    )
    first = min(entry.place for entry in state.queue.values() if entry.district == district_id)
    waiting = state.districts[district_id].queue_length

    later = NOW + timedelta(minutes=1)
    await allocation_handlers.close_case(
        store.unit_of_work, allocated.id, CaseOutcome.NEEDS_MET, now=later
    )
    given = store.state.cases[first.case_id]
    assert given.allocation is AllocationStatus.ALLOCATED
    assert given.worker_id == allocated.worker_id

    referral = referral_received(
        referral_id="ref-after-history",
        family_id="fam-after-history",
        district=district_id,
        received_at=later,
    )
    placed = await allocation_handlers.place_referrals(
        store.unit_of_work(), [(referral, "after-history")], now=later
    )
    (event,) = placed.allocations
    assert event.status is AllocationStatus.QUEUED
    behind = [
        entry.place
        for entry in store.state.queue.values()
        if entry.district == district_id and entry.place.case_id != event.case_id
    ]
    assert event.queue_position == 1 + sum(
        place < store_place(store, event.case_id) for place in behind
    )
    assert store.state.districts[district_id].queue_length == waiting


def store_place(store: InMemoryAllocationStore, case_id: str) -> QueuePlace:
    return store.state.queue[case_id].place


def test_updates_are_applied_as_the_database_applies_them() -> None:
    family: dict[str, object] = {"_id": "fam-1"}
    apply_update(
        family,
        {"$setOnInsert": {"open_cases": []}, "$set": {"district": "eastmere"}},
        inserted=True,
    )
    apply_update(family, {"$addToSet": {"open_cases": "case-1"}}, inserted=False)
    apply_update(family, {"$addToSet": {"open_cases": "case-1"}}, inserted=False)
    apply_update(family, {"$setOnInsert": {"district": "westbrook"}}, inserted=False)
    assert family == {"_id": "fam-1", "open_cases": ["case-1"], "district": "eastmere"}
    with pytest.raises(ValueError, match=r"\$inc"):
        apply_update(family, {"$inc": {"count": 1}}, inserted=False)
