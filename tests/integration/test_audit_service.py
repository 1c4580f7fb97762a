"""The audit service over the real broker and database: the case population from Kafka,
auditors, monthly draws, submissions and their errors, redelivery, compliance, and the
audit-completed event on its topic."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.audit import domain
from services.audit.access import POLICY
from services.audit.app import create_app
from services.audit.settings import AuditSettings
from services.audit.store import MongoAuditStore
from shared.auth import Role
from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    LevelOfNeed,
    envelope,
    read_envelope,
)
from shared.mongo import Database, create_mongo_client
from tests.auth import AllowedRole, as_role
from tests.conftest import Infra, Namespace
from tests.support import TopicReader, eventually, followed, produce

pytestmark = pytest.mark.infra

START = datetime(2031, 1, 15, 10, 0, tzinfo=UTC)
ALL_GOOD = dict.fromkeys(domain.QUALITY_STANDARDS, "good")


class Clock:
    """The service's clock, moved by the tests."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class AuditService:
    infra: Infra
    namespace: Namespace
    app: FastAPI
    http: httpx.AsyncClient
    db: Database
    clock: Clock
    completed: TopicReader

    async def publish(self, data: EventData, *, event_id: str | None = None) -> bytes:
        value = envelope(
            data,
            event_id=event_id or str(uuid.uuid4()),
            source="/earlyhelp/allocation",
            time=datetime.now(UTC),
            correlation_id=str(uuid.uuid4()),
        ).to_bytes()
        await self.publish_raw(data, value)
        return value

    async def publish_raw(self, data: EventData, *values: bytes) -> None:
        subject = data.event_subject()
        await produce(
            self.infra.kafka_bootstrap_servers,
            self.namespace.topic(data.event_type),
            list(values),
            key=subject.encode() if subject else None,
        )

    async def allocate(self, *events: CaseAllocated) -> None:
        for event in events:
            await self.publish(event)
        wanted = {event.case_id for event in events}
        await eventually(lambda: self.known_cases(wanted), lambda found: found == wanted)

    async def known_cases(self, case_ids: set[str]) -> set[str]:
        found = await self.db["cases"].find({"_id": {"$in": sorted(case_ids)}}).to_list()
        return {document["_id"] for document in found if document.get("first_allocated_at")}

    async def add_auditor(self, auditor_id: str, district: str, team_id: str | None) -> None:
        role = "team_manager" if team_id else "head_of_service"
        response = await self.http.post(
            "/auditors",
            json={
                "id": auditor_id,
                "name": auditor_id,
                "role": role,
                "district": district,
                "team_id": team_id,
            },
        )
        assert response.status_code == 201, response.text

    async def draw(self, month: str, seed: int | None = None) -> httpx.Response:
        body: dict[str, Any] = {"month": month}
        if seed is not None:
            body["seed"] = seed
        return await self.http.post("/audits/draws", json=body)

    async def audits(self, **query: str) -> list[dict[str, Any]]:
        response = await self.http.get("/audits", params=query)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def complete(self, audit_id: str, as_auditor: str, **body: Any) -> httpx.Response:
        return await self.http.post(
            f"/audits/{audit_id}/completion",
            json={"scores": ALL_GOOD, **body},
            headers=as_role(Role.TEAM_MANAGER, sub=as_auditor),
        )


@pytest.fixture(scope="module")
async def service(infra: Infra) -> AsyncIterator[AuditService]:
    """One audit service for the module: a consumer group join costs seconds."""
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"a{token}-", databases=f"a{token}_")
    settings = namespace.settings(AuditSettings, infra, sample_data=False)
    clock = Clock()
    app = create_app(settings, clock=clock)
    mongo = create_mongo_client(infra.mongodb_uri, app_name="audit-tests")
    completed = TopicReader(
        infra.kafka_bootstrap_servers, namespace.topic("audit-completed"), AuditCompleted
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://audit", timeout=30, auth=AllowedRole(POLICY)
        ) as http,
    ):
        await completed.start()
        db = mongo[settings.database_name]
        # The start-up check draws the current month; let it finish before tests clear data.
        await eventually(lambda: db["draws"].count_documents({}), lambda drawn: drawn == 1)
        try:
            yield AuditService(infra, namespace, app, http, db, clock, completed)
        finally:
            await completed.stop()
            await mongo.close()


