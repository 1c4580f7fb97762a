"""The front door over the real broker and database: HTTP and Kafka intake, every route,
every rejection reason, consent, duplicates, family matching, re-referrals and screening."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.referral.app import create_app
from services.referral.domain import (
    CIN_REFERRAL_SOURCES,
    ROUTE_CATALOGUE,
    age_on,
    referral_id_for,
)
from services.referral.handlers import (
    MAX_SUBMISSION_BYTES,
    Outcome,
    Rejected,
    lookups_for,
    receive_record,
)
from services.referral.handlers import FrontDoor as Configuration
from services.referral.ports import Accepted
from services.referral.sample import load_sample_directory
from services.referral.settings import ReferralSettings
from services.referral.store import MongoReferralStore
from shared.clock import utc_now
from shared.consumer import Delivered, Record, read_record
from shared.events import (
    PLATFORM_EVENTS,
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    LevelOfNeed,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    ScreeningDecision,
)
from shared.mongo import Database, Session, create_mongo_client, in_transaction
from shared.outbox import Outbox
from tests.auth import CASEWORKER, partner_key
from tests.conftest import Infra, Namespace
from tests.factories import MATCH_KEYS
from tests.support import TopicReader, eventually, partner_submission, produce, service_event

pytestmark = pytest.mark.infra

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "referral.json").read_text()
)
PARTNER = "northvale-primary"


@dataclass
class FrontDoor:
    """The referral service running in this process, with a way in and ways to look."""

    infra: Infra
    namespace: Namespace
    http: httpx.AsyncClient
    db: Database
    received: TopicReader
    rejected: TopicReader
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    async def post(self, document: Any) -> httpx.Response:
        """As the partner the document names would send it, with that partner's own key."""
        claimed = document.get("partner_id") if isinstance(document, dict) else None
        partner = claimed if isinstance(claimed, str) and claimed else PARTNER
        if partner not in self.keys:
            self.keys[partner] = await partner_key(self.http, partner)
        return await self.http.post("/referrals", json=document, headers=self.keys[partner])

    async def publish(self, *values: bytes, key: bytes | None = None) -> None:
        await produce(
            self.infra.kafka_bootstrap_servers,
            self.namespace.topic("referral-submitted"),
            list(values),
            key=key,
        )

    async def publish_event(self, data: EventData) -> None:
        await produce(
            self.infra.kafka_bootstrap_servers,
            self.namespace.topic(data.event_type),
            [_envelope(data)],
            key=(subject.encode() if (subject := data.event_subject()) else None),
        )

    async def received_for(self, referral_id: str) -> list[ReferralReceived]:
        return [event for event in await self.received.events() if event.referral_id == referral_id]


@pytest.fixture(scope="module")
async def front_door(infra: Infra) -> AsyncIterator[FrontDoor]:
    """One referral service for the module: a consumer group join costs seconds."""
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"r{token}-", databases=f"r{token}_")
    settings = namespace.settings(ReferralSettings, infra)
    app = create_app(settings)
    mongo = create_mongo_client(infra.mongodb_uri, app_name="referral-tests")
    readers = {
        model: TopicReader(infra.kafka_bootstrap_servers, namespace.topic(model.event_type), model)
        for model in (ReferralReceived, ReferralRejected)
    }
    async with app.router.lifespan_context(app), _client(app) as http:
        for reader in readers.values():
            await reader.start()
        try:
            yield FrontDoor(
                infra,
                namespace,
                http,
                mongo[settings.database_name],
                readers[ReferralReceived],
                readers[ReferralRejected],
            )
        finally:
            for reader in readers.values():
                await reader.stop()
            await mongo.close()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://referral",
        timeout=30,
        headers=CASEWORKER,
    )


def request(**changes: Any) -> dict[str, Any]:
    return {**FIXTURE, "submission_id": f"s-{uuid.uuid4().hex[:12]}", **changes}


def child(family_name: str, born: str, **identifiers: str) -> dict[str, Any]:
    return {
        "given_name": "Sam",
        "family_name": family_name,
        "date_of_birth": born,
        "gender": "not_known",
        **identifiers,
    }


