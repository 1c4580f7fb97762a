"""The allocation service over the real broker and database: every rule, the queue, leavers.

One service runs for the module (a consumer group join costs seconds); each test works in a
district of its own, with teams and workers it creates through the HTTP API, so tests do
not share capacity or queues.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.allocation.access import POLICY
from services.allocation.app import create_app
from services.allocation.settings import AllocationSettings
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    ReferralReceived,
    ScreeningDecision,
    TeamCapacityChanged,
)
from shared.mongo import Database, create_mongo_client
from tests.auth import AllowedRole
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import TopicReader, eventually, produce, service_event

pytestmark = pytest.mark.infra

RECEIVED_AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass
class Allocation:
    """The allocation service running in this process, with a way in and ways to look."""

    infra: Infra
    namespace: Namespace
    http: httpx.AsyncClient
    db: Database
    allocated: TopicReader
    closed: TopicReader
    capacity: TopicReader

    async def publish(self, *referrals: ReferralReceived, event_id: str | None = None) -> None:
        for referral in referrals:
            await produce(
                self.infra.kafka_bootstrap_servers,
                self.namespace.topic("referral-received"),
                [service_event(referral, service="referral", event_id=event_id)],
                key=referral.family_id.encode(),
            )

    async def allocations_for(self, referral_id: str, count: int = 1) -> list[CaseAllocated]:
        async def mine() -> list[CaseAllocated]:
            return [
                event for event in await self.allocated.events() if event.referral_id == referral_id
            ]

        return await eventually(mine, lambda found: len(found) >= count, timeout_s=30)

    async def allocations_of_case(self, case_id: str) -> list[CaseAllocated]:
        return [event for event in await self.allocated.events() if event.case_id == case_id]

    async def team(self, team_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/teams/{team_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def queue(self, district: str) -> list[dict[str, Any]]:
        response = await self.http.get("/queue", params={"district": district})
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()
        return entries

    async def close(self, case_id: str, outcome: str = "needs_met") -> httpx.Response:
        return await self.http.post(f"/cases/{case_id}/close", json={"outcome": outcome})


@pytest.fixture(scope="module")
async def service(infra: Infra) -> AsyncIterator[Allocation]:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"a{token}-", databases=f"a{token}_")
    settings = namespace.settings(
        AllocationSettings, infra, sample_data=False, queue_sweep_interval_s=0.5
    )
    app = create_app(settings)
    readers = [
        TopicReader(infra.kafka_bootstrap_servers, namespace.topic(model.event_type), model)
        for model in (CaseAllocated, CaseClosed, TeamCapacityChanged)
    ]
    mongo = create_mongo_client(infra.mongodb_uri, app_name="allocation-tests")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://allocation", auth=AllowedRole(POLICY)
        ) as http,
    ):
        for reader in readers:
            await reader.start()
        try:
            yield Allocation(infra, namespace, http, mongo[settings.database_name], *readers)
        finally:
            for reader in readers:
                await reader.stop()
            await mongo.close()


@pytest.fixture
def district() -> str:
    """A district of the test's own."""
    return f"d{uuid.uuid4().hex[:8]}"


async def make_team(
    service: Allocation, district: str, *workers: tuple[str, float, int | None], name: str = "a"
) -> str:
    team_id = f"{district}-{name}"
    response = await service.http.post(
        "/teams", json={"id": team_id, "name": f"Team {name}", "district": district}
    )
    assert response.status_code == 201, response.text
    for worker_name, fte, cap in workers:
        await join(service, team_id, worker_name, fte, cap)
    return team_id


async def join(
    service: Allocation, team_id: str, name: str, fte: float = 1.0, cap: int | None = None
) -> dict[str, Any]:
    response = await service.http.post(
        f"/teams/{team_id}/workers",
        json={"id": f"{team_id}-{name}", "name": name.title(), "fte": fte, "caseload_cap": cap},
    )
    assert response.status_code == 201, response.text
    worker: dict[str, Any] = response.json()
    return worker