@pytest.fixture(autouse=True)
async def fresh(service: AuditService) -> None:
    """Each test starts with no cases, auditors or audits, at the same time."""
    for collection in ("cases", "auditors", "audits", "draws"):
        await service.db[collection].delete_many({})
    service.clock.now = START


def allocation(
    case_id: str,
    district: str,
    team_id: str,
    level: int = 2,
    *,
    at: datetime = datetime(2029, 6, 1, tzinfo=UTC),
    status: AllocationStatus = AllocationStatus.ALLOCATED,
    worker_id: str = "w-1",
) -> CaseAllocated:
    return CaseAllocated(
        case_id=case_id,
        family_id=f"fam-{case_id}",
        referral_id=f"ref-{case_id}",
        district=district,
        team_id=team_id,
        worker_id=worker_id if status is AllocationStatus.ALLOCATED else None,
        status=status,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed(level),
        referral_received_at=at,
        allocated_at=at,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Sampling


async def test_a_draw_is_stratified_avoids_own_teams_and_is_reproducible_from_its_seed(
    service: AuditService,
) -> None:
    strata = {
        ("northvale", 2): ("northvale-north", "northvale-south"),
        ("northvale", 3): ("northvale-north", "northvale-south"),
        ("eastmere", 2): ("eastmere-coast", "eastmere-town"),
        ("eastmere", 3): ("eastmere-coast", "eastmere-town"),
    }
    cases = [
        allocation(unique("case"), district, team, level)
        for (district, level), teams in strata.items()
        for team in teams
    ]
    await service.allocate(*cases)
    teams = ["northvale-north", "northvale-south", "eastmere-coast", "eastmere-town"]
    for team in teams:
        await service.add_auditor(f"tm-{team}", team.split("-")[0], team)

    drawn = await service.draw("2030-11", seed=7)

    assert drawn.status_code == 201, drawn.text
    assert drawn.json()["seed"] == 7
    audits = await service.audits(month="2030-11")
    assert len(audits) == 4
    assert {(a["district"], a["level_of_need"]) for a in audits} == set(strata)
    assert all(a["team_id"] != a["auditor_id"].removeprefix("tm-") for a in audits)
    assert {a["status"] for a in audits} == {"overdue"}  # November 2030 is over
    runtime = service.app.state.runtime
    store = MongoAuditStore(runtime.client, runtime.db, runtime.outbox)
    async with store.unit_of_work() as uow:
        population = await uow.cases.get_many({case.case_id for case in cases})
        auditors = await uow.auditors.all()
    expected = domain.draw_audits(
        month="2030-11",
        seed=7,
        owed=[(auditor, 1) for auditor in auditors],
        population=population.values(),
    )
    assert {(a["auditor_id"], a["case_id"]) for a in audits} == {
        (assignment.auditor_id, assignment.case_id) for assignment in expected.assignments
    }

    again = await service.draw("2030-11", seed=99)
    assert again.status_code == 200
    assert again.json()["new_audit_ids"] == []
    assert len(await service.audits(month="2030-11")) == 4

    await service.add_auditor("hos-eastmere", "eastmere", None)
    topped_up = await service.draw("2030-11")
    assert topped_up.status_code == 201
    [new_audit_id] = topped_up.json()["new_audit_ids"]
    new_audit = (await service.http.get(f"/audits/{new_audit_id}")).json()
    assert new_audit["auditor_id"] == "hos-eastmere"
    assert new_audit["case_id"] not in {a["case_id"] for a in audits}
    assert [r["seed"] for r in topped_up.json()["rounds"]] == [7, 99, 7]


async def test_two_draws_of_one_month_at_once_assign_its_audits_once(
    service: AuditService,
) -> None:
    await service.allocate(
        *(allocation(unique("case"), "southford", "southford-west") for _ in range(6))
    )
    for district in ("southford", "northvale", "eastmere"):
        await service.add_auditor(f"hos-{district}", district, None)

    first, second = await asyncio.gather(
        service.draw("2030-09", seed=2), service.draw("2030-09", seed=3)
    )

    assigned = first.json()["new_audit_ids"] + second.json()["new_audit_ids"]
    assert sorted([first.status_code, second.status_code]) == [200, 201]
    assert len(assigned) == 3
    assert sorted(a["id"] for a in await service.audits(month="2030-09")) == sorted(assigned)


async def test_audits_are_listed_a_page_at_a_time_following_each_link(
    service: AuditService,
) -> None:
    await service.allocate(
        *(allocation(unique("case"), "southford", "southford-west") for _ in range(6))
    )
    for district in ("southford", "northvale", "eastmere"):
        await service.add_auditor(f"hos-{district}", district, None)
    for month in ("2030-09", "2030-10"):
        assert (await service.draw(month, seed=4)).status_code == 201
    listed = await service.audits(limit="10")

    pages = await followed(service.http, "/audits?limit=2", {})
    # A cursor names a place by its fields: one past every auditor of October starts at
    # September; one of another shape is refused.
    past_october = await service.audits(cursor="2030-10~zzz~zzz", limit="10")
    made_up = await service.http.get("/audits", params={"cursor": "bm90LWEtcGxhY2U"})

    assert [audit["month"] for audit in listed] == ["2030-10"] * 3 + ["2030-09"] * 3
    assert [[audit["id"] for audit in page] for page in pages] == [
        [audit["id"] for audit in listed[start : start + 2]] for start in (0, 2, 4)
    ]
    assert past_october == listed[3:]
    assert made_up.status_code == 422


async def test_a_case_is_not_drawn_again_within_twelve_months(service: AuditService) -> None:
    first, second = unique("case"), unique("case")
    await service.allocate(
        allocation(first, "southford", "southford-east", at=datetime(2029, 12, 1, tzinfo=UTC)),
        allocation(second, "southford", "southford-east", at=datetime(2029, 12, 1, tzinfo=UTC)),
    )
    await service.add_auditor("hos-southford", "southford", None)

    drawn_cases = []
    for month in ("2030-01", "2030-02"):
        assert (await service.draw(month, seed=1)).status_code == 201
        [audit] = await service.audits(month=month)
        drawn_cases.append(audit["case_id"])
    nothing_left = await service.draw("2030-03", seed=1)

    assert sorted(drawn_cases) == sorted([first, second])
    assert nothing_left.status_code == 200
    assert nothing_left.json()["rounds"][-1]["unfilled"] == {"hos-southford": 1}
    assert await service.audits(month="2030-03") == []
    # Twelve months after its first draw the first case may be drawn again; the second not.
    assert (await service.draw("2031-01", seed=1)).status_code == 201
    [later] = await service.audits(month="2031-01")
    assert later["case_id"] == drawn_cases[0]


async def test_closed_cases_are_drawn_only_within_three_months_of_closing(
    service: AuditService,
) -> None:
    long_closed, recently_closed = unique("case"), unique("case")
    await service.allocate(
        allocation(long_closed, "westbrook", "westbrook-town"),
        allocation(recently_closed, "westbrook", "westbrook-town"),
    )
    for case_id, closed_at in ((long_closed, "2030-04-30"), (recently_closed, "2030-05-02")):
        await service.publish(
            CaseClosed(
                case_id=case_id,
                family_id=f"fam-{case_id}",
                district="westbrook",
                team_id="westbrook-town",
                worker_id="w-1",
                outcome=CaseOutcome.NEEDS_MET,
                closed_at=datetime.fromisoformat(f"{closed_at}T12:00:00+00:00"),
            )
        )
    await eventually(
        lambda: service.db["cases"].count_documents({"closed_at": {"$ne": None}}),
        lambda closed: closed == 2,
    )
    await service.add_auditor("hos-westbrook", "westbrook", None)
    await service.add_auditor("hos-northvale", "northvale", None)

    await service.draw("2030-08", seed=5)

    assert [a["case_id"] for a in await service.audits(month="2030-08")] == [recently_closed]


async def test_the_monthly_check_draws_a_new_month_once(service: AuditService) -> None:
    case_id = unique("case")
    await service.allocate(allocation(case_id, "eastmere", "eastmere-town"))
    await service.add_auditor("tm-eastmere-coast", "eastmere", "eastmere-coast")
    service.clock.now = datetime(2031, 3, 1, 0, 5, tzinfo=UTC)

    first = await service.app.state.draw_if_due()
    second = await service.app.state.draw_if_due()

    assert first is not None
    assert first.month == "2031-03"
    assert second is None
    [audit] = await service.audits(month="2031-03")
    assert (audit["case_id"], audit["auditor_id"]) == (case_id, "tm-eastmere-coast")


# ---------------------------------------------------------------------------------------------
# Auditors


async def test_without_sample_data_the_service_starts_with_no_auditors_and_is_ready_saying_so(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"e{token}-", databases=f"e{token}_")
    app = create_app(namespace.settings(AuditSettings, infra, sample_data=False))
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING, logger="services.audit"):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=transport, base_url="http://audit", auth=AllowedRole(POLICY)
            ) as http,
        ):
            auditors = await http.get("/auditors")
            ready = await eventually(lambda: http.get("/ready"), lambda r: r.status_code == 200)

    assert (auditors.status_code, auditors.json()) == (200, [])
    assert ready.json()["checks"]["auditors"] == (
        "ok: empty: no auditors configured; add them with POST /auditors"
        " (EARLYHELP_SAMPLE_DATA is off)"
    )
    assert any(
        record.levelno == logging.WARNING and "no auditors configured" in record.getMessage()
        for record in caplog.records
    )


