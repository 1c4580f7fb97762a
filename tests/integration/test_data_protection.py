"""The front door's data protection over the real broker and database: partner keys and
their refusals, the access log, erasure (API and command) and the retention review."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.referral import domain
from services.referral.app import create_app
from services.referral.domain import MatchKeys
from services.referral.rekey import rekey
from services.referral.settings import ReferralSettings
from shared.auth import Role
from shared.events import EventData, ReferralSubmitted
from shared.mongo import Database, create_mongo_client
from tests.auth import (
    ADMIN,
    TEST_DEAD_LETTER_KEY,
    TEST_MATCH_KEY_SECRET,
    TEST_SECRET,
    as_role,
    partner_key,
)
from tests.conftest import Infra, Namespace
from tests.integration.test_referral_service import allocated, at, child, closed, request
from tests.privacy import strings
from tests.support import eventually, produce, read_topic, service_event, topic_sizes

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
PARTNER = "northvale-primary"
READER = as_role(Role.PRACTITIONER, sub="pat-1", reason="visit planning")


@dataclass
class Clock:
    """Real time, moved on by a test: retention is years long."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Door:
    infra: Infra
    namespace: Namespace
    settings: ReferralSettings
    http: httpx.AsyncClient
    db: Database
    clock: Clock
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    async def key(self, partner: str = PARTNER) -> dict[str, str]:
        if partner not in self.keys:
            self.keys[partner] = await partner_key(self.http, partner)
        return self.keys[partner]

    async def accept(self, document: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/referrals", json=document, headers=await self.key())
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def publish(self, data: EventData) -> None:
        value = service_event(data, service="allocation", correlation_id=str(uuid.uuid4()))
        await produce(
            self.infra.kafka_bootstrap_servers,
            self.namespace.topic(data.event_type),
            [value],
            key=data.family_id.encode(),  # type: ignore[attr-defined]
        )

    async def family(self, family_id: str) -> dict[str, Any]:
        found = await self.db["families"].find_one({"_id": family_id})
        assert found is not None
        return found


@pytest.fixture(scope="module")
async def door(infra: Infra) -> AsyncIterator[Door]:
    token = uuid.uuid4().hex[:10]
    namespace = Namespace(topics=f"d{token}-", databases=f"d{token}_")
    settings = namespace.settings(ReferralSettings, infra)
    clock = Clock()
    app = create_app(settings, clock=clock)
    mongo = create_mongo_client(infra.mongodb_uri, app_name="data-protection-tests")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://referral", timeout=30) as http,
    ):
        try:
            yield Door(infra, namespace, settings, http, mongo[settings.database_name], clock)
        finally:
            await mongo.close()


# ---------------------------------------------------------------------------------------------
# Partner keys


async def test_a_partner_key_is_shown_once_stored_hashed_and_can_be_revoked(door: Door) -> None:
    issued = await door.http.post(
        "/partner-keys",
        json={"partner_id": "wessex-police", "routes": ["police"], "name": "force system"},
        headers=ADMIN,
    )
    assert issued.status_code == 201, issued.text
    key, key_id = issued.json()["key"], issued.json()["key_id"]
    listed = (await door.http.get("/partner-keys", headers=ADMIN)).json()
    stored = await door.db["partner_keys"].find_one({"_id": key_id})

    assert next(entry for entry in listed if entry["key_id"] == key_id)["routes"] == ["police"]
    assert all("key" not in entry and "hash" not in entry for entry in listed)
    assert stored is not None
    assert key not in list(strings(stored))
    police = request(partner_id="wessex-police", route="police")
    sent = await door.http.post("/referrals", json=police, headers={"x-partner-key": key})
    assert sent.status_code == 202, sent.text

    revoked = await door.http.delete(f"/partner-keys/{key_id}", headers=ADMIN)
    assert revoked.json()["revoked_by"] == "test-administrator"
    again = await door.http.post(
        "/referrals",
        json=request(partner_id="wessex-police", route="police"),
        headers={"x-partner-key": key},
    )
    assert (again.status_code, again.json()["detail"]) == (401, "this partner key has been revoked")