def referral(district: str, name: str, **changes: Any) -> ReferralReceived:
    return referral_received(
        **{
            "referral_id": f"ref-{district}-{name}",
            "family_id": f"fam-{district}-{name}",
            "submission_id": f"sub-{district}-{name}",
            "district": district,
            "received_at": RECEIVED_AT,
            **changes,
        }
    )


# ---------------------------------------------------------------------------------------------
# The rules, in order


async def test_a_new_family_goes_to_the_worker_with_the_most_spare_capacity(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("ash", 1.0, 3), ("birch", 1.0, 5))
    first = referral(district, "first")

    await service.publish(first)

    [allocation] = await service.allocations_for(first.referral_id)
    assert allocation.status is AllocationStatus.ALLOCATED
    assert allocation.kind is AllocationKind.STANDARD
    assert (allocation.team_id, allocation.worker_id) == (team_id, f"{team_id}-birch")
    assert allocation.queue_position is None
    assert allocation.time_to_allocation_seconds == pytest.approx(
        (allocation.allocated_at - RECEIVED_AT).total_seconds()
    )
    team = await service.team(team_id)
    assert {worker["id"]: worker["open_cases"] for worker in team["workers"]} == {
        f"{team_id}-ash": 0,
        f"{team_id}-birch": 1,
    }


async def test_equal_spare_capacity_is_settled_by_the_worker_id(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("oak", 1.0, 4), ("elm", 1.0, 4))
    first = referral(district, "tie")

    await service.publish(first)

    [allocation] = await service.allocations_for(first.referral_id)
    assert allocation.worker_id == f"{team_id}-elm"


async def test_the_district_s_teams_share_its_families_by_spare_capacity(
    service: Allocation, district: str
) -> None:
    await make_team(service, district, ("small", 1.0, 1), name="north")
    south = await make_team(service, district, ("big", 1.0, 6), name="south")
    first = referral(district, "shared")

    await service.publish(first)

    [allocation] = await service.allocations_for(first.referral_id)
    assert (allocation.team_id, allocation.worker_id) == (south, f"{south}-big")


async def test_a_family_with_an_open_case_keeps_its_case_and_worker(
    service: Allocation, district: str
) -> None:
    await make_team(service, district, ("ash", 1.0, 5), ("birch", 1.0, 5))
    first = referral(district, "family", referral_id=f"ref-{district}-1")
    again = referral(
        district,
        "family",
        referral_id=f"ref-{district}-2",
        submission_id=f"sub-{district}-2",
        received_at=RECEIVED_AT + timedelta(days=3),
    )

    await service.publish(first)
    [opened] = await service.allocations_for(first.referral_id)
    await service.publish(again)
    [joined] = await service.allocations_for(again.referral_id)

    assert joined.kind is AllocationKind.EXISTING_CASE
    assert (joined.case_id, joined.worker_id) == (opened.case_id, opened.worker_id)
    cases = (
        await service.http.get("/cases", params={"family_id": first.family_id, "status": "open"})
    ).json()
    assert [case["id"] for case in cases] == [opened.case_id]
    assert cases[0]["referral_ids"] == [first.referral_id, again.referral_id]
    worker = (await service.http.get(f"/workers/{opened.worker_id}")).json()
    assert worker["open_cases"] == 1


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        (
            {"is_step_down": True, "social_care_case_reference": "CSC-77"},
            AllocationKind.STEP_DOWN,
        ),
        (
            {"open_to_social_care": True, "social_care_case_reference": "CSC-88"},
            AllocationKind.CO_WORKING,
        ),
    ],
)
async def test_step_downs_and_co_working_carry_the_social_care_reference(
    service: Allocation, district: str, changes: dict[str, Any], kind: AllocationKind
) -> None:
    await make_team(service, district, ("ash", 1.0, 5))
    first = referral(district, "csc", **changes)

    await service.publish(first)

    [allocation] = await service.allocations_for(first.referral_id)
    assert allocation.kind is kind
    assert allocation.status is AllocationStatus.ALLOCATED
    assert allocation.social_care_case_reference == changes["social_care_case_reference"]