def at(postcode: str) -> dict[str, str]:
    return {"line1": "1 High Street", "postcode": postcode}


def submitted_event(data: Any, *, event_id: str | None = None) -> bytes:
    return partner_submission(data, partner_id="northvale-primary", event_id=event_id)


def _envelope(data: EventData) -> bytes:
    return service_event(data, service="allocation", correlation_id=str(uuid.uuid4()))


async def accepted(door: FrontDoor, document: dict[str, Any]) -> dict[str, Any]:
    response = await door.post(document)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def one_received(door: FrontDoor, referral_id: str) -> ReferralReceived:
    [event] = await eventually(lambda: door.received_for(referral_id), bool)
    return event


# ---------------------------------------------------------------------------------------------
# Routes


async def test_every_route_is_accepted_and_counted_under_its_census_code(
    front_door: FrontDoor,
) -> None:
    routes = (await front_door.http.get("/routes")).json()
    assert {entry["route"]: entry["referral_source"] for entry in routes} == {
        route.id: route.referral_source for route in ROUTE_CATALOGUE
    }
    assert all(
        entry["referral_source_description"] == CIN_REFERRAL_SOURCES[entry["referral_source"]]
        for entry in routes
    )
    answers = {}
    for route in ROUTE_CATALOGUE:
        extra = (
            {"social_care_case_reference": "CSC-1"} if route.id == "social_care_step_down" else {}
        )
        answers[route.id] = await accepted(front_door, request(route=route.id, **extra))

    for route in ROUTE_CATALOGUE:
        event = await one_received(front_door, answers[route.id]["referral_id"])
        assert (event.route, event.referral_source) == (route.id, route.referral_source)
    assert len(ROUTE_CATALOGUE) >= 30


async def test_an_unknown_route_is_rejected_with_the_list_of_valid_routes(
    front_door: FrontDoor,
) -> None:
    response = await front_door.post(request(route="carrier_pigeon"))

    assert response.status_code == 422
    [reason] = response.json()["problems"]
    assert (reason["field"], reason["code"]) == ("route", "unknown_route")
    assert all(route.id in reason["message"] for route in ROUTE_CATALOGUE)


# ---------------------------------------------------------------------------------------------
# Rejections

NO_CONSENT = {"given": False}
OVERRIDE = {
    "given": False,
    "safeguarding_override": {
        "lawful_basis": "Children Act 1989 s.47: risk of significant harm",
        "recorded_by": "Front door team manager",
    },
}


def without(name: str) -> dict[str, Any]:
    document = request()
    del document[name]
    return document


REJECTIONS: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("missing referrer", without("referrer"), {("referrer", "missing")}),
    ("level of need not 1-4", request(level_of_need=5), {("level_of_need", "enum")}),
    ("level of need a word", request(level_of_need="high"), {("level_of_need", "enum")}),
    ("no children", request(children=[]), {("children", "too_short")}),
    ("unknown need", request(needs=["happiness"]), {("needs.0", "enum")}),
    ("misspelt field", request(consnet=True), {("consnet", "extra_forbidden")}),
    (
        "impossible date",
        request(children=[child("Hassan", "2016-02-30")]),
        {("children.0.date_of_birth", "date_from_datetime_parsing")},
    ),
    ("unknown route", request(route="carrier_pigeon"), {("route", "unknown_route")}),
    ("not a postcode", request(address=at("NOT CODE")), {("address.postcode", "invalid_postcode")}),
    ("outside the county", request(address=at("SW1A 2AA")), {("address.postcode", "outside_area")}),
    ("no consent", request(consent=NO_CONSENT), {("consent", "no_consent")}),
    (
        "consent without who and when",
        request(consent={"given": True}),
        {("consent", "consent_incomplete")},
    ),
    (
        "step-down without reference",
        request(route="social_care_step_down"),
        {("social_care_case_reference", "missing")},
    ),
    (
        "open to social care without reference",
        request(open_to_social_care=True),
        {("social_care_case_reference", "missing")},
    ),
    (
        "bad UPN",
        request(children=[child("Hassan", "2016-04-12", upn="B123456789012")]),
        {("children.0.upn", "invalid_upn")},
    ),
    (
        "bad NHS number",
        request(children=[child("Hassan", "2016-04-12", nhs_number="9434765918")]),
        {("children.0.nhs_number", "invalid_nhs_number")},
    ),
    (
        "born years ahead",
        request(children=[child("Hassan", "2031-01-01")]),
        {("children.0.date_of_birth", "date_of_birth_in_future")},
    ),
    (
        "older than 25",
        request(children=[child("Hassan", "1980-01-01")]),
        {("children.0.date_of_birth", "too_old")},
    ),
    (
        "several problems at once",
        request(route="carrier_pigeon", consent=NO_CONSENT, address=at("SW1A 2AA")),
        {
            ("route", "unknown_route"),
            ("address.postcode", "outside_area"),
            ("consent", "no_consent"),
        },
    ),
]