async def test_unknown_missing_and_overreaching_keys_are_refused_and_recorded(
    door: Door,
) -> None:
    school_only = await partner_key(door.http, "eastmere-academy", routes=["school"])
    stored_before = await door.db["referrals"].count_documents({})

    missing = await door.http.post("/referrals", json=request())
    unknown = await door.http.post(
        "/referrals", json=request(), headers={"x-partner-key": "ehpk_guess"}
    )
    other_partner = await door.http.post(
        "/referrals", json=request(partner_id=PARTNER), headers=school_only
    )
    other_route = await door.http.post(
        "/referrals",
        json=request(partner_id="eastmere-academy", route="police"),
        headers=school_only,
    )

    assert (missing.status_code, missing.json()["detail"]) == (
        401,
        "send your partner key as X-Partner-Key",
    )
    assert (unknown.status_code, unknown.json()["detail"]) == (401, "unknown partner key")
    assert other_partner.status_code == 403
    assert other_partner.json()["detail"] == (
        f"this key belongs to partner 'eastmere-academy', not '{PARTNER}'"
    )
    assert other_route.status_code == 403
    assert "may not submit on route 'police'; its routes: school" in other_route.json()["detail"]
    assert await door.db["referrals"].count_documents({}) == stored_before
    recorded = (
        await door.http.get("/refusals", params={"partner_id": "eastmere-academy"}, headers=ADMIN)
    ).json()
    assert [(entry["status"], entry["path"]) for entry in recorded] == [
        (403, "/referrals"),
        (403, "/referrals"),
    ]
    everything = (await door.http.get("/refusals", headers=ADMIN)).json()
    assert {"unknown partner key", "send your partner key as X-Partner-Key"} <= {
        entry["reason"] for entry in everything
    }
    assert all("children" not in json.dumps(entry) for entry in everything)


# ---------------------------------------------------------------------------------------------
# The access log


async def test_reading_a_family_s_data_needs_a_reason_and_is_recorded(door: Door) -> None:
    answer = await door.accept(request())
    referral_id, family_id = answer["referral_id"], answer["family_id"]

    without_reason = await door.http.get(
        f"/referrals/{referral_id}", headers=as_role(Role.PRACTITIONER)
    )
    as_admin = await door.http.get(
        f"/referrals/{referral_id}", headers=as_role(Role.ADMINISTRATOR, reason="curious about it")
    )
    read = await door.http.get(f"/referrals/{referral_id}", headers=READER)
    by_query = await door.http.get(
        f"/referrals/{referral_id}",
        params={"reason": "allocation meeting"},
        headers=as_role(Role.TEAM_MANAGER, sub="tm-1"),
    )
    log = await door.http.get("/access-log", params={"family_id": family_id}, headers=ADMIN)
    not_for_practitioners = await door.http.get("/access-log", headers=READER)

    assert without_reason.status_code == 400
    assert "say why" in without_reason.json()["detail"]
    assert as_admin.status_code == 403
    assert read.status_code == 200
    assert by_query.status_code == 200
    assert [(e["sub"], e["role"], e["action"], e["resource"], e["reason"]) for e in log.json()] == [
        ("tm-1", "team_manager", "read_referral", referral_id, "allocation meeting"),
        ("pat-1", "practitioner", "read_referral", referral_id, "visit planning"),
    ]
    assert not_for_practitioners.status_code == 403


# ---------------------------------------------------------------------------------------------
# Erasure


