"""Hostile input at the front door over the real broker and database: every request and
record is answered (4xx with reasons, ``referral-rejected`` or ``referral-submitted.dlq``
with its bytes), the service stays up, and good input after it is still processed."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.referral.app import create_app
from services.referral.domain import referral_id_for
from services.referral.handlers import (
    MAX_SUBMISSION_BYTES,
    Origin,
    rejection_id_for,
    rejection_id_of_bytes,
)
from services.referral.settings import ReferralSettings
from shared.events import ReferralReceived, ReferralRejected, UndecodableEvent, read_envelope
from shared.mongo import Database, create_mongo_client
from shared.strict_json import MAX_NESTING, Unreadable, read_json
from tests.auth import CASEWORKER, partner_key
from tests.conftest import Infra, Namespace
from tests.support import TopicReader, eventually, partner_submission

pytestmark = pytest.mark.infra

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "referral.json").read_text()
)
PARTNER = "northvale-primary"


@dataclass
class FrontDoor:
    """The referral service in this process, and ways to feed it and look inside."""

    infra: Infra
    topic: str
    http: httpx.AsyncClient
    db: Database
    received: TopicReader
    rejected: TopicReader

    async def publish(self, values: list[bytes | None]) -> list[tuple[int, int]]:
        """Send on one partition, in order; returns each record's (partition, offset)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.infra.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=False,
            max_request_size=4 * 1024 * 1024,
        )
        await producer.start()
        try:
            sent = [await producer.send_and_wait(self.topic, value, key=b"one") for value in values]
        finally:
            await producer.stop()
        return [(metadata.partition, metadata.offset) for metadata in sent]


@pytest.fixture(scope="module")
async def front_door(infra: Infra) -> AsyncIterator[FrontDoor]:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"h{token}-", databases=f"h{token}_")
    settings = namespace.settings(ReferralSettings, infra)
    app = create_app(settings)
    mongo = create_mongo_client(infra.mongodb_uri, app_name="hostile-input-tests")
    readers = [
        TopicReader(infra.kafka_bootstrap_servers, namespace.topic(model.event_type), model)
        for model in (ReferralReceived, ReferralRejected)
    ]
    async with app.router.lifespan_context(app), _client(app) as http:
        # Every hostile body comes from a partner with a valid key for every route: what is
        # under test is what the front door does with the bytes, not who may send them.
        http.headers.update(await partner_key(http, FIXTURE["partner_id"]))
        for reader in readers:
            await reader.start()
        try:
            yield FrontDoor(
                infra,
                namespace.topic("referral-submitted"),
                http,
                mongo[settings.database_name],
                *readers,
            )
        finally:
            for reader in readers:
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


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def still_serves(door: FrontDoor) -> None:
    """Healthy, and a good submission after the hostile ones is accepted."""
    assert (await door.http.get("/health")).status_code == 200
    good = await door.http.post("/referrals", json=request())
    assert good.status_code == 202, good.text


# ---------------------------------------------------------------------------------------------
# HTTP

