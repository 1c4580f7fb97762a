"""Two replicas of every service split the work and reach the same results as one.

Two copies of the platform run in this process on the one broker and database server: one
with two replicas of each service in each consumer group, one with a single replica of each.
Both get the same seeded partner traffic (``referral-submitted`` events, and requests over
HTTP spread across the front doors); then auditors draw and complete the month's audits and
managers close the same families' cases. Every replica must have consumed some of its
service's messages, every event must have taken effect once, and what the two copies made of
the traffic must be equal. It is compared in terms that do not depend on the order messages
arrive in, which two replicas change: which submissions were accepted and which families and
cases they formed (with each case's level of need, the highest of its referrals'), not the
generated family and case ids; the month's figures for the county and each district, audits
included, not the times to allocation.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import cycle
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from resilience.invariants import DISTRICTS, Stores, reported_figures
from resilience.plan import TOPIC, Channel, Plan, distinct_keys, make_plan, partner_event
from services.allocation.access import POLICY as ALLOCATION_POLICY
from services.allocation.app import create_app as allocation_app
from services.allocation.settings import AllocationSettings
from services.audit.access import POLICY as AUDIT_POLICY
from services.audit.app import create_app as audit_app
from services.audit.settings import AuditSettings
from services.referral.access import POLICY as REFERRAL_POLICY
from services.referral.app import create_app as referral_app
from services.referral.settings import ReferralSettings
from services.reporting.access import POLICY as REPORTING_POLICY
from services.reporting.app import create_app as reporting_app
from services.reporting.settings import ReportingSettings
from shared.auth import Policy, Role
from shared.events import CaseOutcome, read_envelope
from shared.metrics import DEAD_LETTERED, DUPLICATE, PROCESSED
from shared.mongo import MongoClient, create_mongo_client
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests.auth import AllowedRole, as_role, partner_key
from tests.conftest import Infra, Namespace
from tests.support import eventually, read_topic, topic_sizes

pytestmark = pytest.mark.infra

SUBMISSIONS = 60
SEED = 8  # 67 sends: 14 over HTTP, 7 resent, 7 invalid, siblings, repeat families, step-downs
PARTITIONS = 4
REPLICAS = 2
DRAW_SEED = 2026
CLOSURES = (
    CaseOutcome.NEEDS_MET,
    CaseOutcome.STEPPED_UP,
    CaseOutcome.DISENGAGED,
    CaseOutcome.MOVED_AWAY,
)
CONSUMED = "earlyhelp_messages_consumed_total"
SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type[ServiceSettings], Policy]] = {
    "referral": (referral_app, ReferralSettings, REFERRAL_POLICY),
    "allocation": (allocation_app, AllocationSettings, ALLOCATION_POLICY),
    "audit": (audit_app, AuditSettings, AUDIT_POLICY),
    "reporting": (reporting_app, ReportingSettings, REPORTING_POLICY),
}


@dataclass(frozen=True)
class Replica:
    """One instance of a service: its runtime, to read its metrics, and its HTTP API."""

    runtime: Runtime
    http: httpx.AsyncClient

    def consumed(self, topic: str, *outcomes: str) -> int:
        """Messages of ``topic`` this replica consumed with any of ``outcomes``."""
        registry = self.runtime.metrics.registry
        return sum(
            int(registry.get_sample_value(CONSUMED, {"topic": topic, "outcome": outcome}) or 0)
            for outcome in outcomes
        )

    @property
    def partitions(self) -> frozenset[TopicPartition]:
        consumption = self.runtime.consumption
        return consumption.membership.partitions if consumption else frozenset()


@dataclass(frozen=True)
class Platform:
    """One copy of the platform: each service's replicas, sharing a namespace."""

    namespace: Namespace
    services: dict[str, list[Replica]]
    stores: Stores

    def topics(self, service: str) -> list[str]:
        return sorted(self.services[service][0].runtime.subscriptions)

    def handled(self, service: str, topic: str, *outcomes: str) -> int:
        return sum(replica.consumed(topic, *outcomes) for replica in self.services[service])


@pytest.fixture
async def platforms(infra: Infra, namespace: Namespace) -> AsyncIterator[tuple[Platform, Platform]]:
    """The scaled-out copy and the single-instance copy, each in its own namespace."""
    single = Namespace(topics=f"{namespace.topics}one-", databases=f"{namespace.databases}one_")
    mongo = create_mongo_client(infra.mongodb_uri, app_name="scale-out-tests")
    apps: list[FastAPI] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(mongo.close)
        scaled_out = await _build(stack, infra, namespace, mongo, apps, replicas=REPLICAS)
        one_each = await _build(stack, infra, single, mongo, apps, replicas=1)
        # Started together: a start takes seconds, while its consumer joins its group.
        await asyncio.gather(
            *(stack.enter_async_context(app.router.lifespan_context(app)) for app in apps)
        )
        for platform in (scaled_out, one_each):
            # Only once every replica holds partitions is the traffic shared between them.
            await eventually(partial(_unassigned, platform), lambda left: not left, timeout_s=90)
        yield scaled_out, one_each


