"""Dead letters on the real broker and database: kept sealed, listed, replayed and purged by
administrators who never see what they said, read with a reason by caseworkers, and gone
when their time is up."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.allocation.app import create_app
from services.allocation.settings import AllocationSettings
from shared.access_log import ACCESS_LOG
from shared.auth import Role
from shared.dead_letters import DEAD_LETTERS, DeadLetterNotice, Failure
from shared.events import FamilyErased
from shared.kafka import topic_retention_ms
from shared.listing import UNLISTED
from shared.mongo import Database, create_mongo_client
from shared.operations import Operations
from shared.runtime import Runtime
from shared.topics import dead_letter_topic
from tests.auth import ADMIN, as_role
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import eventually, produce, read_topic, service_event, topic_sizes

pytestmark = pytest.mark.infra

SURNAME = "Okafor-Whitfield"
CONSUMED = "earlyhelp_messages_consumed_total"
READ = {**as_role(Role.PRACTITIONER, sub="pat-7"), "x-access-reason": "re-sending a lost case"}


@dataclass
class Service:
    infra: Infra
    namespace: Namespace
    http: httpx.AsyncClient
    db: Database
    runtime: Runtime

    @property
    def topic(self) -> str:
        return self.namespace.topic("referral-received")


@pytest.fixture
async def service(infra: Infra, namespace: Namespace) -> AsyncIterator[Service]:
    settings = namespace.settings(AllocationSettings, infra, sample_data=False)
    app = create_app(settings)
    mongo = create_mongo_client(infra.mongodb_uri, app_name="dead-letter-tests")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://allocation"
        ) as http,
    ):
        try:
            yield Service(infra, namespace, http, mongo[settings.database_name], app.state.runtime)
        finally:
            await mongo.close()


def invalid_referral(family_id: str) -> bytes:
    """A referral-received whose data is wrong, and which quotes a child's surname."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/earlyhelp/referral",
            "type": "referral-received",
            "time": "2026-11-20T10:00:00Z",
            "correlationid": "c-dead",
            "schemaversion": 1,
            "subject": family_id,
            "data": {"family_id": family_id, "district": {"surname": SURNAME}},
        }
    ).encode()


async def dead_letter_of(service: Service, poison: bytes, key: bytes) -> DeadLetterNotice:
    await produce(service.infra.kafka_bootstrap_servers, service.topic, [poison], key=key)
    [record] = await read_topic(
        service.infra.kafka_bootstrap_servers, dead_letter_topic(service.topic), count=1
    )
    assert SURNAME.encode() not in record.value
    return DeadLetterNotice.model_validate_json(record.value)


async def test_a_dead_letter_keeps_nothing_of_what_it_said_in_the_clear(
    service: Service,
) -> None:
    poison = invalid_referral("fam-dl-1")
    notice = await dead_letter_of(service, poison, b"fam-dl-1")

    assert (notice.error_code, notice.family_id, notice.event_type) == (
        "invalid_data",
        "fam-dl-1",
        "referral-received",
    )
    assert "district" in notice.fields
    assert (notice.size, notice.sha256) == (len(poison), hashlib.sha256(poison).hexdigest())
    [stored] = await service.db[DEAD_LETTERS].find().to_list()
    assert SURNAME.encode() not in bytes(stored["sealed"])
    assert SURNAME not in json.dumps(
        {k: v for k, v in stored.items() if k != "sealed"}, default=str
    )
    listed = await service.http.get("/dead-letters", headers=ADMIN)
    assert listed.status_code == 200
    assert [letter["dead_letter_id"] for letter in listed.json()] == [notice.dead_letter_id]
    assert SURNAME not in listed.text


async def test_an_administrator_may_not_read_one_and_a_caseworker_reads_it_with_a_reason(
    service: Service,
) -> None:
    poison = invalid_referral("fam-dl-2")
    notice = await dead_letter_of(service, poison, b"fam-dl-2")
    original = f"/dead-letters/{notice.dead_letter_id}/original"

    as_admin = await service.http.get(original, headers={**ADMIN, "x-access-reason": "curious"})
    without_reason = await service.http.get(original, headers=as_role(Role.PRACTITIONER))
    assert (as_admin.status_code, without_reason.status_code) == (403, 400)
    assert await service.db[ACCESS_LOG].count_documents({}) == 0

    read = await service.http.get(original, headers=READ)

    assert read.status_code == 200, read.text
    assert base64.b64decode(read.json()["value_base64"]) == poison
    assert read.json()["key"] == "fam-dl-2"
    assert read.headers["cache-control"] == "no-store"
    [entry] = await service.db[ACCESS_LOG].find({}, {"_id": 0, "at": 0, **UNLISTED}).to_list()
    assert entry == {
        "sub": "pat-7",
        "role": "practitioner",
        "action": "read_dead_letter",
        "family_id": "fam-dl-2",
        "resource": notice.dead_letter_id,
        "reason": "re-sending a lost case",
    }


