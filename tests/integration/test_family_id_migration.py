"""The migration to random family ids on the real broker and database: every service's
records move to the new ids, the old ids are gone from them, and an event from before the
migration (a replay) is read under the new id."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.allocation.access import POLICY as ALLOCATION_POLICY
from services.allocation.app import create_app as allocation_app
from services.allocation.settings import AllocationSettings
from services.audit.app import create_app as audit_app
from services.audit.settings import AuditSettings
from services.family_ids import SERVICES, AlreadyMigrated, migrate
from services.referral.app import create_app as referral_app
from services.referral.settings import ReferralSettings
from shared.auth import Policy
from shared.events import CaseClosed, CaseOutcome
from shared.family_aliases import FAMILY_ALIASES
from shared.mongo import create_mongo_client
from shared.settings import ServiceSettings
from tests.auth import AllowedRole, partner_key
from tests.conftest import Infra, Namespace
from tests.integration.test_referral_service import at, child, request
from tests.support import eventually, produce, service_event

pytestmark = pytest.mark.infra

APPS: dict[str, tuple[Callable[[Any], FastAPI], type[ServiceSettings], Policy | None]] = {
    "referral": (referral_app, ReferralSettings, None),
    "allocation": (allocation_app, AllocationSettings, ALLOCATION_POLICY),
    "audit": (audit_app, AuditSettings, None),
}


async def started(
    stack: AsyncExitStack, infra: Infra, namespace: Namespace
) -> dict[str, httpx.AsyncClient]:
    clients = {}
    for service, (create_app, settings_class, policy) in APPS.items():
        app = create_app(namespace.settings(settings_class, infra))
        await stack.enter_async_context(app.router.lifespan_context(app))
        clients[service] = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=f"http://{service}",
                auth=AllowedRole(policy) if policy else None,
            )
        )
    return clients


@pytest.fixture
async def mongo(infra: Infra) -> AsyncIterator[Any]:
    client = create_mongo_client(infra.mongodb_uri, app_name="migration-tests")
    yield client
    await client.close()


async def everything(mongo: Any, namespace: Namespace) -> str:
    """Every record of every service but the alias tables, as text."""
    texts = []
    for service in SERVICES:
        db = mongo[f"{namespace.databases}{service}"]
        for name in sorted(await db.list_collection_names()):
            if name not in {FAMILY_ALIASES, "migrations", "processed_events", "outbox"}:
                texts.append(json.dumps(await db[name].find().to_list(), default=str))
    return "\n".join(texts)


async def test_every_service_moves_to_the_new_ids_and_an_old_event_finds_its_family(
    infra: Infra, namespace: Namespace, mongo: Any
) -> None:
    referral_db = mongo[f"{namespace.databases}referral"]
    allocation_db = mongo[f"{namespace.databases}allocation"]
    audit_db = mongo[f"{namespace.databases}audit"]
    surname = f"Moved{uuid.uuid4().hex[:6]}"
    async with AsyncExitStack() as stack:
        clients = await started(stack, infra, namespace)
        key = await partner_key(clients["referral"], "northvale-primary")
        answer = await clients["referral"].post(
            "/referrals",
            json=request(children=[child(surname, "2014-04-04")], address=at("WX3 2BB")),
            headers=key,
        )
        assert answer.status_code == 202, answer.text
        old_id = answer.json()["family_id"]
        [case] = await eventually(
            lambda: allocation_db["cases"].find({"family_id": old_id}).to_list(), bool
        )
        await eventually(lambda: audit_db["cases"].count_documents({"family_id": old_id}), bool)
        await eventually(
            lambda: referral_db["families"].count_documents(
                {"_id": old_id, "open_cases": case["_id"]}
            ),
            bool,
        )

    settings = namespace.settings(ServiceSettings, infra)
    moved = await migrate(settings)

    assert moved["families"] >= 1
    alias = await referral_db[FAMILY_ALIASES].find_one({"_id": old_id})
    assert alias is not None
    new_id = alias["family_id"]
    assert new_id != old_id
    assert old_id not in await everything(mongo, namespace)
    assert await referral_db["referrals"].count_documents({"family_id": new_id}) == 1
    assert await referral_db["families"].count_documents({"_id": new_id}) == 1
    assert await allocation_db["cases"].count_documents({"family_id": new_id}) == 1
    assert await allocation_db["open_cases"].count_documents({"_id": new_id}) == 1
    assert await audit_db["cases"].count_documents({"family_id": new_id}) == 1
    for service in ("allocation", "audit"):
        db = mongo[f"{namespace.databases}{service}"]
        assert await db[FAMILY_ALIASES].count_documents({"_id": old_id, "family_id": new_id})
    with pytest.raises(AlreadyMigrated):
        await migrate(settings)

    async with AsyncExitStack() as stack:
        await started(stack, infra, namespace)
        # An event from before the migration, as a replay or republish would send it.
        closure = CaseClosed(
            case_id=case["_id"],
            family_id=old_id,
            district=case["district"],
            team_id=case.get("team_id"),
            worker_id=case.get("worker_id"),
            outcome=CaseOutcome.NEEDS_MET,
            closed_at=datetime.now(UTC),
        )
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic("case-closed"),
            [service_event(closure, service="allocation")],
            key=old_id.encode(),
        )
        await eventually(
            lambda: referral_db["families"].count_documents(
                {"_id": new_id, "closed_cases": case["_id"]}
            ),
            bool,
        )
        await eventually(
            lambda: audit_db["cases"].count_documents(
                {"family_id": new_id, "closed_at": {"$ne": None}}
            ),
            bool,
        )
        assert old_id not in await everything(mongo, namespace)