async def test_each_rejection_reason_is_answered_stored_and_published(
    front_door: FrontDoor,
) -> None:
    answers = {}
    for name, document, expected in REJECTIONS:
        response = await front_door.post(document)
        assert response.status_code == 422, name
        assert response.headers["content-type"] == "application/problem+json", name
        answer = response.json()
        assert (answer["type"], answer["status"]) == ("/problems/referral-rejected", 422), name
        assert {(r["field"], r["code"]) for r in answer["problems"]} == expected, name
        assert all(reason["message"] for reason in answer["problems"]), name
        answers[answer["rejection_id"]] = (name, document)

    def published(events: list[ReferralRejected]) -> dict[str, ReferralRejected]:
        return {event.rejection_id: event for event in events if event.rejection_id in answers}

    events = await eventually(
        lambda: _as_rejected(front_door), lambda found: len(published(found)) == len(answers)
    )
    for rejection_id, event in published(events).items():
        name, document = answers[rejection_id]
        assert (event.partner_id, event.submission_id) == (PARTNER, document["submission_id"])
        stored = (await front_door.http.get(f"/rejections/{rejection_id}")).json()
        assert "submission_json" in stored, stored
        assert json.loads(stored["submission_json"]) == document, name
        assert [reason["code"] for reason in stored["reasons"]] == [r.code for r in event.reasons]


async def _as_rejected(door: FrontDoor) -> list[ReferralRejected]:
    return list(await door.rejected.events())


async def test_a_body_that_is_not_json_gets_a_422_and_is_kept(front_door: FrontDoor) -> None:
    key = await partner_key(front_door.http, PARTNER)
    response = await front_door.http.post(
        "/referrals",
        content=b"\xff{partner_id: oops",
        headers={"content-type": "application/json", **key},
    )

    assert response.status_code == 422
    answer = response.json()
    assert [reason["code"] for reason in answer["problems"]] == ["unreadable"]
    stored = (await front_door.http.get(f"/rejections/{answer['rejection_id']}")).json()
    assert base64.b64decode(stored["raw_base64"]) == b"\xff{partner_id: oops"


# ---------------------------------------------------------------------------------------------
# Consent


async def test_a_safeguarding_override_is_accepted_without_consent_and_says_so(
    front_door: FrontDoor,
) -> None:
    answer = await accepted(front_door, request(consent=OVERRIDE))

    event = await one_received(front_door, answer["referral_id"])
    assert event.without_consent is True
    stored = (await front_door.http.get(f"/referrals/{answer['referral_id']}")).json()
    assert stored["without_consent"] is True


# ---------------------------------------------------------------------------------------------
# Duplicates


async def test_the_same_event_twice_on_kafka_gives_one_referral_received(
    front_door: FrontDoor,
) -> None:
    document = request()
    same = submitted_event(document, event_id="partner-event-1")
    sentinel = request()
    await front_door.publish(same, same, submitted_event(sentinel), key=b"northvale-primary")

    # The sentinel's event is staged after the duplicate's, and both are for one family.
    await one_received(front_door, _referral_id(sentinel))
    assert len(await _referrals_of(front_door, document["submission_id"])) == 1
    assert len(await front_door.received_for(_referral_id(document))) == 1