async def test_an_operator_replays_and_an_administrator_purges_a_dead_letter(
    service: Service,
) -> None:
    poison = invalid_referral("fam-dl-3")
    notice = await dead_letter_of(service, poison, b"fam-dl-3")
    servers = service.infra.kafka_bootstrap_servers
    operations = Operations(service.runtime.settings, service.runtime.client)

    [replayed] = await operations.replay([notice.dead_letter_id], ["allocation"])

    assert replayed.topic == service.topic
    records = await read_topic(servers, service.topic, count=2)
    assert [record.value for record in records] == [poison, poison]
    assert dict(records[1].headers)["x-replay-of"] == notice.dead_letter_id.encode()
    # Still invalid, so the replay is dead-lettered again, as a letter of its own.
    sizes = await eventually(
        lambda: topic_sizes(servers, [dead_letter_topic(service.topic)]),
        lambda found: sum(found.values()) == 2,
    )
    assert sum(sizes.values()) == 2
    shown = await service.http.get(f"/dead-letters/{notice.dead_letter_id}", headers=ADMIN)
    assert len(shown.json()["replayed_at"]) == 1
    assert SURNAME not in shown.text

    purged = await service.http.delete(f"/dead-letters/{notice.dead_letter_id}", headers=ADMIN)
    again = await service.http.delete(f"/dead-letters/{notice.dead_letter_id}", headers=ADMIN)
    gone = await service.http.get(f"/dead-letters/{notice.dead_letter_id}", headers=ADMIN)

    assert (purged.status_code, again.status_code, gone.status_code) == (204, 404, 404)
    assert gone.headers["content-type"] == "application/problem+json"


async def test_dead_letters_past_their_retention_are_purged(service: Service) -> None:
    first = await dead_letter_of(service, invalid_referral("fam-dl-4"), b"fam-dl-4")
    await produce(
        service.infra.kafka_bootstrap_servers,
        service.topic,
        [invalid_referral("fam-dl-5")],
        key=b"fam-dl-5",
    )
    letters = service.db[DEAD_LETTERS]
    await eventually(lambda: letters.count_documents({}), lambda count: count == 2)
    now = datetime.now(UTC)
    retention = service.runtime.dead_letters.retention
    assert retention == timedelta(days=30)
    await letters.update_one(
        {"_id": first.dead_letter_id}, {"$set": {"failed_at": now - retention - timedelta(hours=1)}}
    )
    await letters.update_many(
        {"_id": {"$ne": first.dead_letter_id}},
        {"$set": {"failed_at": now - retention + timedelta(hours=1)}},
    )

    assert await service.runtime.dead_letters.purge_expired() == 1

    kept: list[dict[str, Any]] = await letters.find({}, {"family_id": 1}).to_list()
    assert [letter["family_id"] for letter in kept] == ["fam-dl-5"]


async def test_letters_stored_in_the_clear_before_an_upgrade_are_sealed_at_start(
    service: Service,
) -> None:
    poison = invalid_referral("fam-dl-6")
    legacy_id = "allocation:legacy:0:7"
    await service.db[DEAD_LETTERS].insert_one(
        {
            "_id": legacy_id,
            "consumer_group": "allocation",
            "topic": service.topic,
            "partition": 0,
            "offset": 7,
            "key": "fam-dl-6",
            "headers": {"ce_type": "referral-received"},
            "error_type": "UndecodableEvent",
            "error": f"invalid data: {SURNAME}",
            "undecodable": True,
            "traceback": "...",
            "attempts": 1,
            "failed_at": "2026-11-20T10:00:00+00:00",
            "original_base64": base64.b64encode(poison).decode(),
            "original_text": poison.decode(),
            "original_size": len(poison),
            "original_sha256": hashlib.sha256(poison).hexdigest(),
            "original_truncated": False,
        }
    )

    assert await service.runtime.dead_letters.seal_legacy() == 1
    assert await service.runtime.dead_letters.seal_legacy() == 0

    stored = await service.db[DEAD_LETTERS].find_one({"_id": legacy_id})
    assert stored is not None
    assert SURNAME not in json.dumps(
        {name: value for name, value in stored.items() if name != "sealed"}, default=str
    )
    listed, original = await service.runtime.dead_letters.original(legacy_id)
    assert (original.value, original.key) == (poison, b"fam-dl-6")
    assert original.error == f"invalid data: {SURNAME}"
    assert (listed["error_code"], listed["failed_at"]) == (
        "unreadable",
        datetime(2026, 11, 20, 10, tzinfo=UTC),
    )