async def test_erasure_removes_personal_data_keeps_statistics_and_a_new_request_is_a_new_family(
    door: Door,
) -> None:
    surname = f"Erase{uuid.uuid4().hex[:6]}"
    family = {"children": [child(surname, "2015-05-05")], "address": at("WX3 7EE")}
    first = await door.accept(request(**family))
    second = await door.accept(request(**family, needs=["health"]))
    family_id = first["family_id"]
    assert second["family_id"] == family_id
    # A rejected request for the same child (no consent) holds the same details.
    rejected = await door.http.post(
        "/referrals",
        json=request(**family, consent={"given": False}),
        headers=await door.key(),
    )
    assert rejected.status_code == 422
    rejection_id = rejected.json()["rejection_id"]

    await door.publish(allocated(family_id, f"case-{surname}"))
    await eventually(lambda: door.family(family_id), lambda f: bool(f["open_cases"]))
    while_open = await door.http.post(
        f"/families/{family_id}/erasure", json={"reason": "erasure request 42"}, headers=ADMIN
    )
    assert while_open.status_code == 409

    await door.publish(closed(family_id, f"case-{surname}", datetime.now(UTC)))
    await eventually(lambda: door.family(family_id), lambda f: not f["open_cases"])
    erased = await door.http.post(
        f"/families/{family_id}/erasure", json={"reason": "erasure request 42"}, headers=ADMIN
    )
    assert erased.status_code == 200, erased.text
    assert {k: erased.json()[k] for k in ("referrals", "rejections")} == {
        "referrals": 2,
        "rejections": 1,
    }
    assert erased.json()["keys"] >= 1

    for referral_id in (first["referral_id"], second["referral_id"]):
        stored = await door.db["referrals"].find_one({"_id": referral_id})
        assert stored is not None
        assert surname not in json.dumps(stored, default=str)
        assert "2015-05-05" not in json.dumps(stored, default=str)
        assert "submission" not in stored
        # The pseudonymous statistics stay.
        assert (stored["family_id"], stored["district"]) == (family_id, first["district"])
        assert stored["child_ages"]
        assert stored["needs"]
        assert stored["decision"]
    rejection = await door.db["rejections"].find_one({"_id": rejection_id})
    assert rejection is not None
    assert surname not in json.dumps(rejection, default=str)
    assert [r["code"] for r in rejection["reasons"]] == ["no_consent"]
    assert await door.db["family_keys"].count_documents({"family_id": family_id}) == 0
    # Every service hears of it, and learns nothing else of the family.
    erasures = door.namespace.topic("family-erased")
    servers = door.infra.kafka_bootstrap_servers
    sizes = await eventually(lambda: topic_sizes(servers, [erasures]), lambda n: n[erasures] > 0)
    [told] = [
        event
        for event in await read_topic(servers, erasures, count=sizes[erasures])
        if json.loads(event.value)["data"]["family_id"] == family_id
    ]
    assert set(json.loads(told.value)["data"]) == {"family_id", "erased_at"}
    log = (
        await door.http.get("/access-log", params={"family_id": family_id}, headers=ADMIN)
    ).json()
    assert log[0]["action"] == "erase_family"
    assert log[0]["reason"] == "erasure request 42"

    # The same children again: no key recognises them now, so they are matched as a new
    # family, and the family record holds personal data again, so retention applies anew.
    later = await door.accept(request(**family))
    assert later["family_match"] == "new_family"
    assert later["is_re_referral"] is False
    assert later["family_id"] != family_id, "a new family's id is drawn afresh"
    assert "personal_data_erased_at" not in await door.family(later["family_id"])
    unknown = await door.http.post(
        "/families/fam-nope/erasure", json={"reason": "erasure request 43"}, headers=ADMIN
    )
    assert unknown.status_code == 404