async def test_http_then_kafka_with_the_same_submission_id_is_one_referral(
    front_door: FrontDoor,
) -> None:
    document = request()
    first = await accepted(front_door, document)
    again = await accepted(front_door, document)
    sentinel = request()
    await front_door.publish(
        submitted_event(document), submitted_event(sentinel), key=b"northvale-primary"
    )

    await one_received(front_door, _referral_id(sentinel))
    assert again["referral_id"] == first["referral_id"]
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert len(await front_door.received_for(first["referral_id"])) == 1
    assert len(await _referrals_of(front_door, document["submission_id"])) == 1


async def _referrals_of(door: FrontDoor, submission_id: str) -> list[dict[str, Any]]:
    return await door.db["referrals"].find({"submission_id": submission_id}).to_list()


def _referral_id(document: dict[str, Any]) -> str:
    return referral_id_for(document["partner_id"], document["submission_id"])


# ---------------------------------------------------------------------------------------------
# Family matching


async def family_of(door: FrontDoor, document: dict[str, Any]) -> tuple[str, str]:
    answer = await accepted(door, document)
    return answer["family_id"], answer["family_match"]


async def test_a_family_is_matched_by_upn_then_nhs_number_then_surname_birth_date_postcode(
    front_door: FrontDoor,
) -> None:
    surname = f"Okafor{uuid.uuid4().hex[:6]}"
    first = request(
        children=[child(surname, "2015-03-03", upn="H801200001001", nhs_number="9434765919")],
        address=at("WX8 1AA"),
    )
    family_id, rule = await family_of(front_door, first)
    assert rule == "new_family"

    by_upn = request(children=[child("Different", "2015-03-03", upn="H801200001001")])
    by_nhs = request(children=[child("Different", "2015-03-03", nhs_number="943 476 5919")])
    by_name = request(children=[child(surname.upper(), "2015-03-03")], address=at("wx81aa"))
    assert await family_of(front_door, by_upn) == (family_id, "upn")
    assert await family_of(front_door, by_nhs) == (family_id, "nhs_number")
    assert await family_of(front_door, by_name) == (family_id, "surname_dob_postcode")

    elsewhere = request(children=[child(surname, "2015-03-03")], address=at("WX16 1AA"))
    other_family, rule = await family_of(front_door, elsewhere)
    assert other_family != family_id
    assert rule == "new_family"
    stored = (await front_door.http.get(f"/referrals/{_referral_id(by_upn)}")).json()
    assert stored["family_match"] == "upn"
    assert stored["matched_existing_family"] is True
    assert stored["family_id"] == family_id


async def test_siblings_in_one_request_are_one_family_and_later_requests_find_it(
    front_door: FrontDoor,
) -> None:
    surname = f"Nowak{uuid.uuid4().hex[:6]}"
    siblings = request(
        children=[child(surname, "2012-01-01"), child(surname, "2018-08-08")],
        address=at("WX2 2BB"),
    )
    family_id, _ = await family_of(front_door, siblings)

    younger_only = request(children=[child(surname, "2018-08-08")], address=at("WX2 2BB"))

    assert await family_of(front_door, younger_only) == (family_id, "surname_dob_postcode")
    event = await one_received(front_door, _referral_id(siblings))
    assert event.child_count == 2
    assert event.family_id == family_id


