"""End to end: the platform as ``make run`` starts it, over the real broker and database.

A request posted over HTTP, and one published on ``referral-submitted``, become
``referral-received``; allocation answers with ``case-allocated``; the case is audited and
closed; reporting counts all of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import Role
from shared.embedded import free_port
from shared.events import PLATFORM_EVENTS, CaseAllocated, ReferralReceived
from shared.mongo import create_mongo_client
from tests.auth import ADMIN, TEST_SECRET, as_role, partner_key
from tests.conftest import Infra, Namespace
from tests.privacy import personal_data_found
from tests.support import eventually, partner_submission, produce, read_topic

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "referral.json").read_text())
SERVICES = ("referral", "allocation", "audit", "reporting")


class Platform:
    def __init__(self, process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"


@pytest.fixture
def platform(infra: Infra, namespace: Namespace, tmp_path: Path) -> Iterator[Platform]:
    ports = {service: free_port() for service in SERVICES}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "MONGODB_URI": infra.mongodb_uri,
        "EARLYHELP_TOPIC_NAMESPACE": namespace.topics,
        "EARLYHELP_DATABASE_PREFIX": namespace.databases,
        "EARLYHELP_DATA_DIR": str(tmp_path),
        "EARLYHELP_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "EARLYHELP_SAMPLE_DATA": "true",
        "EARLYHELP_AUTH_SECRET": TEST_SECRET,
        **{f"EARLYHELP_{service.upper()}_PORT": str(port) for service, port in ports.items()},
    }
    log = (tmp_path / "platform.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        yield Platform(process, ports)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def submission(submission_id: str, **changes: Any) -> dict[str, Any]:
    return {**FIXTURE, "submission_id": submission_id, **changes}


async def wait_until_up(client: httpx.AsyncClient, platform: Platform) -> None:
    async def healthy() -> list[bool]:
        if platform.process.poll() is not None:
            raise AssertionError(f"platform exited with {platform.process.returncode}")
        answers = []
        for service in SERVICES:
            try:
                response = await client.get(platform.url(service, "/health"))
                answers.append(response.status_code == 200)
            except httpx.HTTPError:
                answers.append(False)
        return answers

    await eventually(healthy, all, timeout_s=90, interval_s=0.5)


async def test_a_request_flows_from_the_front_door_to_the_monthly_figures(
    infra: Infra, namespace: Namespace, platform: Platform
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until_up(client, platform)
        referral = httpx.AsyncClient(base_url=platform.url("referral", ""), timeout=10)
        async with referral:
            key = await partner_key(referral, FIXTURE["partner_id"])

        async def post(document: dict[str, Any]) -> httpx.Response:
            return await client.post(
                platform.url("referral", "/referrals"), json=document, headers=key
            )

        posted = await post(submission("h-1"))
        assert posted.status_code == 202, posted.text
        answer = posted.json()
        assert answer["decision"] == "early_help"
        assert answer["district"] == "northvale"

        again = await post(submission("h-1"))
        assert again.json()["referral_id"] == answer["referral_id"]
        assert again.json()["duplicate"] is True

        invalid = await post(submission("h-2", route="carrier-pigeon", consent={"given": False}))
        assert invalid.status_code == 422
        codes = {reason["code"] for reason in invalid.json()["problems"]}
        assert codes == {"unknown_route", "no_consent"}

        # A partner system publishes the same kind of request on Kafka.
        over_kafka = submission(
            "k-1",
            partner_id="wessex-police",
            route="police",
            children=[
                {
                    "given_name": "Ottoline",
                    "family_name": "Quennell",
                    "date_of_birth": "2012-02-01",
                    "gender": "male",
                }
            ],
            address={"line1": "9 Quay Street", "postcode": "WX12 7QT"},
        )
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic("referral-submitted"),
            [partner_submission(over_kafka, partner_id="wessex-police")],
        )

        this_month = datetime.now(UTC).strftime("%Y-%m")

        async def monthly() -> dict[str, Any]:
            response = await client.get(
                platform.url("reporting", "/reports/monthly"),
                params={"month": this_month},
                headers=as_role(Role.PERFORMANCE_ANALYST),
            )
            report: dict[str, Any] = response.json()
            return report

        report = await eventually(
            monthly,
            lambda r: r["allocations"]["count"] == 2 and r["outcomes"]["rejected"] == 1,
            timeout_s=60,
        )
        assert report["requests"]["total"] == 2
        assert report["requests"]["by_source"] == {"2A": 1, "6": 1}
        assert report["outcomes"]["rejected_by_reason"] == {"no_consent": 1, "unknown_route": 1}

        practitioner = as_role(Role.PRACTITIONER)
        cases = (
            await client.get(platform.url("allocation", "/cases"), headers=practitioner)
        ).json()
        assert {case["district"] for case in cases} == {"northvale", "southford"}
        # The sample county's teams have room: each family has a lead practitioner.
        assert all(case["allocation"] == "allocated" and case["worker_id"] for case in cases)

        # The audit service learnt of the case from case-allocated; this month's draw gives
        # it to a (sample) auditor, who audits it.
        case_id = next(case["id"] for case in cases if case["district"] == "northvale")
        month = datetime.now(UTC).strftime("%Y-%m")

        async def drawn() -> list[dict[str, Any]]:
            await client.post(
                platform.url("audit", "/audits/draws"), json={"month": month}, headers=ADMIN
            )
            response = await client.get(
                platform.url("audit", "/audits"), params={"month": month}, headers=ADMIN
            )
            return [audit for audit in response.json() if audit["case_id"] == case_id]

        [assigned] = await eventually(drawn, bool, timeout_s=30)
        standards = (
            await client.get(platform.url("audit", "/standards"), headers=practitioner)
        ).json()
        audit = {
            "scores": {standard["id"]: "good" for standard in standards}
            | {"plan_quality": "requires_improvement"},
            "learning_points": ["Review the plan with the family monthly."],
        }
        completed = await client.post(
            platform.url("audit", f"/audits/{assigned['id']}/completion"),
            json=audit,
            headers=as_role(Role.TEAM_MANAGER, sub=assigned["auditor_id"]),
        )
        assert completed.status_code == 200, completed.text
        closed = await client.post(
            platform.url("allocation", f"/cases/{case_id}/close"),
            json={"outcome": "needs_met"},
            headers=practitioner,
        )
        assert closed.status_code == 200, closed.text
        again = await client.post(
            platform.url("allocation", f"/cases/{case_id}/close"),
            json={"outcome": "other"},
            headers=practitioner,
        )
        assert again.status_code == 409

        report = await eventually(
            monthly,
            lambda r: r["audits"]["completed"] == 1 and r["closures"]["total"] == 1,
            timeout_s=30,
        )
        assert report["audits"]["grades"] == {"good": 1}
        assert report["closures"]["by_outcome"] == {"needs_met": 1}

    received = await read_topic(
        infra.kafka_bootstrap_servers, namespace.topic("referral-received"), count=2
    )
    referrals = [PLATFORM_EVENTS.decode(record.value, ReferralReceived) for record in received]
    allocated = await read_topic(
        infra.kafka_bootstrap_servers, namespace.topic("case-allocated"), count=2
    )
    allocations = [PLATFORM_EVENTS.decode(record.value, CaseAllocated) for record in allocated]
    by_family = {data.family_id: envelope for envelope, data in referrals}
    for envelope, allocation in allocations:
        # one correlation id links everything that came from one submission
        assert envelope.correlationid == by_family[allocation.family_id].correlationid
        assert envelope.subject == allocation.family_id

    # Personal data stays in the referral service: nothing the other services stored after
    # the whole flow is named like it, or holds any of the families' details.
    details = {
        value
        for document in (FIXTURE, over_kafka)
        for value in (
            *(
                child[name]
                for child in document["children"]
                for name in ("given_name", "family_name", "date_of_birth", "upn")
                if name in child
            ),
            document["address"]["line1"],
            document["address"]["postcode"],
            document["consent"].get("given_by", ""),
        )
        if value
    }
    mongo = create_mongo_client(infra.mongodb_uri, app_name="privacy-check")
    try:
        for service in ("allocation", "audit", "reporting"):
            database = f"{namespace.databases}{service}"
            assert await mongo[database].list_collection_names(), database
            assert await personal_data_found(mongo, database, details) == [], service
        # ...and the check does find it where it is.
        assert await personal_data_found(mongo, f"{namespace.databases}referral", details)
    finally:
        await mongo.close()