async def _build(
    stack: AsyncExitStack,
    infra: Infra,
    namespace: Namespace,
    mongo: MongoClient,
    apps: list[FastAPI],
    *,
    replicas: int,
) -> Platform:
    services: dict[str, list[Replica]] = {}
    for service, (create_app, settings_class, policy) in SERVICES.items():
        for number in range(replicas):
            settings = namespace.settings(settings_class, infra, kafka_partitions=PARTITIONS)
            app = create_app(settings)
            apps.append(app)
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=f"http://{service}-{number}",
                auth=AllowedRole(policy),
                timeout=30,
            )
            await stack.enter_async_context(http)
            services.setdefault(service, []).append(Replica(app.state.runtime, http))
    return Platform(namespace, services, Stores(mongo, namespace.databases))


async def _unassigned(platform: Platform) -> list[str]:
    """The groups not yet settled in one generation: every replica holding partitions, and
    together each partition of each topic exactly once."""
    left = []
    for service, replicas in platform.services.items():
        owned = [replica.partitions for replica in replicas]
        every = {
            TopicPartition(topic, number)
            for topic in platform.topics(service)
            for number in range(PARTITIONS)
        }
        together = frozenset[TopicPartition]().union(*owned)
        if not all(owned) or together != every or sum(map(len, owned)) != len(every):
            left.append(f"{service}: {[len(partitions) for partitions in owned]}")
    return left


async def test_two_replicas_of_every_service_share_the_work_with_the_results_of_one(
    infra: Infra, platforms: tuple[Platform, Platform]
) -> None:
    scaled_out, one_each = platforms
    plan = make_plan(SUBMISSIONS, SEED, today=datetime.now(UTC).date())
    month = datetime.now(UTC).strftime("%Y-%m")
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for platform in (scaled_out, one_each):
            await _send(platform, plan, producer)
    finally:
        await producer.stop()
    for platform in (scaled_out, one_each):
        await _settle(platform, infra)
        await _manage(platform, month)
    for platform in (scaled_out, one_each):
        await _settle(platform, infra)

    # The work was split: each replica of each service consumed some of its messages.
    split = {
        service: [
            sum(replica.consumed(topic, PROCESSED) for topic in scaled_out.topics(service))
            for replica in replicas
        ]
        for service, replicas in scaled_out.services.items()
    }
    assert all(all(counts) for counts in split.values()), split

    # Each event took effect once, however the deliveries fell.
    for platform in (scaled_out, one_each):
        await _check_each_event_took_effect_once(platform, infra)

    # ...and the outcome is the one a single instance of each service reaches.
    scaled_results = await _results(scaled_out, month)
    single_results = await _results(one_each, month)
    front_door = scaled_results["front door"]
    accepted = {key for key, found in front_door.items() if found[0][0] != "rejected"}
    assert set(front_door) == distinct_keys(plan.submissions)
    assert accepted == {submission.key for submission in plan.submissions if submission.valid}
    assert all(len(front_door[key]) == 1 for key in accepted)
    audits = scaled_results["audits by auditor"]
    assert audits, "no audits drawn"
    assert all(completed for _, completed in audits), audits
    for name, single in single_results.items():
        assert scaled_results[name] == single, name


async def _send(platform: Platform, plan: Plan, producer: AIOKafkaProducer) -> None:
    """Every send in the plan's order: events keyed by submission, as partners publish them,
    and HTTP requests to each front door in turn."""
    front_doors = cycle(platform.services["referral"])
    keys: dict[str, dict[str, str]] = {}
    for send in plan.sends:
        submission = send.submission
        if send.channel is Channel.KAFKA:
            await producer.send_and_wait(
                platform.namespace.topic(TOPIC),
                partner_event(send),
                key=submission.submission_id.encode(),
            )
            continue
        front_door = next(front_doors).http
        if submission.partner_id not in keys:
            keys[submission.partner_id] = await partner_key(front_door, submission.partner_id)
        answer = await front_door.post(
            "/referrals", json=submission.document, headers=keys[submission.partner_id]
        )
        assert answer.status_code in (202, 422), answer.text


async def _settle(platform: Platform, infra: Infra) -> None:
    await eventually(
        partial(_outstanding, platform, infra),
        lambda left: not left,
        timeout_s=120,
        interval_s=0.25,
    )


async def _outstanding(platform: Platform, infra: Infra) -> dict[str, int]:
    """What is still to do: records no replica of a group has handled yet, and outbox records
    not yet published. Read in that order, so nothing staged by a handler counted here can
    slip past: it is either still unsent, or already in the topic's size."""
    handled = {
        (service, topic): platform.handled(service, topic, PROCESSED, DUPLICATE, DEAD_LETTERED)
        for service in platform.services
        for topic in platform.topics(service)
    }
    unsent = await platform.stores.unsent()
    sizes = await topic_sizes(infra.kafka_bootstrap_servers, {topic for _, topic in handled})
    left = {
        f"{service} {topic}": sizes[topic] - count
        for (service, topic), count in handled.items()
        if count < sizes[topic]
    }
    return left | ({"unsent": unsent} if unsent else {})


