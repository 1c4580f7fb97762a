"""What must hold once every consumer has caught up, checked against the stored records.

Each check compares two independent counts (what was sent with what was stored, one
service's records with another's, reporting's figures with figures recomputed from the
owning services' databases), so a lost, doubled or misrouted message shows as a mismatch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from resilience.client import PlatformClient
from resilience.plan import Plan
from shared.dead_letters import DEAD_LETTERS
from shared.events import (
    PLATFORM_EVENTS,
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    read_envelope,
)
from shared.kafka import topic_partitions
from shared.mongo import Database, MongoClient
from shared.months import month_end, month_of
from shared.outbox import OUTBOX

DISTRICTS = ("eastmere", "northvale", "southford", "westbrook")


@dataclass(frozen=True)
class Check:
    name: str
    expected: Any
    actual: Any

    @property
    def holds(self) -> bool:
        return bool(self.expected == self.actual)

    def line(self) -> str:
        mark = "ok    " if self.holds else "BREACH"
        shown = f"{self.actual}" if self.holds else f"{self.actual} (expected {self.expected})"
        return f"{mark} {self.name}: {shown}"


class Stores:
    """Each service's own database, read directly (as an auditor of the platform would)."""

    def __init__(self, client: MongoClient, prefix: str) -> None:
        self.referral: Database = client[f"{prefix}referral"]
        self.allocation: Database = client[f"{prefix}allocation"]
        self.audit: Database = client[f"{prefix}audit"]
        self.reporting: Database = client[f"{prefix}reporting"]

    def all(self) -> dict[str, Database]:
        return {
            "referral": self.referral,
            "allocation": self.allocation,
            "audit": self.audit,
            "reporting": self.reporting,
        }

    async def unsent(self) -> int:
        return sum(
            [await db[OUTBOX].count_documents({"sent_at": None}) for db in self.all().values()]
        )

    async def fingerprint(self) -> tuple[int, ...]:
        """Counts that keep moving while any consumer still has work."""
        counts = []
        for db in self.all().values():
            for name in sorted(await db.list_collection_names()):
                counts.append(await db[name].count_documents({}))
        counts.append(await self.allocation["cases"].count_documents({"status": "open"}))
        counts.append(await self.allocation["cases"].count_documents({"allocation": "queued"}))
        counts.append(await self.audit["audits"].count_documents({"status": "completed"}))
        return tuple(counts)


def same_ids(name: str, expected: set[str], actual: set[str]) -> Check:
    """Holds when both sets are equal; a breach names what is missing and what is extra."""
    difference = [f"missing {id_}" for id_ in sorted(expected - actual)]
    difference += [f"extra {id_}" for id_ in sorted(actual - expected)]
    return Check(f"{name} ({len(expected)} expected)", [], difference[:20])


async def check_everything(
    plan: Plan, stores: Stores, client: PlatformClient, *, bootstrap_servers: str
) -> list[Check]:
    checks: list[Check] = []
    checks += await front_door_checks(plan, stores, bootstrap_servers)
    checks += await allocation_checks(stores)
    checks += await audit_checks(stores)
    checks += await reporting_checks(stores, client)
    for service, db in stores.all().items():
        checks.append(
            Check(f"{service}: dead letters", 0, await db[DEAD_LETTERS].count_documents({}))
        )
    return checks