JSON_TYPES = ["application/json", "application/json; charset=utf-8"]
WRONG_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=15,
)
hostile_bodies = st.one_of(
    st.tuples(st.binary(max_size=3_000), st.sampled_from(JSON_TYPES)),
    st.tuples(json_values.map(lambda v: json.dumps(v).encode()), st.sampled_from(JSON_TYPES)),
    st.tuples(st.builds(lambda: json.dumps(request()).encode()), st.sampled_from(WRONG_TYPES)),
    st.tuples(st.integers(MAX_NESTING + 1, 100_000).map(nested), st.sampled_from(JSON_TYPES)),
    st.tuples(
        st.integers(MAX_SUBMISSION_BYTES + 1, 2 * 1024 * 1024).map(lambda size: b" " * size),
        st.sampled_from(JSON_TYPES),
    ),
    st.tuples(
        st.sampled_from(
            [
                b'{"level_of_need": NaN}',
                b'{"partner_id": "a", "partner_id": "b"}',
                b'{"partner_id": "\\ud800"}',
                b"9" * 5_000,
                json.dumps(request(notes="x" * 200_000)).encode(),
            ]
        ),
        st.sampled_from(JSON_TYPES),
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=hostile_bodies)
async def test_every_hostile_body_gets_a_4xx_with_reasons(
    front_door: FrontDoor, body: tuple[bytes, str]
) -> None:
    content, content_type = body

    response = await front_door.http.post(
        "/referrals", content=content, headers={"content-type": content_type}
    )

    answer = response.json()
    claimed = claimed_partner(content, content_type)
    if claimed is not None and claimed != FIXTURE["partner_id"]:
        # A readable body naming another partner than the key's is refused, with the reason.
        assert response.status_code == 403, response.text
        assert answer["detail"] == (
            f"this key belongs to partner {FIXTURE['partner_id']!r}, not {claimed!r}"
        )
        await still_serves(front_door)
        return
    assert answer["problems"], answer
    assert all(reason["code"] and reason["message"] for reason in answer["problems"])
    if content_type in WRONG_TYPES:
        assert response.status_code == 415
    elif len(content) > MAX_SUBMISSION_BYTES:
        assert response.status_code == 413
        assert answer["problems"][0]["code"] == "too_large"
    else:
        assert response.status_code == 422
        stored = await front_door.http.get(f"/rejections/{answer['rejection_id']}")
        assert stored.status_code == 200
    await still_serves(front_door)


def claimed_partner(content: bytes, content_type: str) -> str | None:
    """The partner a body names, when the front door reads that far: JSON, within the
    limit, strictly readable, an object naming one."""
    if content_type in WRONG_TYPES or len(content) > MAX_SUBMISSION_BYTES:
        return None
    try:
        document = read_json(content, max_bytes=MAX_SUBMISSION_BYTES)
    except Unreadable:
        return None
    claimed = document.get("partner_id") if isinstance(document, dict) else None
    return claimed if isinstance(claimed, str) else None


async def test_an_endless_body_is_refused_without_being_read_to_the_end(
    front_door: FrontDoor,
) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 10_000:  # 640 MB if it were all read
            pulled += 1
            yield b" " * 65_536

    response = await front_door.http.post(
        "/referrals", content=endless(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["problems"][0]["code"] == "too_large"
    assert pulled <= MAX_SUBMISSION_BYTES // 65_536 + 2
    await still_serves(front_door)


async def test_the_openapi_document_states_the_size_limit(front_door: FrontDoor) -> None:
    document = (await front_door.http.get("/openapi.json")).json()

    post = document["paths"]["/referrals"]["post"]
    assert f"at most {MAX_SUBMISSION_BYTES} bytes" in post["description"]
    assert {"413", "415", "422"} <= set(post["responses"])
    assert "EARLYHELP_MAX_SUBMISSION_BYTES" in document["info"]["description"]


# ---------------------------------------------------------------------------------------------
# Kafka


def envelope(data: Any, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(partner_submission(data, partner_id=PARTNER))
    return {**document, **changes}


def encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Hostile:
    """A record to publish and the origin its rejection will be answered as."""

    name: str
    value: bytes | None
    envelope_origin: Origin | None = None


def answered_as(record: Hostile) -> str:
    """The rejection a record is answered with: one per request, whatever its delivery.
    A submission's data is its request; bytes that are not one are their own."""
    raw = record.value or b""
    try:
        sent = read_envelope(raw, max_bytes=MAX_SUBMISSION_BYTES)
    except UndecodableEvent:
        return rejection_id_of_bytes(raw)
    if (sent.type, sent.schemaversion) == ("referral-submitted", 1):
        return rejection_id_for(sent.data)
    return rejection_id_of_bytes(raw)


def readable(name: str, document: dict[str, Any]) -> Hostile:
    origin = Origin(document["source"], document["id"], document["correlationid"])
    return Hostile(name, encoded(document), origin)


def hostile_records() -> list[Hostile]:
    bad_data = envelope({"route": 7, "children": "none", "extra": [1, 2]})
    wrong_type = envelope(request(), type="case-closed")
    newer = envelope(request(), schemaversion=2)
    surrogate = encoded(envelope(request())).replace(b'"route": "school"', b'"route": "\\udc00"')
    return [
        Hostile("not json", b"{not json at all"),
        Hostile("invalid utf-8", b'{"partner_id": "\xff\xfe"}'),
        Hostile("empty", b""),
        Hostile("tombstone", None),
        Hostile("one megabyte", encoded(envelope(request(notes="x" * 1_000_000)))),
        Hostile("deeply nested", nested(100_000)),
        Hostile("nested in data", encoded(envelope({"notes": json.loads(nested(200))}))),
        Hostile("data not an object", encoded(envelope(["a", "list"]))),
        Hostile(
            "NaN",
            encoded(envelope(request())).replace(b'"level_of_need": 2', b'"level_of_need": NaN'),
        ),
        Hostile("huge number", b'{"id": ' + b"7" * 5_000 + b"}"),
        Hostile("lone surrogate", surrogate),
        Hostile("no envelope", encoded(request())),
        readable("bad data section", bad_data),
        readable("wrong type", wrong_type),
        readable("newer schema version", newer),
    ]


async def assert_answered(
    door: FrontDoor, hostile: list[Hostile], positions: list[tuple[int, int]]
) -> None:
    """Each record has a stored, published rejection, and none is dead-lettered."""
    assert len(positions) == len(hostile)
    expected = {answered_as(record): record for record in hostile}
    stored = {
        document["_id"]: document
        for document in await door.db["rejections"].find({"_id": {"$in": list(expected)}}).to_list()
    }
    dead = await door.db["dead_letters"].find({"topic": door.topic}).to_list()
    # The front door answers every record itself: nothing is left to the dead letters.
    assert dead == []
    assert set(stored) == set(expected)
    for rejection_id, record in expected.items():
        value = record.value or b""
        document = stored[rejection_id]
        assert document["reasons"], record.name
        assert all(reason["code"] for reason in document["reasons"]), record.name
        if "raw_base64" in document:
            kept = base64.b64decode(document["raw_base64"])
            assert kept == value[: len(kept)], record.name
            assert document["raw_size"] == len(value), record.name
        else:
            assert "submission_json" in document, record.name
    published = await eventually(
        lambda: door.rejected.events(),
        lambda events: set(stored) <= {event.rejection_id for event in events},
    )
    codes = {event.rejection_id: event.reasons[0].code for event in published}
    by_name = {record.name: codes.get(rejection_id) for rejection_id, record in expected.items()}
    assert by_name["one megabyte"] == "too_large"
    assert by_name["deeply nested"] == "too_deep"
    assert by_name["wrong type"] == "unexpected_event_type"
    assert by_name["newer schema version"] == "unsupported_schema_version"


async def test_hostile_records_are_each_answered_and_the_next_good_one_is_received(
    front_door: FrontDoor,
) -> None:
    hostile = hostile_records()
    good = request()

    positions = await front_door.publish(
        [record.value for record in hostile] + [partner_submission(good, partner_id=PARTNER)]
    )

    referral_id = referral_id_for(PARTNER, good["submission_id"])
    await eventually(
        lambda: front_door.received.events(),
        lambda events: referral_id in {event.referral_id for event in events},
    )
    await assert_answered(front_door, hostile, positions[:-1])


kafka_values = st.one_of(
    st.binary(max_size=2_000),
    st.binary(max_size=200).map(lambda raw: raw + b"\xc3"),
    json_values.map(lambda value: encoded(envelope(value))),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(MAX_NESTING + 1, 100_000).map(nested),
)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(kafka_values, min_size=5, max_size=10))
async def test_generated_hostile_records_are_each_answered(
    front_door: FrontDoor, values: list[bytes]
) -> None:
    hostile = [
        readable("generated", json.loads(value))
        if value.startswith(b'{"specversion"') and isinstance(json.loads(value)["data"], dict)
        else Hostile("generated", value)
        for value in values
    ]
    good = request()

    positions = await front_door.publish(
        [record.value for record in hostile] + [partner_submission(good, partner_id=PARTNER)]
    )

    referral_id = referral_id_for(PARTNER, good["submission_id"])
    await eventually(
        lambda: front_door.received.events(),
        lambda events: referral_id in {event.referral_id for event in events},
    )
    await assert_answered_generated(front_door, hostile, positions[:-1])


async def assert_answered_generated(
    door: FrontDoor, hostile: list[Hostile], positions: list[tuple[int, int]]
) -> None:
    assert len(positions) == len(hostile)
    ids = {answered_as(record) for record in hostile}
    found = await door.db["rejections"].find({"_id": {"$in": list(ids)}}).to_list()
    assert {document["_id"] for document in found} == ids
    await eventually(
        lambda: door.rejected.events(),
        lambda events: ids <= {event.rejection_id for event in events},
    )