async def test_a_batch_matches_and_answers_as_one_at_a_time_would(
    front_door: FrontDoor, infra: Infra
) -> None:
    """Submissions taken together (as a poll of the topic is) see each other's effects:
    a sibling's later request joins the family an earlier one created, a resend finds the
    referral accepted just before it, an invalid one is rejected; all in one transaction."""
    surname = f"Okafor{uuid.uuid4().hex[:6]}"
    siblings = request(
        children=[child(surname, "2013-03-03"), child(surname, "2019-09-09")],
        address=at("WX3 3CC"),
    )
    younger = request(children=[child(surname, "2019-09-09")], address=at("WX3 3CC"))
    invalid = request(route="carrier-pigeon")
    messages = [
        submitted_event(siblings),
        submitted_event(younger),
        submitted_event(siblings),  # a resend: another event, the same submission
        submitted_event(invalid),
    ]
    mongo = create_mongo_client(infra.mongodb_uri, app_name="referral-batch-test")
    db = mongo[front_door.db.name]
    outbox = Outbox(
        db, source="/earlyhelp/referral", topic_namespace=front_door.namespace.topics, clock=utc_now
    )
    store = MongoReferralStore(mongo, db, outbox)
    records = [
        read_record(
            Record("referral-submitted", 0, offset, None, raw, {}),
            ReferralSubmitted,
            PLATFORM_EVENTS,
            max_bytes=MAX_SUBMISSION_BYTES,
        )
        for offset, raw in enumerate(messages)
    ]

    async def receive_all(session: Session) -> list[Outcome]:
        batch = store.batch(session)
        await batch.prefetch(
            [lookups_for(item.event, MATCH_KEYS) for item in records if isinstance(item, Delivered)]
        )
        outcomes = [
            await receive_record(
                item, store=batch, now=utc_now(), front_door=Configuration.sample(MATCH_KEYS)
            )
            for item in records
        ]
        await batch.flush()
        return outcomes

    try:
        first, second, resent, rejected = await in_transaction(mongo, receive_all)
    finally:
        await mongo.close()
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert isinstance(resent, Accepted)
    assert isinstance(rejected, Rejected)
    assert (first.duplicate, second.duplicate, resent.duplicate) == (False, False, True)
    assert second.family_id == first.family_id
    assert second.family_match == "surname_dob_postcode"
    assert resent.referral_id == first.referral_id
    assert [reason.code for reason in rejected.reasons] == ["unknown_route"]
    stored = await front_door.db["referrals"].find({"family_id": first.family_id}).to_list()
    assert sorted(document["_id"] for document in stored) == sorted(
        [first.referral_id, second.referral_id]
    )
    event = await one_received(front_door, second.referral_id)
    assert event.family_id == first.family_id


# ---------------------------------------------------------------------------------------------
# Open cases and re-referrals, learnt from case-allocated and case-closed


def allocated(family_id: str, case_id: str) -> CaseAllocated:
    now = datetime.now(UTC)
    return CaseAllocated(
        case_id=case_id,
        family_id=family_id,
        referral_id="ref-x",
        district="northvale",
        team_id="northvale-locality",
        worker_id="w-1",
        status=AllocationStatus.ALLOCATED,
        kind=AllocationKind.STANDARD,
        level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY,
        referral_received_at=now,
        allocated_at=now,
    )


def closed(family_id: str, case_id: str, closed_at: datetime) -> CaseClosed:
    return CaseClosed(
        case_id=case_id,
        family_id=family_id,
        district="northvale",
        team_id="northvale-locality",
        worker_id="w-1",
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=closed_at,
    )


async def test_an_open_case_is_flagged_and_a_request_after_closure_is_a_re_referral(
    front_door: FrontDoor,
) -> None:
    surname = f"Reid{uuid.uuid4().hex[:6]}"
    family = {"children": [child(surname, "2014-04-04")], "address": at("WX9 9ZZ")}
    family_id, _ = await family_of(front_door, request(**family))
    families = front_door.db["families"]

    await front_door.publish_event(allocated(family_id, "case-open-1"))
    await eventually(lambda: families.find_one({"_id": family_id}), _has_open("case-open-1"))
    while_open = await accepted(front_door, request(**family))

    await front_door.publish_event(
        closed(family_id, "case-open-1", datetime.now(UTC) - timedelta(days=40))
    )
    await eventually(lambda: families.find_one({"_id": family_id}), _has_no_open_case)
    after_closure = await accepted(front_door, request(**family))

    assert (while_open["family_has_open_case"], while_open["is_re_referral"]) == (True, False)
    assert (after_closure["family_has_open_case"], after_closure["is_re_referral"]) == (
        False,
        True,
    )
    event = await one_received(front_door, after_closure["referral_id"])
    assert event.is_re_referral is True
    open_event = await one_received(front_door, while_open["referral_id"])
    assert open_event.family_has_open_case is True