async def front_door_checks(plan: Plan, stores: Stores, bootstrap_servers: str) -> list[Check]:
    """One outcome per distinct submission, the one its validity calls for, and one event."""
    referrals = await stores.referral["referrals"].find({}, {"submission": 0}).to_list()
    rejections = await stores.referral["rejections"].find({}, {"submission_json": 0}).to_list()
    accepted = Counter((doc["partner_id"], doc["submission_id"]) for doc in referrals)
    rejected = Counter((doc["partner_id"], doc["submission_id"]) for doc in rejections)
    valid = {submission.key for submission in plan.submissions if submission.valid}
    invalid = {submission.key for submission in plan.submissions if not submission.valid}
    outcomes = accepted + rejected
    received_ids = await _event_ids(bootstrap_servers, "referral-received")
    rejected_ids = await _event_ids(bootstrap_servers, "referral-rejected")
    return [
        Check("front door: referrals + rejections = distinct submissions sent",
              len(valid | invalid), len(referrals) + len(rejections)),
        Check("front door: submissions with no outcome",
              0, sum(1 for key in valid | invalid if key not in outcomes)),
        Check("front door: submissions with more than one outcome",
              0, sum(1 for count in outcomes.values() if count > 1)),
        Check("front door: valid submissions accepted", len(valid), len(valid & set(accepted))),
        Check("front door: invalid submissions rejected",
              len(invalid), len(invalid & set(rejected))),
        Check("topic referral-received: distinct events = referrals",
              len(referrals), len(received_ids)),
        Check("topic referral-rejected: distinct events = rejections",
              len(rejections), len(rejected_ids)),
    ]  # fmt: skip


async def allocation_checks(stores: Stores) -> list[Check]:
    """Each Early Help referral in exactly one case; one open case a family; caps kept."""
    early_help = {
        doc["_id"]
        for doc in await stores.referral["referrals"]
        .find({"decision": "early_help"}, {"_id": 1})
        .to_list()
    }
    cases = await stores.allocation["cases"].find().to_list()
    placed = Counter(referral_id for case in cases for referral_id in case["referral_ids"])
    open_cases = [case for case in cases if case["status"] == "open"]
    families = Counter(case["family_id"] for case in open_cases)
    held = Counter(case["worker_id"] for case in open_cases if case["allocation"] == "allocated")
    workers = await _worker_loads(stores)
    entries = {entry["_id"] for entry in await stores.allocation["queue_entries"].find().to_list()}
    queued = {case["_id"] for case in open_cases if case["allocation"] == "queued"}
    queued_districts = {case["district"] for case in open_cases if case["allocation"] == "queued"}
    stranded = sorted(
        f"{worker['_id']} ({worker['spare']} spare)"
        for worker in workers
        if worker["active"] and worker["spare"] > 0 and worker["district"] in queued_districts
    )
    family_docs = await stores.referral["families"].find({}, {"open_cases": 1}).to_list()
    open_by_family: dict[str, set[str]] = defaultdict(set)
    for case in open_cases:
        open_by_family[case["family_id"]].add(case["_id"])
    referral_view_wrong = sum(
        1
        for family in family_docs
        if set(family.get("open_cases") or ()) != open_by_family.get(family["_id"], set())
    )
    return [
        Check("allocation: early help referrals placed in a case", len(early_help),
              len(early_help & set(placed))),
        Check("allocation: referrals placed more than once", 0,
              sum(1 for count in placed.values() if count > 1)),
        Check("allocation: referrals placed that are not early help", 0,
              len(set(placed) - early_help)),
        Check("allocation: families with two open cases", 0,
              sum(1 for count in families.values() if count > 1)),
        Check("allocation: workers above cap", 0,
              sum(1 for worker in workers if held[worker["_id"]] > worker["cap"])),
        Check("allocation: workers whose open_cases counter is wrong", 0,
              sum(1 for worker in workers if held[worker["_id"]] != worker["open_cases"])),
        Check("allocation: queue entries that differ from the queued cases", 0,
              len(entries ^ queued)),
        Check("allocation: capacity left idle while its district queues", [], stranded),
        Check("referral: families whose open cases differ from allocation's", 0,
              referral_view_wrong),
    ]  # fmt: skip