@pytest.mark.parametrize(
    ("level", "decision"),
    [
        (LevelOfNeed.UNIVERSAL, ScreeningDecision.SIGNPOST),
        (LevelOfNeed.STATUTORY, ScreeningDecision.STEP_UP),
    ],
)
async def test_signposted_and_stepped_up_referrals_are_not_allocated(
    service: Allocation, district: str, level: LevelOfNeed, decision: ScreeningDecision
) -> None:
    await make_team(service, district, ("ash", 1.0, 5))
    skipped = referral(district, "skip", level_of_need=level, decision=decision)
    marker = referral(district, "marker")

    # Same family key, so the marker is consumed after the skipped one.
    await service.publish(skipped, marker.model_copy(update={"family_id": skipped.family_id}))

    await service.allocations_for(marker.referral_id)
    assert await service.allocations_for(skipped.referral_id, count=0) == []
    cases = (await service.http.get("/cases", params={"district": district})).json()
    assert [case["referral_ids"] for case in cases] == [[marker.referral_id]]


async def test_a_redelivered_referral_changes_nothing(service: Allocation, district: str) -> None:
    team_id = await make_team(service, district, ("ash", 1.0, 5))
    first = referral(district, "twice")
    marker = referral(district, "after-twice")

    await service.publish(first, event_id="referral-twice")
    await service.publish(first, event_id="referral-twice")
    await service.publish(marker.model_copy(update={"family_id": first.family_id}))

    await service.allocations_for(marker.referral_id)
    assert len(await service.allocations_for(first.referral_id)) == 1
    worker = (await service.http.get(f"/workers/{team_id}-ash")).json()
    assert worker["open_cases"] == 1
    assert len(worker["case_ids"]) == 1


# ---------------------------------------------------------------------------------------------
# The queue