async def test_a_closure_more_than_twelve_months_ago_is_not_a_re_referral(
    front_door: FrontDoor,
) -> None:
    surname = f"Ward{uuid.uuid4().hex[:6]}"
    family = {"children": [child(surname, "2011-11-11")], "address": at("WX14 1CC")}
    family_id, _ = await family_of(front_door, request(**family))
    families = front_door.db["families"]

    # Closed before it was seen allocated: the closure wins, whatever order they arrive in.
    await front_door.publish_event(
        closed(family_id, "case-old-1", datetime.now(UTC) - timedelta(days=400))
    )
    await eventually(lambda: families.find_one({"_id": family_id}), _closed("case-old-1"))
    await front_door.publish_event(allocated(family_id, "case-old-1"))
    later = await accepted(front_door, request(**family))

    assert (later["family_has_open_case"], later["is_re_referral"]) == (False, False)


def _has_open(case_id: str) -> Any:
    return lambda family: family is not None and case_id in family["open_cases"]


def _has_no_open_case(family: dict[str, Any] | None) -> bool:
    return family is not None and not family["open_cases"] and bool(family["closed_cases"])


def _closed(case_id: str) -> Any:
    return lambda family: family is not None and case_id in family["closed_cases"]


# ---------------------------------------------------------------------------------------------
# Screening


@pytest.mark.parametrize(
    ("changes", "decision", "reason"),
    [
        ({"level_of_need": 1}, ScreeningDecision.SIGNPOST, "level 1"),
        ({"level_of_need": 2}, ScreeningDecision.EARLY_HELP, "level 2"),
        ({"level_of_need": 3}, ScreeningDecision.EARLY_HELP, "level 3"),
        ({"level_of_need": 4}, ScreeningDecision.STEP_UP, "level 4"),
        ({"level_of_need": 2, "safeguarding_concern": True}, ScreeningDecision.STEP_UP, "safeg"),
    ],
)
async def test_each_screening_outcome_is_on_the_event_with_its_reason_and_rules_version(
    front_door: FrontDoor,
    changes: dict[str, Any],
    decision: ScreeningDecision,
    reason: str,
) -> None:
    answer = await accepted(front_door, request(**changes))

    event = await one_received(front_door, answer["referral_id"])
    assert event.decision is decision
    assert answer["decision"] == decision.value
    assert event.screening_reason is not None
    assert reason in event.screening_reason
    assert event.screening_rules_version
    assert bool(event.signposted_services) is (decision is ScreeningDecision.SIGNPOST)
    assert [service["id"] for service in answer["signposted_services"]] == (
        event.signposted_services
    )


async def test_step_downs_and_co_working_requests_carry_their_social_care_references(
    front_door: FrontDoor,
) -> None:
    step_down = await accepted(
        front_door,
        request(route="social_care_step_down", social_care_case_reference="CSC-2026-1187"),
    )
    co_working = await accepted(
        front_door, request(open_to_social_care=True, social_care_case_reference="CSC-2026-0042")
    )

    stepped_down = await one_received(front_door, step_down["referral_id"])
    co_worked = await one_received(front_door, co_working["referral_id"])
    assert (stepped_down.is_step_down, stepped_down.social_care_case_reference) == (
        True,
        "CSC-2026-1187",
    )
    assert (co_worked.open_to_social_care, co_worked.social_care_case_reference) == (
        True,
        "CSC-2026-0042",
    )


async def test_referral_received_carries_no_names_dates_of_birth_or_identifiers(
    front_door: FrontDoor,
) -> None:
    document = request(children=[child("Zebedee", "2016-04-12", upn="A123456789012")])
    answer = await accepted(front_door, document)

    event = await one_received(front_door, answer["referral_id"])
    wire = event.model_dump_json()
    for personal in ("Zebedee", "2016-04-12", "A123456789012", "Mill Lane", "WX3 4AB"):
        assert personal not in wire
    assert event.child_ages == [age_on(date(2016, 4, 12), event.received_at.date())]
    assert event.district == "northvale"