async def audit_checks(stores: Stores) -> list[Check]:
    """Audit learnt every case, and reporting every completed audit, once."""
    cases = await stores.allocation["cases"].find({}, {"status": 1}).to_list()
    known = await stores.audit["cases"].find({}, {"closed_at": 1}).to_list()
    closed = {case["_id"] for case in cases if case["status"] == "closed"}
    closed_known = {case["_id"] for case in known if case.get("closed_at") is not None}
    completed = await stores.audit["audits"].find({"status": "completed"}).to_list()
    facts = {
        fact["_id"]: fact
        for fact in await stores.reporting["audit_facts"]
        .find({"completed_at": {"$ne": None}})
        .to_list()
    }
    return [
        same_ids("audit: cases it knows vs allocation's cases",
                 {case["_id"] for case in cases}, {case["_id"] for case in known}),
        same_ids("audit: cases it knows closed vs allocation's closed cases", closed, closed_known),
        same_ids("reporting: completed audits in audit_facts vs audit's completed audits",
                 {audit["_id"] for audit in completed}, set(facts)),
        Check("reporting: completed audits with the audit's grade", len(completed),
              sum(1 for audit in completed
                  if facts.get(audit["_id"], {}).get("overall_grade") == audit["overall_grade"])),
    ]  # fmt: skip


async def reporting_checks(stores: Stores, client: PlatformClient) -> list[Check]:
    """``GET /reports/monthly`` equals the figures recomputed from the owners' records."""
    expected = await recompute_figures(stores)
    checks = []
    for (month, district), figures in sorted(expected.items(), key=lambda item: str(item[0])):
        report = await client.monthly_report(month, district)
        actual = reported_figures(report)
        for measure in figures:
            checks.append(
                Check(
                    f"report {month} {district or 'all'}: {measure}",
                    figures[measure],
                    actual[measure],
                )
            )
    return checks


def reported_figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": report["requests"]["total"],
        "requests_by_source": report["requests"]["by_source"],
        "accepted_for_early_help": report["outcomes"]["accepted_for_early_help"],
        "stepped_up": report["outcomes"]["stepped_up"],
        "signposted": report["outcomes"]["signposted"],
        "rejected": report["outcomes"]["rejected"],
        "re_referrals": report["re_referrals"]["count"],
        "step_downs": report["step_downs"],
        "co_working": report["co_working"],
        "allocations": report["allocations"]["count"],
        "joined_open_case": report["allocations"]["joined_open_case"],
        "queued_at_month_end": report["allocations"]["queued_at_month_end"],
        "open_at_month_end": report["caseload"]["open_at_month_end"],
        "capacity": report["caseload"]["capacity"],
        "closures": report["closures"]["by_outcome"],
        "audits_due": report["audits"]["due"],
        "audits_completed": report["audits"]["completed"],
    }


async def _worker_loads(stores: Stores) -> list[dict[str, Any]]:
    """Each worker's load as their district's aggregate keeps it."""
    districts = await stores.allocation["districts"].find().to_list()
    return [
        {
            "_id": worker_id,
            "district": district["_id"],
            "cap": load["cap"],
            "open_cases": load["open_cases"],
            "active": load["active"],
            "spare": load["cap"] - load["open_cases"] if load["active"] else 0,
        }
        for district in districts
        for worker_id, load in district["workers"].items()
    ]