async def test_the_erasure_command_erases_a_closed_family(door: Door) -> None:
    surname = f"Command{uuid.uuid4().hex[:6]}"
    answer = await door.accept(
        request(children=[child(surname, "2013-03-03")], address=at("WX3 8CC"))
    )
    family_id = answer["family_id"]
    env = {
        **os.environ,
        "MONGODB_URI": door.settings.mongodb_uri,
        "EARLYHELP_DATABASE_PREFIX": door.settings.database_prefix,
        "EARLYHELP_AUTH_SECRET": TEST_SECRET,
        "EARLYHELP_DEAD_LETTER_KEY": TEST_DEAD_LETTER_KEY,
        "EARLYHELP_MATCH_KEY_SECRET": TEST_MATCH_KEY_SECRET,
        "EARLYHELP_TOPIC_NAMESPACE": door.settings.topic_namespace,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.referral.erasure", family_id, "--reason", "ICO case 7"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert json.loads(result.stdout)["referrals"] == 1
    stored = await door.db["referrals"].find_one({"_id": answer["referral_id"]})
    assert stored is not None
    assert surname not in json.dumps(stored, default=str)
    family = await door.family(family_id)
    assert family["erasure"] == {"by": "operator", "reason": "ICO case 7"}
    # Staged by the command, published by the running service's relay.
    erased = await eventually(
        lambda: read_topic(
            door.infra.kafka_bootstrap_servers,
            door.namespace.topic("family-erased"),
            count=1,
        ),
        lambda events: any(family_id.encode() in event.value for event in events),
        timeout_s=30,
    )
    assert erased


# ---------------------------------------------------------------------------------------------
# Pseudonyms


async def test_match_keys_need_the_secret_and_rotating_it_keeps_every_family(door: Door) -> None:
    surname = f"Keyed{uuid.uuid4().hex[:6]}"
    document = request(children=[child(surname, "2012-02-02")], address=at("WX3 9DD"))
    answer = await door.accept(document)
    family_id = answer["family_id"]
    submitted = ReferralSubmitted.model_validate(document)
    under = {
        name: {key.value for key in domain.family_keys(submitted, MatchKeys(secret))}
        for name, secret in (("ours", TEST_MATCH_KEY_SECRET.encode()), ("new", b"n" * 40))
    }

    async def keys_of_family() -> set[str]:
        found = await door.db["family_keys"].find({"family_id": family_id}).to_list()
        return {key["_id"] for key in found}

    assert re.fullmatch(r"fam-[0-9a-f]{20}", family_id)
    assert await keys_of_family() == under["ours"]
    material = f"surname_dob_postcode:{surname.lower()}|2012-02-02|WX3 9DD".encode()
    assert hashlib.sha256(material).hexdigest() not in await keys_of_family()

    rotated = door.settings.model_copy(update={"match_key_secret": SecretStr("n" * 40)})
    counted = await rekey(rotated)
    assert counted["referrals"] >= 1
    assert await keys_of_family() == under["new"]
    assert not under["ours"] & {key["_id"] async for key in door.db["family_keys"].find()}

    await rekey(door.settings)  # and back, to the secret the running service has
    assert await keys_of_family() == under["ours"]
    again = await door.accept(
        request(children=[child(surname, "2012-02-02")], address=at("WX3 9DD"))
    )
    assert (again["family_id"], again["family_match"]) == (family_id, "surname_dob_postcode")


# ---------------------------------------------------------------------------------------------
# Retention


async def test_a_closed_family_is_flagged_for_review_after_the_retention_period(
    door: Door,
) -> None:
    surname = f"Retain{uuid.uuid4().hex[:6]}"
    answer = await door.accept(
        request(children=[child(surname, "2012-02-02")], address=at("WX3 9RR"))
    )
    family_id = answer["family_id"]
    closed_at = datetime.now(UTC)
    await door.publish(allocated(family_id, f"case-{surname}"))
    await eventually(lambda: door.family(family_id), lambda f: bool(f["open_cases"]))
    await door.publish(closed(family_id, f"case-{surname}", closed_at))
    await eventually(lambda: door.family(family_id), lambda f: not f["open_cases"])

    async def flagged() -> list[str]:
        review = await door.http.get("/retention/review", headers=ADMIN)
        assert review.status_code == 200, review.text
        assert review.json()["retention_years"] == 6
        return [item["family_id"] for item in review.json()["families"]]

    try:
        door.clock.offset = timedelta(days=365 * 5)
        five_years_on = await flagged()
        door.clock.offset = timedelta(days=365 * 6 + 10)
        six_years_on = await flagged()
    finally:
        door.clock.offset = timedelta()

    assert family_id not in five_years_on
    assert family_id in six_years_on
    not_for_practitioners = await door.http.get("/retention/review", headers=READER)
    assert not_for_practitioners.status_code == 403