async def test_the_ready_check_counts_the_auditors(service: AuditService) -> None:
    await service.add_auditor("hos-northvale", "northvale", None)
    await service.add_auditor("hos-eastmere", "eastmere", None)

    ready = await service.http.get("/ready")

    assert ready.json()["checks"]["auditors"] == "ok: 2 auditors"


async def test_auditors_are_created_changed_and_deactivated_with_specific_errors(
    service: AuditService,
) -> None:
    await service.add_auditor("tm-northvale-central", "northvale", "northvale-central")

    no_team = await service.http.post(
        "/auditors", json={"name": "A", "role": "team_manager", "district": "northvale"}
    )
    duplicate = await service.http.post(
        "/auditors",
        json={
            "id": "tm-northvale-central",
            "name": "B",
            "role": "head_of_service",
            "district": "northvale",
        },
    )
    bad_role = await service.http.post(
        "/auditors", json={"name": "C", "role": "director", "district": "northvale"}
    )
    changed = await service.http.patch(
        "/auditors/tm-northvale-central", json={"audits_per_month": 2}
    )
    deactivated = await service.http.post("/auditors/tm-northvale-central/deactivation")
    unknown = await service.http.post("/auditors/nobody/deactivation")

    assert (no_team.status_code, no_team.json()["problems"][0]["field"]) == (422, "team_id")
    assert (duplicate.status_code, duplicate.json()["problems"][0]["code"]) == (
        409,
        "auditor_exists",
    )
    assert (bad_role.status_code, bad_role.json()["problems"][0]["field"]) == (422, "role")
    assert changed.json()["audits_per_month"] == 2
    assert deactivated.json()["active"] is False
    assert deactivated.json()["audits_per_month"] == 0
    assert unknown.status_code == 404
    listed = (await service.http.get("/auditors", params={"active": "false"})).json()
    assert [auditor["id"] for auditor in listed] == ["tm-northvale-central"]
    await service.allocate(allocation(unique("case"), "northvale", "northvale-north"))
    assert (await service.draw("2030-06")).json()["new_audit_ids"] == []