# ---------------------------------------------------------------------------------------------
# Malformed messages on referral-submitted


async def test_malformed_messages_are_rejected_with_their_bytes_kept_and_the_next_is_processed(
    front_door: FrontDoor,
) -> None:
    broken = [b"{not json at all", b"\xff\xfe\x00invalid utf-8", b'{"specversion": "0.3"}']
    good = request()
    await front_door.publish(*broken, submitted_event(good), key=b"one-partition")

    await one_received(front_door, _referral_id(good))
    rejections = await eventually(
        lambda: front_door.db["rejections"].find({"raw_base64": {"$exists": True}}).to_list(),
        lambda found: {base64.b64decode(item["raw_base64"]) for item in found} >= set(broken),
    )
    for rejection in rejections:
        if base64.b64decode(rejection["raw_base64"]) in broken:
            assert [reason["code"] for reason in rejection["reasons"]] == ["unreadable"]
    ids = {item["_id"] for item in rejections}
    events = await eventually(
        lambda: _as_rejected(front_door),
        lambda found: ids <= {event.rejection_id for event in found},
    )
    assert all(
        event.reasons[0].code == "unreadable" for event in events if event.rejection_id in ids
    )


# ---------------------------------------------------------------------------------------------
# Directory and contract documents


async def test_the_directory_is_filtered_by_need_age_and_district(front_door: FrontDoor) -> None:
    response = await front_door.http.get(
        "/directory/services", params={"need": "housing", "age": 8, "district": "eastmere"}
    )

    assert response.status_code == 200
    services = response.json()
    assert services
    for service in services:
        assert "housing" in service["needs"]
        assert "eastmere" in service["service_areas"]
        eligibility = service["eligibility"]
        assert eligibility["minimum_age"] <= 8 <= eligibility["maximum_age"]
    bad = await front_door.http.get("/directory/services", params={"need": "happiness"})
    assert bad.status_code == 422


async def test_the_openapi_document_describes_the_request_with_examples(
    front_door: FrontDoor,
) -> None:
    document = (await front_door.http.get("/openapi.json")).json()

    body = document["paths"]["/referrals"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ReferralSubmitted"}
    assert {"school", "social_care_step_down", "police"} <= set(body["examples"])
    schemas = document["components"]["schemas"]
    submitted = schemas["ReferralSubmitted"]
    assert all("description" in field for field in submitted["properties"].values())
    assert all("description" in field for field in schemas["Child"]["properties"].values())
    responses = document["paths"]["/referrals"]["post"]["responses"]
    assert {"202", "422"} <= set(responses)


async def test_without_sample_data_or_files_the_front_door_starts_empty_and_ready(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"e{token}-", databases=f"e{token}_")
    settings = namespace.settings(ReferralSettings, infra, sample_data=False)
    app = create_app(settings)
    caplog.set_level("WARNING", logger="services.referral.app")
    async with app.router.lifespan_context(app), _client(app) as http:

        async def ready() -> httpx.Response:
            return await http.get("/ready")

        answer = await eventually(ready, lambda response: response.status_code == 200)
        checks = answer.json()["checks"]
        assert checks["postcode_districts"].startswith("ok: empty: ")
        assert "EARLYHELP_POSTCODE_DISTRICTS_FILE" in checks["postcode_districts"]
        assert checks["directory"].startswith("ok: empty: ")
        assert "EARLYHELP_DIRECTORY_FILE" in checks["directory"]
        assert (await http.get("/districts")).json() == {}
        assert (await http.get("/directory/services")).json() == []
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("no postcode table" in message for message in warnings)
    assert any("no directory" in message for message in warnings)


async def test_with_sample_data_ready_says_what_the_front_door_works_from(
    front_door: FrontDoor,
) -> None:
    answer = await eventually(
        lambda: front_door.http.get("/ready"), lambda response: response.status_code == 200
    )
    checks = answer.json()["checks"]
    assert checks["postcode_districts"] == "ok: 20 outward codes in 4 districts"
    assert checks["directory"] == f"ok: {len(load_sample_directory())} services"