async def test_dead_letter_topics_are_kept_a_week_and_events_as_the_broker_keeps_them(
    service: Service,
) -> None:
    servers = service.infra.kafka_bootstrap_servers
    week_ms = 7 * 24 * 3600 * 1000

    assert await topic_retention_ms(servers, dead_letter_topic(service.topic)) == week_ms
    assert await topic_retention_ms(servers, service.topic) is None
    assert await topic_retention_ms(servers, service.namespace.topic("case-allocated")) is None


async def test_a_family_s_dead_letters_are_erased_when_the_family_is(service: Service) -> None:
    servers = service.infra.kafka_bootstrap_servers
    erased = await dead_letter_of(service, invalid_referral("fam-dl-7"), b"fam-dl-7")
    await produce(servers, service.topic, [invalid_referral("fam-dl-8")], key=b"fam-dl-8")
    letters = service.db[DEAD_LETTERS]
    await eventually(lambda: letters.count_documents({}), lambda count: count == 2)
    erasure = FamilyErased(family_id="fam-dl-7", erased_at=datetime.now(UTC))
    event = service_event(erasure, service="referral", event_id="fam-dl-7.erased")

    await produce(servers, service.namespace.topic("family-erased"), [event, event], key=b"x")

    await eventually(lambda: letters.count_documents({}), lambda count: count == 1)
    kept = await letters.find({}, {"family_id": 1}).to_list()
    assert [letter["family_id"] for letter in kept] == ["fam-dl-8"]
    gone = await service.http.get(f"/dead-letters/{erased.dead_letter_id}", headers=ADMIN)
    assert gone.status_code == 404
    consumed = service.runtime.metrics.registry.get_sample_value
    topic = service.namespace.topic("family-erased")
    await eventually(
        lambda: _value(consumed(CONSUMED, {"topic": topic, "outcome": "duplicate"})),
        lambda count: count == 1,
    )
    assert consumed(CONSUMED, {"topic": topic, "outcome": "processed"}) == 1


async def _value(value: float | None) -> float:
    return value or 0.0


async def test_an_administrator_replays_a_letter_to_this_service_alone(service: Service) -> None:
    poison = invalid_referral("fam-dl-9")
    still_bad = await dead_letter_of(service, poison, b"fam-dl-9")
    before = await topic_sizes(service.infra.kafka_bootstrap_servers, [service.topic])
    # A good event that a bug (since fixed) made this consumer give up on.
    good = referral_received(family_id="fam-dl-10", referral_id="ref-dl-10", district="northvale")
    fixed_id = await service.runtime.dead_letters.record(
        Failure(
            topic=service.topic,
            partition=0,
            offset=10_000,
            key=b"fam-dl-10",
            value=service_event(good, service="referral", event_id="ref-dl-10.received"),
            headers={},
            error=RuntimeError("a bug, since fixed"),
            attempts=3,
            family_id="fam-dl-10",
        )
    )

    again = await service.http.post(
        f"/dead-letters/{still_bad.dead_letter_id}/replay", headers=ADMIN
    )
    handled = await service.http.post(f"/dead-letters/{fixed_id}/replay", headers=ADMIN)
    refused = await service.http.post(
        f"/dead-letters/{fixed_id}/replay", headers=as_role(Role.PRACTITIONER)
    )

    assert again.json() == {"dead_letter_id": still_bad.dead_letter_id, "handled": False}
    assert handled.json() == {"dead_letter_id": fixed_id, "handled": True}
    assert refused.status_code == 403
    kept = await service.http.get(f"/dead-letters/{still_bad.dead_letter_id}", headers=ADMIN)
    assert len(kept.json()["replayed_at"]) == 1
    gone = await service.http.get(f"/dead-letters/{fixed_id}", headers=ADMIN)
    assert gone.status_code == 404
    [case] = await service.db["cases"].find({"family_id": "fam-dl-10"}).to_list()
    assert case["referral_ids"] == ["ref-dl-10"]
    # Nothing was published again: other consumers of the topic never see a replay.
    assert await topic_sizes(service.infra.kafka_bootstrap_servers, [service.topic]) == before