async def test_without_capacity_cases_queue_step_downs_first_then_need_then_oldest(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("only", 1.0, 1))
    holder = referral(district, "holder")
    older_level_2 = referral(district, "older-2", received_at=RECEIVED_AT + timedelta(hours=1))
    newer_level_2 = referral(district, "newer-2", received_at=RECEIVED_AT + timedelta(hours=2))
    level_3 = referral(
        district,
        "level-3",
        level_of_need=LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
        received_at=RECEIVED_AT + timedelta(hours=3),
    )
    step_down = referral(
        district,
        "step-down",
        is_step_down=True,
        social_care_case_reference="CSC-1",
        received_at=RECEIVED_AT + timedelta(hours=4),
    )

    await service.publish(holder)
    [held] = await service.allocations_for(holder.referral_id)
    queued_places = {}
    for waiting in (step_down, level_3, newer_level_2, older_level_2):
        await service.publish(waiting)
        [queued] = await service.allocations_for(waiting.referral_id)
        assert queued.status is AllocationStatus.QUEUED
        assert (queued.worker_id, queued.time_to_allocation_seconds) == (None, None)
        queued_places[waiting.referral_id] = queued.queue_position

    # Each was told its place on arrival, among those queued by then: behind a higher
    # priority, and the older level 2 ahead of the newer one that came before it.
    assert queued_places == {
        step_down.referral_id: 1,
        level_3.referral_id: 2,
        newer_level_2.referral_id: 3,
        older_level_2.referral_id: 3,
    }
    queue = await service.queue(district)
    assert [(entry["place"], entry["family_id"]) for entry in queue] == [
        (1, step_down.family_id),
        (2, level_3.family_id),
        (3, older_level_2.family_id),
        (4, newer_level_2.family_id),
    ]
    # A page at a time, following each full page's link to the next.
    pages: list[list[tuple[int, str]]] = []
    url = f"/queue?district={district}&limit=3"
    while url:
        answer = await service.http.get(url)
        assert answer.status_code == 200, answer.text
        pages.append([(entry["place"], entry["family_id"]) for entry in answer.json()])
        link = answer.headers.get("link")
        url = f"/queue{link[1 : link.index('>')]}" if link else ""
    assert pages == [
        [(1, step_down.family_id), (2, level_3.family_id), (3, older_level_2.family_id)],
        [(4, newer_level_2.family_id)],
    ]
    # A cursor names a place by its fields: past the step-downs, the level 3 band comes
    # next, numbered on from the place the cursor gives; one of another shape is refused.
    past_step_downs = await service.http.get(
        "/queue", params={"district": district, "cursor": f"{district}~0~9~0~zzz~1"}
    )
    made_up = await service.http.get("/queue", params={"cursor": "not-a-place"})
    assert [(entry["place"], entry["family_id"]) for entry in past_step_downs.json()] == [
        (2, level_3.family_id),
        (3, older_level_2.family_id),
        (4, newer_level_2.family_id),
    ]
    assert made_up.status_code == 422
    everything = (await service.http.get("/cases", params={"district": district})).json()
    paged: list[str] = []
    url = f"/cases?district={district}&limit=2"
    while url:
        answer = await service.http.get(url)
        paged += [case["id"] for case in answer.json()]
        link = answer.headers.get("link")
        url = f"/cases{link[1 : link.index('>')]}" if link else ""
    assert paged == [case["id"] for case in everything]
    assert len(paged) == 5

    # Capacity frees: the head of the queue is allocated, automatically.
    assert (await service.close(held.case_id)).status_code == 200
    [_, allocated] = await service.allocations_for(step_down.referral_id, count=2)
    assert allocated.status is AllocationStatus.ALLOCATED
    assert allocated.kind is AllocationKind.STEP_DOWN
    assert allocated.worker_id == f"{team_id}-only"
    assert allocated.time_to_allocation_seconds == pytest.approx(
        (allocated.allocated_at - step_down.received_at).total_seconds()
    )
    assert [entry["family_id"] for entry in await service.queue(district)] == [
        level_3.family_id,
        older_level_2.family_id,
        newer_level_2.family_id,
    ]


async def test_a_new_referral_never_jumps_the_queue(service: Allocation, district: str) -> None:
    team_id = await make_team(service, district, ("only", 1.0, 1))
    holder, waiting, late = (
        referral(district, name, received_at=RECEIVED_AT + timedelta(minutes=minutes))
        for minutes, name in enumerate(("holder", "waiting", "late"))
    )
    await service.publish(holder)
    await service.allocations_for(holder.referral_id)
    await service.publish(waiting)
    await service.allocations_for(waiting.referral_id)
    # A place frees but the queue has not been allocated yet (as after a crash in between).
    await service.db["districts"].update_one(
        {"_id": district}, {"$inc": {f"workers.{team_id}-only.cap": 1}}
    )

    await service.publish(late)

    [late_queued] = await service.allocations_for(late.referral_id)
    assert late_queued.status is AllocationStatus.QUEUED
    [_, waiting_allocated] = await service.allocations_for(waiting.referral_id, count=2)
    assert waiting_allocated.worker_id == f"{team_id}-only"
    assert [entry["family_id"] for entry in await service.queue(district)] == [late.family_id]


async def test_a_place_freed_without_a_drain_is_given_to_the_queue_by_the_sweep(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("only", 1.0, 1))
    holder = referral(district, "holder")
    waiting = referral(district, "waiting", received_at=RECEIVED_AT + timedelta(minutes=1))
    await service.publish(holder)
    await service.allocations_for(holder.referral_id)
    await service.publish(waiting)
    [queued] = await service.allocations_for(waiting.referral_id)
    assert queued.status is AllocationStatus.QUEUED

    # As if a replica died between committing a closure and draining the queue.
    await service.db["districts"].update_one(
        {"_id": district}, {"$inc": {f"workers.{team_id}-only.cap": 1}}
    )

    [_, allocated] = await service.allocations_for(waiting.referral_id, count=2)
    assert allocated.worker_id == f"{team_id}-only"
    assert await service.queue(district) == []