# ---------------------------------------------------------------------------------------------
# Submissions


async def one_assigned_audit(service: AuditService, month: str = "2030-10") -> dict[str, Any]:
    await service.allocate(allocation(unique("case"), "northvale", "northvale-north", level=3))
    await service.add_auditor("tm-northvale-south", "northvale", "northvale-south")
    assert (await service.draw(month, seed=3)).status_code == 201
    [audit] = await service.audits(month=month)
    return audit


async def test_only_the_assigned_auditor_completes_an_audit_once_and_it_is_published_once(
    service: AuditService,
) -> None:
    audit = await one_assigned_audit(service)
    audit_id, auditor_id = audit["id"], audit["auditor_id"]
    await service.add_auditor("tm-eastmere-town", "eastmere", "eastmere-town")

    unknown = await service.complete("aud-nope", auditor_id)
    nobody = await service.http.post(
        f"/audits/{audit_id}/completion", json={"scores": ALL_GOOD}, headers={"authorization": ""}
    )
    someone_else = await service.complete(audit_id, "tm-eastmere-town")
    mismatch = await service.complete(audit_id, auditor_id, auditor_id="tm-eastmere-town")
    scores = {**ALL_GOOD, "childs_voice": "good", "plan_quality": "great"}
    del scores["voice_of_the_child"]
    invalid = await service.complete(audit_id, auditor_id, scores=scores, overall_grade="meh")
    not_a_mapping = await service.complete(audit_id, auditor_id, scores=["good"])

    assert (unknown.status_code, unknown.json()["problems"][0]["code"]) == (404, "unknown_audit")
    assert (nobody.status_code, nobody.json()["detail"]) == (
        401,
        "sign in: send Authorization: Bearer <token>",
    )
    assert (someone_else.status_code, someone_else.json()["problems"][0]["code"]) == (
        403,
        "not_assigned_auditor",
    )
    assert (mismatch.status_code, mismatch.json()["problems"][0]["code"]) == (
        403,
        "auditor_mismatch",
    )
    assert invalid.status_code == 422
    assert {(p["field"], p["code"]) for p in invalid.json()["problems"]} == {
        ("scores.voice_of_the_child", "missing_standard"),
        ("scores.childs_voice", "unknown_standard"),
        ("scores.plan_quality", "invalid_grade"),
        ("overall_grade", "invalid_grade"),
    }
    assert (not_a_mapping.status_code, not_a_mapping.json()["problems"][0]["field"]) == (
        422,
        "scores",
    )
    assert (await service.http.get(f"/audits/{audit_id}")).json()["status"] == "overdue"

    scores = {
        **ALL_GOOD,
        "plan_quality": "requires_improvement",
        "voice_of_the_child": "outstanding",
    }
    completed = await service.complete(
        audit_id, auditor_id, scores=scores, learning_points=["Review the plan monthly."]
    )
    twice = await service.complete(audit_id, auditor_id)

    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"
    assert completed.json()["overall_grade"] == "good"
    assert (twice.status_code, twice.json()["problems"][0]["code"]) == (409, "already_completed")

    async def published() -> list[AuditCompleted]:
        return [e for e in await service.completed.events() if e.audit_id == audit_id]

    [event] = await eventually(published, bool)
    assert event.case_id == audit["case_id"]
    assert event.auditor_id == auditor_id
    assert event.auditor_role == "team_manager"
    assert (event.district, event.team_id, event.level_of_need) == (
        "northvale",
        "northvale-north",
        LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
    )
    assert event.month == "2030-10"
    assert event.due_by == datetime(2030, 11, 1, tzinfo=UTC)
    assert event.completed_at == START
    assert {s.standard: s.grade.value for s in event.scores} == scores
    assert event.learning_points == ["Review the plan monthly."]
    # Published once: the outbox holds one record for it, all sent, and no second appears.
    outbox = await service.db["outbox"].find({"_id": {"$regex": f"{audit_id}.completed"}}).to_list()
    assert len(outbox) == 1
    await eventually(
        lambda: service.db["outbox"].count_documents({"sent_at": None}), lambda n: n == 0
    )
    assert len(await published()) == 1