async def recompute_figures(stores: Stores) -> dict[tuple[str, str | None], dict[str, Any]]:
    """Per month and district (None: the county), from the referral, allocation and audit
    services' own records: referrals and rejections, cases, workers, the allocations the
    allocation service recorded in its outbox, and audits."""
    referrals = await stores.referral["referrals"].find({}, {"submission": 0}).to_list()
    rejections = await stores.referral["rejections"].find({}, {"received_at": 1}).to_list()
    cases = await stores.allocation["cases"].find().to_list()
    workers = [worker for worker in await _worker_loads(stores) if worker["active"]]
    audits = await stores.audit["audits"].find().to_list()
    allocations = await _recorded_allocations(stores.allocation)

    months = {month_of(doc["received_at"]) for doc in [*referrals, *rejections]}
    months |= {month_of(case["closed_at"]) for case in cases if case.get("closed_at")}
    months |= {allocation.month for allocation in allocations}
    months |= {audit["month"] for audit in audits}
    figures: dict[tuple[str, str | None], dict[str, Any]] = {}
    for month in sorted(months):
        end = month_end(month)
        for district in (None, *DISTRICTS):

            def here(doc: dict[str, Any], district: str | None = district) -> bool:
                return district is None or doc["district"] == district

            in_month = [
                doc for doc in referrals if month_of(doc["received_at"]) == month and here(doc)
            ]
            decisions = Counter(doc["decision"] for doc in in_month)
            sources = Counter(doc["referral_source"] for doc in in_month)
            mine = [case for case in cases if here(case)]
            figures[(month, district)] = {
                "requests": len(in_month),
                "requests_by_source": dict(sorted(sources.items())),
                "accepted_for_early_help": decisions["early_help"],
                "stepped_up": decisions["step_up"],
                "signposted": decisions["signpost"],
                "rejected": 0 if district is not None else sum(
                    1 for doc in rejections if month_of(doc["received_at"]) == month),
                "re_referrals": sum(1 for doc in in_month if doc["is_re_referral"]),
                "step_downs": sum(1 for doc in in_month if doc["is_step_down"]),
                "co_working": sum(1 for doc in in_month
                                  if doc["open_to_social_care"] and not doc["is_step_down"]),
                "allocations": sum(1 for allocation in allocations
                                   if allocation.month == month and not allocation.joined
                                   and district in (None, allocation.district)),
                "joined_open_case": sum(1 for allocation in allocations
                                        if allocation.month == month and allocation.joined
                                        and district in (None, allocation.district)),
                "queued_at_month_end": sum(1 for case in mine if _queued_at(case, end)),
                "open_at_month_end": sum(1 for case in mine if _open_at(case, end)),
                "capacity": sum(worker["cap"] for worker in workers if here(worker)),
                "closures": dict(sorted(Counter(
                    case["outcome"] for case in mine
                    if case.get("closed_at") and month_of(case["closed_at"]) == month).items())),
                "audits_due": sum(1 for audit in audits if audit["month"] == month and here(audit)),
                "audits_completed": sum(1 for audit in audits if audit["month"] == month
                                        and here(audit) and audit["status"] == "completed"),
            }  # fmt: skip
    return figures


@dataclass(frozen=True)
class _Allocation:
    case_id: str
    referral_id: str
    district: str
    month: str
    joined: bool
    """The referral joined a case already open: no case was given a worker."""


async def _recorded_allocations(db: Database) -> list[_Allocation]:
    """Each case given a worker, and each referral joining a case that has one, counted once:
    the allocation service's own record of what it told the others."""
    found: dict[tuple[str, str], _Allocation] = {}
    async for record in db[OUTBOX].find({"headers.ce_type": "case-allocated"}):
        allocated = PLATFORM_EVENTS.read_data(read_envelope(record["value"]), CaseAllocated)
        if (
            allocated.status is AllocationStatus.ALLOCATED
            and allocated.reallocated_from_worker_id is None
        ):
            key = (allocated.case_id, allocated.referral_id)
            found.setdefault(
                key,
                _Allocation(
                    *key,
                    allocated.district,
                    month_of(allocated.allocated_at),
                    joined=allocated.kind is AllocationKind.EXISTING_CASE,
                ),
            )
    return list(found.values())


def _closed_before(case: dict[str, Any], end: datetime) -> bool:
    return case.get("closed_at") is not None and _utc(case["closed_at"]) < end


def _open_at(case: dict[str, Any], end: datetime) -> bool:
    allocated = case.get("allocated_at")
    return allocated is not None and _utc(allocated) < end and not _closed_before(case, end)


def _queued_at(case: dict[str, Any], end: datetime) -> bool:
    allocated, opened = case.get("allocated_at"), _utc(case["opened_at"])
    was_queued = allocated is None or _utc(allocated) > opened
    still_queued = allocated is None or _utc(allocated) >= end
    return was_queued and opened < end and still_queued and not _closed_before(case, end)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _event_ids(bootstrap_servers: str, topic: str) -> set[str]:
    """Distinct CloudEvent ids on ``topic``, read from the start of every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(bootstrap_servers, [topic])
        if not partitions:
            return set()
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: set[str] = set()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            ids.update(_ids(record.value for records in batch.values() for record in records))
        return ids
    finally:
        await consumer.stop()


def _ids(values: Iterable[bytes]) -> set[str]:
    return {f"{event.source}|{event.id}" for event in map(read_envelope, values)}