async def test_a_worker_joining_or_gaining_fte_takes_the_queue_in_order(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("only", 1.0, 1))
    names = ("holder", "w1", "w2", "w3")
    referrals = [
        referral(district, name, received_at=RECEIVED_AT + timedelta(minutes=index))
        for index, name in enumerate(names)
    ]
    # Families' events travel on different partitions: the holder goes first, to be sure.
    await service.publish(referrals[0])
    await service.allocations_for(referrals[0].referral_id)
    await service.publish(*referrals[1:])
    for waiting in referrals[1:]:
        await service.allocations_for(waiting.referral_id)
    assert len(await service.queue(district)) == 3

    newcomer = await join(service, team_id, "newcomer", fte=0.5, cap=None)
    # 0.5 FTE of 18: room for the whole queue, taken oldest first.
    assert newcomer["caseload_cap"] == 9
    assert newcomer["open_cases"] == 3
    assert await service.queue(district) == []
    for waiting in referrals[1:]:
        [_, allocated] = await service.allocations_for(waiting.referral_id, count=2)
        assert allocated.worker_id == f"{team_id}-newcomer"

    more = [referral(district, f"more-{index}") for index in range(2)]
    full = await service.http.patch(f"/workers/{team_id}-newcomer", json={"caseload_cap": 3})
    assert full.json()["spare"] == 0
    await service.publish(*more)
    for waiting in more:
        [queued] = await service.allocations_for(waiting.referral_id)
        assert queued.status is AllocationStatus.QUEUED

    raised = await service.http.patch(f"/workers/{team_id}-only", json={"caseload_cap": 3})

    assert raised.status_code == 200
    assert raised.json()["open_cases"] == 3
    assert await service.queue(district) == []


async def test_a_leavers_cases_are_reallocated_by_the_same_rules_or_queued(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("leaver", 1.0, 5))
    families = [referral(district, f"family-{index}") for index in range(3)]
    await service.publish(*families)
    for family in families:
        [allocation] = await service.allocations_for(family.referral_id)
        assert allocation.worker_id == f"{team_id}-leaver"
    await join(service, team_id, "stayer", cap=2)

    response = await service.http.post(f"/workers/{team_id}-leaver/leave")

    assert response.status_code == 200, response.text
    moved = response.json()["reallocated"]
    assert len(moved) == 3
    assert all(event["reallocated_from_worker_id"] == f"{team_id}-leaver" for event in moved)
    assert sorted(event["status"] for event in moved) == ["allocated", "allocated", "queued"]
    team = await service.team(team_id)
    assert team["capacity"] == 2
    workers = {worker["id"]: worker for worker in team["workers"]}
    assert workers[f"{team_id}-leaver"]["active"] is False
    assert workers[f"{team_id}-leaver"]["open_cases"] == 0
    assert workers[f"{team_id}-stayer"]["open_cases"] == 2
    assert len(await service.queue(district)) == 1
    # Leaving again finds nothing left to move.
    again = await service.http.post(f"/workers/{team_id}-leaver/leave")
    assert again.json()["reallocated"] == []


# ---------------------------------------------------------------------------------------------
# Closure