# ---------------------------------------------------------------------------------------------
# Redelivery and order


async def test_a_redelivered_or_late_allocation_changes_nothing(service: AuditService) -> None:
    case_id = unique("case")
    queued = allocation(
        case_id,
        "eastmere",
        "eastmere-coast",
        level=3,
        at=datetime(2030, 3, 1, tzinfo=UTC),
        status=AllocationStatus.QUEUED,
    )
    first = allocation(
        case_id,
        "eastmere",
        "eastmere-coast",
        level=3,
        at=datetime(2030, 3, 4, tzinfo=UTC),
        worker_id="w-1",
    )
    moved = allocation(
        case_id,
        "eastmere",
        "eastmere-town",
        level=2,
        at=datetime(2030, 5, 4, tzinfo=UTC),
        worker_id="w-9",
    )
    moved_bytes = await service.publish(moved)
    await service.publish_raw(moved, moved_bytes)  # the same event delivered again
    first_bytes = await service.publish(first)
    queued_bytes = await service.publish(queued)  # arrives last, happened first
    queued_again = await service.publish(queued)
    await service.publish_raw(queued, queued_again)
    distinct = {
        read_envelope(raw).id for raw in (moved_bytes, first_bytes, queued_bytes, queued_again)
    }
    sentinel = unique("case")
    await service.allocate(allocation(sentinel, "eastmere", "eastmere-coast"))

    async def case_document() -> dict[str, Any] | None:
        return await service.db["cases"].find_one({"_id": case_id})

    found = await eventually(
        case_document,
        lambda doc: doc is not None and doc.get("first_allocated_at") is not None,
    )
    assert found is not None
    assert (found["team_id"], found["worker_id"], found["level_of_need"]) == (
        "eastmere-town",
        "w-9",
        2,
    )
    assert found["first_allocated_at"] == datetime(2030, 3, 4, tzinfo=UTC)

    # Moved, first, and two distinct queued events: the duplicates are absorbed. The case can
    # show its final state before the last of them is recorded, so wait for all four.
    async def recorded() -> set[str]:
        found = service.db["processed_events"].find({"type": "case-allocated"}, {"_id": 1})
        return {document["_id"].rsplit("|", 1)[-1] async for document in found} & distinct

    assert await eventually(recorded, lambda ids: ids == distinct) == distinct