async def _manage(platform: Platform, month: str) -> None:
    """The month's audits are drawn with one seed and all completed; the cases of the same
    families (those whose first referral id sorts first) are closed."""
    audit = platform.services["audit"]
    drawn = await audit[0].http.post("/audits/draws", json={"month": month, "seed": DRAW_SEED})
    assert drawn.status_code == 201, drawn.text
    standards = (await audit[0].http.get("/standards")).json()
    audits = (await audit[-1].http.get("/audits", params={"month": month})).json()
    for assigned, replica in zip(audits, cycle(audit), strict=False):
        completed = await replica.http.post(
            f"/audits/{assigned['id']}/completion",
            json={
                "scores": {standard["id"]: "good" for standard in standards},
                "learning_points": ["Agree the plan's review date with the family."],
            },
            headers=as_role(assigned["auditor_role"], sub=assigned["auditor_id"]),
        )
        assert completed.status_code == 200, completed.text

    cases = await platform.stores.allocation["cases"].find({"allocation": "allocated"}).to_list()
    cases.sort(key=lambda case: min(case["referral_ids"]))
    allocation = cycle(platform.services["allocation"])
    for case, outcome in zip(cases, CLOSURES, strict=False):
        closed = await next(allocation).http.post(
            f"/cases/{case['_id']}/close", json={"outcome": outcome}
        )
        assert closed.status_code == 200, closed.text


async def _check_each_event_took_effect_once(platform: Platform, infra: Infra) -> None:
    """Consumers with processed-event records applied each distinct event once, and counted
    every other delivery as a duplicate; nothing was dead-lettered. The front door keeps no
    such records (a submission is idempotent by partner and submission id): one outcome per
    submission is checked with the results."""
    topics = {topic for service in platform.services for topic in platform.topics(service)}
    sizes = await topic_sizes(infra.kafka_bootstrap_servers, topics)
    distinct = {}
    for topic in topics:
        records = await read_topic(infra.kafka_bootstrap_servers, topic, count=sizes[topic])
        envelopes = [read_envelope(record.value) for record in records]
        distinct[topic] = len({(envelope.source, envelope.id) for envelope in envelopes})
    for service in platform.services:
        for topic in platform.topics(service):
            processed = platform.handled(service, topic, PROCESSED)
            delivered = platform.handled(service, topic, PROCESSED, DUPLICATE)
            where = f"{platform.namespace.topics} {service} {topic}"
            assert platform.handled(service, topic, DEAD_LETTERED) == 0, where
            assert delivered >= sizes[topic], where
            if service != "referral":
                assert processed == distinct[topic], where


async def _results(platform: Platform, month: str) -> dict[str, Any]:
    """What the platform made of the traffic, without generated ids, times or workers (the
    worker with most spare capacity depends on which family came first)."""
    stores = platform.stores
    referrals = await stores.referral["referrals"].find({}, {"submission": 0}).to_list()
    rejections = await stores.referral["rejections"].find().to_list()
    outcomes: dict[tuple[str, str], list[tuple[str, ...]]] = defaultdict(list)
    for referral in referrals:
        outcomes[(referral["partner_id"], referral["submission_id"])].append(
            (referral["decision"], referral["district"], referral["referral_source"])
        )
    for rejection in rejections:
        codes = sorted(reason["code"] for reason in rejection["reasons"])
        outcomes[(rejection["partner_id"], rejection["submission_id"])].append(("rejected", *codes))
    families: dict[str, list[str]] = defaultdict(list)
    for referral in referrals:
        families[referral["family_id"]].append(referral["_id"])

    cases = await stores.allocation["cases"].find().to_list()
    referrals_of = {case["_id"]: sorted(case["referral_ids"]) for case in cases}
    known = await stores.audit["cases"].find().to_list()
    audits = await stores.audit["audits"].find().to_list()

    analyst = as_role(Role.PERFORMANCE_ANALYST)
    reporting = platform.services["reporting"][-1].http
    figures = {}
    for district in (None, *DISTRICTS):
        params = {"month": month} | ({"district": district} if district else {})
        report = (await reporting.get("/reports/monthly", params=params, headers=analyst)).json()
        rejected = report["outcomes"]["rejected_by_reason"]
        figures[district or "all"] = reported_figures(report) | {"rejected_by_reason": rejected}
    return {
        "front door": {key: sorted(found) for key, found in outcomes.items()},
        "families": sorted(sorted(ids) for ids in families.values()),
        "cases": sorted(
            (
                referrals_of[case["_id"]],
                case["district"],
                case["level_of_need"],
                case["status"],
                case["allocation"],
                case.get("outcome"),
            )
            for case in cases
        ),
        "audit's cases": sorted(
            (referrals_of[case["_id"]], case["district"], case["closed_at"] is not None)
            for case in known
        ),
        "audits by auditor": Counter(
            (audit["auditor_id"], audit.get("completed_at") is not None) for audit in audits
        ),
        "monthly figures": figures,
    }