async def test_a_case_closes_with_its_outcome_once(service: Allocation, district: str) -> None:
    team_id = await make_team(service, district, ("ash", 1.0, 2))
    first = referral(district, "closing")
    await service.publish(first)
    [allocation] = await service.allocations_for(first.referral_id)

    response = await service.close(allocation.case_id, "stepped_up")

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "stepped_up"

    async def closures() -> list[CaseClosed]:
        return [
            event for event in await service.closed.events() if event.case_id == allocation.case_id
        ]

    [closed] = await eventually(closures, bool, timeout_s=30)
    assert (closed.outcome, closed.worker_id, closed.family_id) == (
        CaseOutcome.STEPPED_UP,
        f"{team_id}-ash",
        first.family_id,
    )
    assert (await service.close(allocation.case_id)).status_code == 409
    assert (await service.close("case-nope")).status_code == 404
    bad = await service.http.post(f"/cases/{allocation.case_id}/close", json={"outcome": "bored"})
    assert bad.status_code == 422
    worker = (await service.http.get(f"/workers/{team_id}-ash")).json()
    assert (worker["open_cases"], worker["spare"]) == (0, 2)


async def test_a_family_whose_case_closed_gets_a_new_case(
    service: Allocation, district: str
) -> None:
    await make_team(service, district, ("ash", 1.0, 2))
    first = referral(district, "returning", referral_id=f"ref-{district}-a")
    await service.publish(first)
    [opened] = await service.allocations_for(first.referral_id)
    await service.close(opened.case_id)
    again = referral(district, "returning", referral_id=f"ref-{district}-b")

    await service.publish(again)

    [second] = await service.allocations_for(again.referral_id)
    assert second.kind is AllocationKind.STANDARD
    assert second.case_id != opened.case_id


# ---------------------------------------------------------------------------------------------
# Teams, workers and what managers see


async def test_a_manager_sees_each_worker_s_cases_against_cap_and_capacity_is_published(
    service: Allocation, district: str
) -> None:
    team_id = await make_team(service, district, ("ash", 1.0, None), ("birch", 0.5, None))
    await service.publish(*(referral(district, f"f{index}") for index in range(3)))
    await eventually(
        lambda: service.team(team_id), lambda team: team["open_cases"] == 3, timeout_s=30
    )

    team = await service.team(team_id)

    assert (team["fte"], team["capacity"], team["cap_per_fte"]) == (1.5, 27, 18)
    assert [(w["id"], w["caseload_cap"], w["open_cases"], w["spare"]) for w in team["workers"]] == [
        (f"{team_id}-ash", 18, 3, 15),
        (f"{team_id}-birch", 9, 0, 9),
    ]
    listed = (await service.http.get("/teams", params={"district": district})).json()
    assert [entry["id"] for entry in listed] == [team_id]

    changed = await service.http.patch(f"/teams/{team_id}", json={"cap_per_fte": 10})
    assert changed.json()["capacity"] == 15

    async def latest_capacity() -> TeamCapacityChanged | None:
        mine = [event for event in await service.capacity.events() if event.team_id == team_id]
        return mine[-1] if mine else None

    latest = await eventually(
        latest_capacity, lambda event: event is not None and event.capacity == 15, timeout_s=30
    )
    assert latest is not None
    assert (latest.district, latest.workers, latest.fte) == (district, 2, 1.5)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/teams/{team}/workers", {"id": "x-1", "name": "X", "fte": 1.5}, 422, "fte"),
        ("/teams/{team}/workers", {"id": "Not Kebab", "name": "X", "fte": 1}, 422, "id"),
        ("/teams/nope-team/workers", {"id": "x-2", "name": "X", "fte": 1}, 404, "no team"),
        ("/teams/{team}/workers", {"id": "{team}-ash", "name": "X", "fte": 1}, 409, "exists"),
        ("/teams", {"id": "{team}", "name": "Again", "district": "d"}, 409, "exists"),
        ("/teams", {"id": "t-1", "name": "T", "district": "d", "colour": "red"}, 422, "colour"),
    ],
)
async def test_admin_mistakes_get_a_specific_answer(
    service: Allocation,
    district: str,
    path: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    team_id = await make_team(service, district, ("ash", 1.0, 2))
    filled = {key: value.replace("{team}", team_id) if isinstance(value, str) else value
              for key, value in body.items()}  # fmt: skip

    response = await service.http.post(path.replace("{team}", team_id), json=filled)

    assert response.status_code == status, response.text
    assert message in response.text