# ---------------------------------------------------------------------------------------------
# Compliance


async def test_compliance_counts_assigned_completed_and_overdue_and_grades_by_district(
    service: AuditService,
) -> None:
    await service.allocate(
        allocation(unique("case"), "northvale", "northvale-north"),
        allocation(unique("case"), "southford", "southford-west"),
        allocation(unique("case"), "westbrook", "westbrook-rural", level=3),
    )
    for auditor_id, district in (
        ("hos-northvale", "northvale"),
        ("hos-southford", "southford"),
        ("hos-westbrook", "westbrook"),
    ):
        await service.add_auditor(auditor_id, district, None)
    await service.draw("2030-12", seed=11)
    audits = await service.audits(month="2030-12")
    done = next(a for a in audits if a["auditor_id"] == "hos-northvale")
    scores = {**ALL_GOOD, "management_oversight": "inadequate"}
    completed = await service.complete(done["id"], "hos-northvale", scores=scores)
    assert completed.json()["overall_grade"] == "inadequate"

    report = (await service.http.get("/audits/compliance", params={"month": "2030-12"})).json()

    rows = {row["auditor_id"]: row for row in report["auditors"]}
    assert {
        key: (row["assigned"], row["completed"], row["overdue"]) for key, row in rows.items()
    } == {
        "hos-northvale": (1, 1, 0),
        "hos-southford": (1, 0, 1),
        "hos-westbrook": (1, 0, 1),
    }
    assert (report["assigned"], report["completed"], report["overdue"]) == (3, 1, 2)
    [district] = report["districts"]
    assert district["district"] == done["district"]
    assert district["overall"]["inadequate"] == 1
    assert district["by_standard"]["management_oversight"] == {
        "outstanding": 0,
        "good": 0,
        "requires_improvement": 0,
        "inadequate": 1,
    }
    overdue = await service.audits(month="2030-12", status="overdue")
    assert {a["auditor_id"] for a in overdue} == {"hos-southford", "hos-westbrook"}

    # The current month's audits (of other cases) are not overdue until the month is over.
    await service.allocate(
        *(allocation(unique("case"), "eastmere", "eastmere-coast") for _ in range(3))
    )
    await service.draw("2031-01", seed=11)
    current = (await service.http.get("/audits/compliance", params={"month": "2031-01"})).json()
    assert (current["assigned"], current["overdue"]) == (3, 0)
    service.clock.now = datetime(2031, 2, 1, tzinfo=UTC)
    later = (await service.http.get("/audits/compliance", params={"month": "2031-01"})).json()
    assert (later["assigned"], later["overdue"]) == (3, 3)

    bad_month = await service.http.get("/audits/compliance", params={"month": "2030-13"})
    assert (bad_month.status_code, bad_month.json()["problems"][0]["field"]) == (422, "month")
