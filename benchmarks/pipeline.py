"""The benchmark: the platform's figures beside the ceilings of the broker and database under it.

In one run, on the embedded servers exactly as ``make run`` starts them:

1. the ceilings (``benchmarks.ceilings``): raw produce and consume rates, raw insert rates;
2. a backlog of partner traffic (``simulator.traffic``: routes in their shares, siblings,
   repeat families, step-downs, invalid requests) published at once, timed from the first
   publication until every submission is answered, every case allocated or queued, and
   reporting's figures agree with the referral and allocation services' own records; and
   what it cost the database, per service (``earlyhelp_database_*`` on each ``/metrics``),
   against what the database's ceilings allow at that cost;
3. latency from a partner's publication to ``case-allocated``, at a steady rate;
4. the front door over HTTP (``benchmarks.front_door``): many partners posting at once;
5. rebuilding reporting from the retained events;
6. each service's peak resident memory;
7. on a new platform, a stored history of referrals (``benchmarks.history``) loaded before
   the services start: each page's latency (``benchmarks.pages``) and the steady latency.

Each goal of issue 20 is then printed with its measured figure and whether it is met, and
``--json`` writes the goals, the ceilings and every figure to a file.

Usage: ``make bench`` or ``python -m benchmarks.pipeline --backlog 20000 --json data/bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import math
import os
import platform as host
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from benchmarks.ceilings import Ceilings, measure
from benchmarks.front_door import FrontDoorFigures, measure_front_door
from services.referral.domain import MatchKeys
from shared import topics
from shared.auth import Role, mint_token
from shared.db_metrics import DELETE, INSERT, UPDATE
from shared.embedded import embedded_mongodb, free_port, kafka_bootstrap, mongodb_uri
from shared.events import AllocationStatus
from shared.kafka import ensure_topics, topic_partitions
from shared.secrets import new_secret
from shared.settings import DEFAULT_FETCH_MAX_WAIT_MS
from simulator.traffic import Submission, partner_event, traffic

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("referral", "allocation", "audit", "reporting")
SUBSCRIPTIONS = {
    "referral": (topics.REFERRAL_SUBMITTED, topics.CASE_ALLOCATED, topics.CASE_CLOSED),
    "allocation": (topics.REFERRAL_RECEIVED,),
    "audit": (topics.CASE_ALLOCATED, topics.CASE_CLOSED),
    "reporting": (
        topics.REFERRAL_RECEIVED,
        topics.REFERRAL_REJECTED,
        topics.CASE_ALLOCATED,
        topics.CASE_CLOSED,
        topics.TEAM_CAPACITY_CHANGED,
        topics.AUDIT_ASSIGNED,
        topics.AUDIT_COMPLETED,
    ),
}
"""What each service consumes: the pipeline is done when each has read all of it."""
SETTLED_CHECKS = 3
"""Consecutive checks that must find nothing left to do before the run counts as done."""
CHECK_INTERVAL_S = 1.0
"""Between two looks at the services' progress: often enough to time the end within it."""
GOAL_BACKLOG = 20_000
GOAL_HISTORY = 200_000
"""The sizes issue 20's goals are set at; a smaller run's figures are judged all the same,
with the size they were measured at said beside them."""


@dataclass
class Platform:
    """The running platform's addresses, and the process that runs it."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    bootstrap: str
    mongodb: str
    env: dict[str, str]
    analyst: dict[str, str] = field(default_factory=dict)

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    @property
    def secret(self) -> str:
        return self.env["EARLYHELP_AUTH_SECRET"]


@dataclass(frozen=True)
class DatabaseWork:
    """What one service had the database do: documents written, transactions committed."""

    inserted: float = 0.0
    updated: float = 0.0
    """Updated or upserted, by update or findAndModify."""
    deleted: float = 0.0
    transactions: float = 0.0

    def __add__(self, other: DatabaseWork) -> DatabaseWork:
        return DatabaseWork(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.transactions + other.transactions,
        )

    def __sub__(self, earlier: DatabaseWork) -> DatabaseWork:
        return DatabaseWork(
            self.inserted - earlier.inserted,
            self.updated - earlier.updated,
            self.deleted - earlier.deleted,
            self.transactions - earlier.transactions,
        )

    def per(self, submissions: int) -> DatabaseWork:
        count = max(1, submissions)
        return DatabaseWork(
            self.inserted / count,
            self.updated / count,
            self.deleted / count,
            self.transactions / count,
        )

    def bound(self, ceilings: Ceilings) -> float:
        """Submissions a second the database allows, each costing this much (deletes
        counted with the updates, as the bulk-upsert ceiling is the nearer)."""
        return ceilings.database_bound(
            self.inserted, self.updated + self.deleted, self.transactions
        )


def total(work: Mapping[str, DatabaseWork]) -> DatabaseWork:
    summed = DatabaseWork()
    for each in work.values():
        summed += each
    return summed


@dataclass(frozen=True)
class Figures:
    backlog: int
    backlog_published_s: float
    backlog_done_s: float
    referrals: int
    rejections: int
    cases_allocated: int
    cases_queued: int
    backlog_database: dict[str, DatabaseWork]
    """Per service, what the whole backlog had the database do."""
    backlog_cpu_s: dict[str, float]
    """Per process, the CPU seconds the backlog took, from publication to agreement."""
    steady_rate: float
    fresh_latency_samples: int
    fresh_latency_p50_s: float
    fresh_latency_p99_s: float
    """At the steady rate on a fresh database, before the backlog."""
    latency_samples: int
    latency_p50_s: float
    latency_p99_s: float
    """At the steady rate after the backlog."""
    front_door: FrontDoorFigures | None
    front_door_database: dict[str, DatabaseWork]
    """Per service, what the front door's requests had the database do, to the last effect."""
    front_door_error: str | None
    rebuild_events: int
    rebuild_s: float
    peak_memory_mib: dict[str, float]
    """By the end of the backlog."""
    peak_memory_end_mib: dict[str, float]
    """By the end of the run, the front door and the rebuild too."""

    @property
    def throughput(self) -> float:
        return self.backlog / self.backlog_done_s

    @property
    def rebuild_rate(self) -> float:
        return self.rebuild_events / self.rebuild_s


@dataclass
class HistoryFigures:
    """The pages and the steady latency over a stored history; filled in as measured, so a
    phase that fails part way keeps what it had."""

    referrals: int
    error: str | None = None
    loaded: dict[str, Any] = field(default_factory=dict)
    """What ``load_history`` said it loaded."""
    load_s: float | None = None
    month: str | None = None
    pages: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_samples: int = 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    peak_memory_mib: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.error is None and bool(self.pages)


def submissions(count: int, seed: int) -> Iterator[Submission]:
    return islice(traffic(seed, today=datetime.now(UTC).date()), count)


async def publish_backlog(bootstrap: str, count: int, seed: int) -> float:
    """Every submission at once, as fast as the broker takes them; seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        now = datetime.now(UTC)
        pending = []
        for submission in submissions(count, seed):
            value = partner_event(submission, event_id=str(uuid.uuid4()), now=now)
            pending.append(
                await producer.send(
                    topics.REFERRAL_SUBMITTED, value, key=submission.submission_id.encode()
                )
            )
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def topic_sizes(bootstrap: str) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        names = {name for subscribed in SUBSCRIPTIONS.values() for name in subscribed}
        partitions = await topic_partitions(bootstrap, names)
        ends = await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    sizes = dict.fromkeys(names, 0)
    for partition, end in ends.items():
        sizes[partition.topic] += end
    return sizes


async def consumed(http: httpx.AsyncClient, platform: Platform) -> tuple[dict[str, Any], int]:
    """Per service, records read per topic; and the records still in the outboxes."""
    read: dict[str, Any] = {}
    backlog = 0
    for service in SERVICES:
        text = (await http.get(platform.url(service, "/metrics"))).text
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("earlyhelp_messages_consumed_total{"):
                labels, value = line.rsplit(" ", 1)
                outcome = labels.split('outcome="')[1].split('"')[0]
                topic = labels.split('topic="')[1].split('"')[0]
                if outcome != "failed_attempt":
                    counts[topic] = counts.get(topic, 0) + float(value)
            elif line.startswith("earlyhelp_outbox_backlog "):
                backlog += int(float(line.split()[1]))
        read[service] = counts
    return read, backlog


def database_work_of(metrics_text: str) -> DatabaseWork:
    """A service's write counters, from its ``/metrics`` text."""
    written = {INSERT: 0.0, UPDATE: 0.0, DELETE: 0.0}
    transactions = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("earlyhelp_database_documents_written_total{"):
            labels, value = line.rsplit(" ", 1)
            written[labels.split('operation="')[1].split('"')[0]] = float(value)
        elif line.startswith("earlyhelp_database_transactions_total "):
            transactions = float(line.split()[1])
    return DatabaseWork(written[INSERT], written[UPDATE], written[DELETE], transactions)


async def database_work(http: httpx.AsyncClient, platform: Platform) -> dict[str, DatabaseWork]:
    """Per service, what it has had the database do since it started."""
    return {
        service: database_work_of((await http.get(platform.url(service, "/metrics"))).text)
        for service in SERVICES
    }


def work_since(
    earlier: Mapping[str, DatabaseWork], later: Mapping[str, DatabaseWork]
) -> dict[str, DatabaseWork]:
    return {service: later[service] - earlier[service] for service in later}


async def wait_until_done(http: httpx.AsyncClient, platform: Platform, limit_s: float) -> None:
    """Until every service has read every record of its topics and every outbox is empty,
    several times over (an effect may still be on its way between two services)."""
    deadline = time.monotonic() + limit_s
    settled = 0
    while settled < SETTLED_CHECKS:
        if time.monotonic() > deadline:
            raise SystemExit(f"not done within {limit_s:.0f} s")
        await asyncio.sleep(CHECK_INTERVAL_S)
        sizes = await topic_sizes(platform.bootstrap)
        read, backlog = await consumed(http, platform)
        behind = {
            (service, name): sizes[name] - read[service].get(name, 0)
            for service, subscribed in SUBSCRIPTIONS.items()
            for name in subscribed
            if read[service].get(name, 0) < sizes[name]
        }
        settled = settled + 1 if not behind and backlog == 0 else 0


async def agreement(http: httpx.AsyncClient, platform: Platform) -> dict[str, int]:
    """The services' own records against reporting's figures; exits when they disagree."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.mongodb)
    try:
        referral, allocation = client["earlyhelp_referral"], client["earlyhelp_allocation"]
        counts = {
            "referrals": await referral["referrals"].count_documents({}),
            "rejections": await referral["rejections"].count_documents({}),
            "allocated": await allocation["cases"].count_documents(
                {"status": "open", "allocation": AllocationStatus.ALLOCATED.value}
            ),
            "queued": await allocation["cases"].count_documents(
                {"status": "open", "allocation": AllocationStatus.QUEUED.value}
            ),
        }
    finally:
        await client.close()
    month = datetime.now(UTC).strftime("%Y-%m")
    report = (
        await http.get(
            platform.url("reporting", "/reports/monthly"),
            params={"month": month},
            headers=platform.analyst,
        )
    ).json()
    reported = {
        "referrals": report["requests"]["total"],
        "rejections": report["outcomes"]["rejected"],
        "allocated": report["caseload"]["open_at_month_end"],
        "queued": report["allocations"]["queued_at_month_end"],
    }
    if reported != counts:
        raise SystemExit(f"reporting disagrees: reported {reported}, recorded {counts}")
    return counts


async def steady_latency(
    bootstrap: str, rate: float, seconds: float, seed: int
) -> tuple[int, float, float]:
    """Publish at ``rate`` for ``seconds``; time each submission until its case-allocated."""
    arrived: dict[str, float] = {}
    consumer = AIOKafkaConsumer(
        topics.CASE_ALLOCATED,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=DEFAULT_FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # positions taken: nothing older is read

    async def listen() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    correlation = json.loads(record.value).get("correlationid", "")
                    arrived.setdefault(correlation, now)

    listening = asyncio.create_task(listen())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        count = int(rate * seconds)
        started = time.perf_counter()
        for number, submission in enumerate(submissions(count, seed)):
            await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
            correlation = f"latency-{number}"
            value = partner_event(
                submission,
                event_id=str(uuid.uuid4()),
                now=datetime.now(UTC),
                correlation_id=correlation,
            )
            sent[correlation] = time.perf_counter()
            await producer.send_and_wait(
                topics.REFERRAL_SUBMITTED, value, key=submission.submission_id.encode()
            )
        await asyncio.sleep(10)  # the last ones' way through
    finally:
        listening.cancel()
        await producer.stop()
        await consumer.stop()
    latencies = sorted(arrived[key] - sent[key] for key in sent if key in arrived)
    if not latencies:
        raise SystemExit("no case-allocated arrived at the steady rate")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies), statistics.median(latencies), p99


def rebuild(platform: Platform) -> tuple[int, float]:
    """Run the rebuild command beside the running service; events replayed, seconds."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-m", "services.reporting.rebuild"],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    for line in finished.stdout.splitlines():
        if line.startswith("replayed "):  # "replayed N events (...)"
            return int(line.split()[1]), seconds
    raise SystemExit(f"rebuild printed no count: {finished.stdout} {finished.stderr}")


def platform_processes(root: int) -> dict[str, int]:
    """Each process the platform started, by name: the services, the broker, the database."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if parent != root:
            continue
        name = (
            command.split()[-1]
            if "services." in command
            else ("kafka (broker)" if "kafka.Kafka" in command else DATABASE_PROCESS)
        )
        found[name] = int(entry.name)
    return found


def peak_memory(root: int) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each process the platform started."""
    return {
        name: mib
        for name, pid in platform_processes(root).items()
        if (mib := peak_memory_of(pid)) is not None
    }


def cpu_seconds(root: int) -> dict[str, float]:
    """The CPU time (user and system) each process the platform started has used so far:
    taken before and after a phase, it says which process the machine's cores went to."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, pid in platform_processes(root).items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


DATABASE_PROCESS = "secantusdb (database)"


def peak_memory_of(pid: int) -> float | None:
    """One process's peak resident memory in MiB, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def start_platform(
    data_dir: str, *, mongodb: str | None = None, match_key_secret: str | None = None
) -> Platform:
    """``python -m services`` on its own embedded broker and database, or on the database
    at ``mongodb`` when one is given (one the benchmark started and filled, its families
    keyed under ``match_key_secret``)."""
    secret = new_secret()
    ports = {service: free_port() for service in SERVICES}
    kafka_port, mongodb_port = free_port(), free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI"}
    }
    if mongodb is not None:
        env["MONGODB_URI"] = mongodb
    env |= {
        "EARLYHELP_DATA_DIR": data_dir,
        "EARLYHELP_KAFKA_PORT": str(kafka_port),
        "EARLYHELP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "EARLYHELP_MONGODB_PORT": str(mongodb_port),
        "EARLYHELP_LOG_LEVEL": "WARNING",
        "EARLYHELP_AUTH_SECRET": secret,
        "EARLYHELP_DEAD_LETTER_KEY": new_secret(),
        "EARLYHELP_MATCH_KEY_SECRET": match_key_secret or new_secret(),
        **{f"EARLYHELP_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bootstrap, mongodb = kafka_bootstrap(kafka_port), mongodb or mongodb_uri(mongodb_port)
    token = mint_token(
        secret.encode(), sub="benchmark", role=Role.PERFORMANCE_ANALYST, districts=["*"]
    )
    return Platform(
        process,
        ports,
        bootstrap,
        mongodb,
        env | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MONGODB_URI": mongodb},
        analyst={"authorization": f"Bearer {token}"},
    )


def stop_platform(platform: Platform) -> None:
    platform.process.send_signal(signal.SIGINT)
    platform.process.wait(120)


async def wait_ready(http: httpx.AsyncClient, platform: Platform, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            answers = [await http.get(platform.url(service, "/ready")) for service in SERVICES]
            if all(answer.status_code == 200 for answer in answers):
                return
        except httpx.HTTPError:
            pass
        if platform.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the platform did not start")
        await asyncio.sleep(0.5)


async def run(platform: Platform, args: argparse.Namespace) -> Figures:
    async with httpx.AsyncClient(timeout=30) as http:
        await wait_ready(http, platform)
        await ensure_topics(platform.bootstrap, {topics.REFERRAL_SUBMITTED}, partitions=4)
        fresh = await steady_latency(platform.bootstrap, args.rate, args.latency_s, args.seed + 2)
        await wait_until_done(http, platform, args.limit_s)
        print(f"fresh latency: median {fresh[1] * 1000:.0f} ms", flush=True)
        before = await database_work(http, platform)
        cpu_before = cpu_seconds(platform.process.pid)
        started = time.perf_counter()
        published_s = await publish_backlog(platform.bootstrap, args.backlog, args.seed)
        await wait_until_done(http, platform, args.limit_s)
        done_s = time.perf_counter() - started
        cpu_after = cpu_seconds(platform.process.pid)
        backlog_database = work_since(before, await database_work(http, platform))
        memory = peak_memory(platform.process.pid)
        counts = await agreement(http, platform)
        print(f"backlog of {args.backlog:,} done in {done_s:.1f} s", flush=True)
        samples, p50, p99 = await steady_latency(
            platform.bootstrap, args.rate, args.latency_s, args.seed + 1
        )
        await wait_until_done(http, platform, args.limit_s)
        await agreement(http, platform)
        front_door, front_door_database, front_door_error = await front_door_phase(
            http, platform, args
        )
    events, rebuild_s = rebuild(platform)
    return Figures(
        backlog=args.backlog,
        backlog_published_s=published_s,
        backlog_done_s=done_s,
        referrals=counts["referrals"],
        rejections=counts["rejections"],
        cases_allocated=counts["allocated"],
        cases_queued=counts["queued"],
        backlog_database=backlog_database,
        backlog_cpu_s={
            name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2)
            for name in sorted(cpu_after)
        },
        steady_rate=args.rate,
        fresh_latency_samples=fresh[0],
        fresh_latency_p50_s=fresh[1],
        fresh_latency_p99_s=fresh[2],
        latency_samples=samples,
        latency_p50_s=p50,
        latency_p99_s=p99,
        front_door=front_door,
        front_door_database=front_door_database,
        front_door_error=front_door_error,
        rebuild_events=events,
        rebuild_s=rebuild_s,
        peak_memory_mib=memory,
        peak_memory_end_mib=peak_memory(platform.process.pid),
    )


async def front_door_phase(
    http: httpx.AsyncClient, platform: Platform, args: argparse.Namespace
) -> tuple[FrontDoorFigures | None, dict[str, DatabaseWork], str | None]:
    """The partners' posts, then every effect of them, and reporting agreeing again; a
    failure is reported beside the other figures rather than ending the run."""
    if args.front_door_partners <= 0:
        return None, {}, "skipped (--front-door-partners 0)"
    admin = mint_token(platform.secret.encode(), sub="benchmark-admin", role=Role.ADMINISTRATOR)
    print(
        f"front door: {args.front_door_partners} partners for {args.front_door_s:g} s...",
        flush=True,
    )
    before = await database_work(http, platform)
    try:
        figures = await measure_front_door(
            platform.url("referral", ""),
            platform.bootstrap,
            admin,
            partners=args.front_door_partners,
            seconds=args.front_door_s,
            seed=args.seed + 3,
            today=datetime.now(UTC).date(),
        )
        await wait_until_done(http, platform, args.limit_s)
        await agreement(http, platform)
    except (Exception, SystemExit) as error:
        return None, {}, f"{type(error).__name__}: {error}"
    return figures, work_since(before, await database_work(http, platform)), None


def history_phase(args: argparse.Namespace) -> HistoryFigures:
    """A new platform whose database holds ``args.history`` referrals of history before its
    services start: each page's latency, then the steady latency on top. Whatever fails
    (the loader or the pages missing, or raising) is reported, and the run goes on."""
    figures = HistoryFigures(referrals=args.history)
    if args.history <= 0:
        figures.error = "skipped (--history 0)"
        return figures
    try:
        load_history = importlib.import_module("benchmarks.history").load_history
        page_latencies = importlib.import_module("benchmarks.pages").page_latencies
    except Exception as error:  # missing, or failing as it is imported
        figures.error = f"{type(error).__name__}: {error}"
        return figures
    now = datetime.now(UTC)
    figures.month = f"{now:%Y-%m}"
    with tempfile.TemporaryDirectory() as data_dir:
        database = embedded_mongodb(
            free_port(), Path(data_dir) / "history-run", Path(data_dir) / "mongodb"
        )
        platform: Platform | None = None
        try:
            database.start()
            uri = mongodb_uri(database.port)
            print(f"loading a history of {args.history:,} referrals...", flush=True)
            match_key_secret = new_secret()
            keyed = (
                {"match_keys": MatchKeys(match_key_secret.encode())}
                if "match_keys" in inspect.signature(load_history).parameters
                else {}
            )
            started = time.perf_counter()
            figures.loaded = dict(
                asyncio.run(
                    load_history(uri, referrals=args.history, seed=args.seed, now=now, **keyed)
                )
            )
            figures.load_s = time.perf_counter() - started
            print(f"history loaded in {figures.load_s:.0f} s", flush=True)
            platform = start_platform(data_dir, mongodb=uri, match_key_secret=match_key_secret)
            asyncio.run(measure_on_history(platform, args, page_latencies, figures))
            figures.peak_memory_mib = peak_memory(platform.process.pid)
            if database.pid is not None and (mib := peak_memory_of(database.pid)) is not None:
                figures.peak_memory_mib[DATABASE_PROCESS] = mib
        except (Exception, SystemExit) as error:
            figures.error = f"{type(error).__name__}: {error}"
        finally:
            if platform is not None:
                stop_platform(platform)
            database.stop()
    return figures


async def measure_on_history(
    platform: Platform, args: argparse.Namespace, page_latencies: Any, figures: HistoryFigures
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        await wait_ready(http, platform, args.limit_s)
        await ensure_topics(platform.bootstrap, {topics.REFERRAL_SUBMITTED}, partitions=4)
        base_urls = {service: platform.url(service, "") for service in SERVICES}
        figures.pages = dict(
            await page_latencies(
                base_urls, platform.secret, month=figures.month, samples=args.page_samples
            )
        )
        print(f"pages measured on the history: {len(figures.pages)}", flush=True)
        samples, p50, p99 = await steady_latency(
            platform.bootstrap, args.rate, args.latency_s, args.seed + 4
        )
        figures.latency_samples, figures.latency_p50_s, figures.latency_p99_s = samples, p50, p99


@dataclass(frozen=True)
class Goal:
    """One of issue 20's goals: ``measured`` against ``target`` by ``comparison``."""

    name: str
    comparison: str
    """">=" or "<="; empty for a figure only recorded."""
    target: float | None
    measured: float | None
    unit: str
    ratio_to_ceiling: float | None
    ratio_to: str = ""
    """What the ratio is to."""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or self.target is None or math.isnan(self.measured):
            return None
        if self.comparison == ">=":
            return self.measured >= self.target
        return self.measured <= self.target

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[self.met]
        target = (
            f"{self.comparison} {self.target:g} {self.unit}"
            if self.comparison and self.target is not None
            else "recorded"
        )
        measured = "not measured" if self.measured is None else f"{self.measured:,.4g} {self.unit}"
        ratio = (
            f"; {times(self.ratio_to_ceiling)} {self.ratio_to}"
            if self.ratio_to_ceiling is not None
            else ""
        )
        note = f" ({self.note})" if self.note else ""
        return f"  {verdict}  {self.name}: {measured}, goal {target}{ratio}{note}"


def times(ratio: float) -> str:
    """A ratio as the report writes it: ``0.173x``, ``32.2x``, ``1,624x``."""
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def _scale_note(measured: int, goal: int, what: str) -> str:
    return "" if measured >= goal else f"measured at {measured:,} {what}; the goal is at {goal:,}"


def goals(ceilings: Ceilings, figures: Figures, history: HistoryFigures) -> list[Goal]:
    backlog_bound = total(figures.backlog_database).per(figures.backlog).bound(ceilings)
    backlog_note = _scale_note(figures.backlog, GOAL_BACKLOG, "submissions")
    round_trip = "the broker's round trip"
    found = [
        Goal(
            "backlog end to end",
            ">=",
            150,
            figures.throughput,
            "submissions/s",
            figures.throughput / backlog_bound,
            "the database's bound at the backlog's cost a submission",
            backlog_note,
        ),
        Goal(
            f"latency to case-allocated at {figures.steady_rate:g}/s, fresh, p99",
            "<=",
            300,
            figures.fresh_latency_p99_s * 1000,
            "ms",
            figures.fresh_latency_p99_s / ceilings.round_trip_s,
            round_trip,
        ),
        Goal(
            f"latency to case-allocated at {figures.steady_rate:g}/s after the backlog, p99",
            "<=",
            1.25,
            figures.latency_p99_s / figures.fresh_latency_p99_s,
            "x the fresh p99",
            figures.latency_p99_s / ceilings.round_trip_s,
            round_trip,
            backlog_note,
        ),
    ]
    found += history_goals(ceilings, history)
    found += front_door_goals(ceilings, figures)
    found.append(
        Goal(
            "rebuild of reporting",
            ">=",
            5000,
            figures.rebuild_rate,
            "events/s",
            figures.rebuild_rate / ceilings.insert_many_per_s,
            "the insert_many ceiling (the rebuild inserts its facts)",
        )
    )
    machine_mib = total_memory_mib()
    for name, mib in sorted(figures.peak_memory_mib.items()):
        service = name.startswith("services.")
        found.append(
            Goal(
                f"peak memory of {name} during the backlog",
                "<=" if service else "",
                150 if service else None,
                mib,
                "MiB",
                mib / machine_mib,
                "the machine's memory",
                backlog_note if service else "",
            )
        )
    return found


def history_goals(ceilings: Ceilings, history: HistoryFigures) -> list[Goal]:
    one_insert_ms = 1000 / ceilings.insert_one_per_s
    if not history.pages:
        return [
            Goal(
                f"each page's p95 with {GOAL_HISTORY:,} referrals stored",
                "<=",
                150,
                None,
                "ms",
                None,
                note=f"not measured: {history.error or 'no pages'}",
            )
        ]
    note = _scale_note(history.referrals, GOAL_HISTORY, "referrals")
    if history.error:
        note = f"{note}; {history.error}" if note else history.error
    return [
        Goal(
            f"page {page}, p95, history stored",
            "<=",
            150,
            timing["p95_ms"],
            "ms",
            timing["p95_ms"] / one_insert_ms,
            f"a bare insert_one ({one_insert_ms:.1f} ms)",
            note,
        )
        for page, timing in history.pages.items()
    ]


def front_door_goals(ceilings: Ceilings, figures: Figures) -> list[Goal]:
    door = figures.front_door
    if door is None:
        return [
            Goal(
                "front door over HTTP, accepted",
                ">=",
                200,
                None,
                "requests/s",
                None,
                note=f"not measured: {figures.front_door_error}",
            )
        ]
    bound = total(figures.front_door_database).per(door.accepted + door.rejected).bound(ceilings)
    transaction_ms = 1000 / ceilings.transaction_per_s
    partners = f"{door.partners} partners at once"
    return [
        Goal(
            "front door over HTTP, accepted",
            ">=",
            200,
            door.accepted_per_s,
            "requests/s",
            door.accepted_per_s / bound,
            "the database's bound at the front door's cost a request",
            partners,
        ),
        Goal(
            "front door over HTTP, p99",
            "<=",
            500,
            door.p99_s * 1000,
            "ms",
            door.p99_s * 1000 / transaction_ms,
            f"a bare transaction ({transaction_ms:.1f} ms)",
            partners,
        ),
        Goal(
            "front door: answered requests not found on their topic",
            "<=",
            0,
            door.lost,
            "requests",
            None,
        ),
    ]


def total_memory_mib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def machine() -> dict[str, Any]:
    return {
        "architecture": host.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(total_memory_mib() / 1024, 1),
        "python": host.python_version(),
        "date": f"{datetime.now(UTC):%Y-%m-%d}",
    }


def database_lines(
    ceilings: Ceilings, work: Mapping[str, DatabaseWork], submissions: int, rate: float
) -> list[str]:
    """The database work a submission cost, per service, and the bound that puts on the rate."""
    each = {service: done.per(submissions) for service, done in work.items()}
    whole = total(work).per(submissions)
    bound = whole.bound(ceilings)
    return [
        f"  {'':<12} {'inserted':>9} {'updated':>9} {'deleted':>9} {'transactions':>13}",
        *(
            f"  {service:<12} {cost.inserted:9.2f} {cost.updated:9.2f} {cost.deleted:9.2f}"
            f" {cost.transactions:13.2f}"
            for service, cost in each.items()
        ),
        f"  {'all four':<12} {whole.inserted:9.2f} {whole.updated:9.2f} {whole.deleted:9.2f}"
        f" {whole.transactions:13.2f}",
        f"  bound = 1 / ({whole.inserted:.2f} / {ceilings.insert_many_per_s:,.0f} insert_many"
        f" + {whole.updated + whole.deleted:.2f} / {ceilings.bulk_upsert_per_s:,.0f} bulk upserts"
        f" + {whole.transactions:.2f} / {ceilings.transaction_per_s:,.0f} transactions)"
        f" = {bound:,.0f} a second",
        f"  measured {rate:,.1f} a second = {rate / bound:.1%} of that bound",
    ]


def front_door_lines(ceilings: Ceilings, figures: Figures) -> list[str]:
    door = figures.front_door
    if door is None:
        return [f"front door over HTTP: not measured: {figures.front_door_error}"]
    transaction_s = 1 / ceilings.transaction_per_s
    return [
        f"front door over HTTP: {door.partners} partners posting at once for"
        f" {door.seconds:.1f} s, the platform running; each partner limited to"
        f" {door.partner_rate_per_s:g} writes/s (burst {door.partner_burst}), together"
        f" {door.limit_per_s:,.0f}/s",
        f"  {door.requests:,} requests: {door.accepted:,} accepted = {door.accepted_per_s:,.1f}/s;"
        f" {door.duplicates} duplicates, {door.rejected} rejected (422),"
        f" {door.rate_limited} rate-limited (429), {door.server_errors} 5xx,"
        f" {door.other_non_2xx} other non-2xx, {door.no_answer} unanswered",
        f"  answered in a median {door.p50_s * 1000:.0f} ms, p99 {door.p99_s * 1000:.0f} ms"
        f" = {door.p50_s / transaction_s:.1f}x and {door.p99_s / transaction_s:.1f}x a bare"
        f" transaction ({transaction_s * 1000:.1f} ms)",
        f"  on the topics: {door.received:,} of {door.accepted:,} accepted on referral-received,"
        f" {door.rejections_found} of {door.rejected} rejected on referral-rejected;"
        f" {door.lost} lost",
        "  database work a request, to its last effect in every service:",
        *(
            f"  {line}"
            for line in database_lines(
                ceilings,
                figures.front_door_database,
                door.accepted + door.rejected,
                door.accepted_per_s,
            )
        ),
    ]


def history_lines(ceilings: Ceilings, history: HistoryFigures) -> list[str]:
    if history.referrals <= 0 or (not history.pages and history.error):
        return [f"history: not measured: {history.error}"]
    one_insert_ms = 1000 / ceilings.insert_one_per_s
    lines = [
        f"with a history of {history.referrals:,} referrals stored (loaded in"
        f" {history.load_s or 0:.0f} s: {loaded_summary(history.loaded)}), month {history.month}:",
        f"  {'page':<24} {'median':>9} {'p95':>9} {'bytes':>9}",
        *(
            f"  {page:<24} {timing['p50_ms']:7.0f} ms {timing['p95_ms']:6.0f} ms"
            f" {timing.get('bytes', 0):9,.0f} = {timing['p95_ms'] / one_insert_ms:.1f}x a bare"
            " insert_one"
            for page, timing in history.pages.items()
        ),
    ]
    if history.latency_p50_s is not None and history.latency_p99_s is not None:
        lines += [
            f"  latency at the steady rate ({history.latency_samples} cases):"
            f" median {history.latency_p50_s * 1000:.0f} ms,"
            f" p99 {history.latency_p99_s * 1000:.0f} ms"
            f" = {history.latency_p50_s / ceilings.round_trip_s:.1f}x and"
            f" {history.latency_p99_s / ceilings.round_trip_s:.1f}x the broker's round trip",
        ]
    if history.peak_memory_mib:
        lines.append(
            "  peak resident memory: "
            + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in history.peak_memory_mib.items())
        )
    if history.error:
        lines.append(f"  then: {history.error}")
    return lines


def loaded_summary(loaded: Mapping[str, Any]) -> str:
    """What the loader stored, in a few words: documents per service when it counts them
    per collection, else its own top-level figures."""
    counts = loaded.get("counts")
    if isinstance(counts, Mapping):
        return ", ".join(
            f"{service} {sum(n for n in collections.values() if isinstance(n, int)):,} documents"
            if isinstance(collections, Mapping)
            else f"{service} {collections}"
            for service, collections in counts.items()
        )
    return ", ".join(
        f"{name} {value}"
        for name, value in loaded.items()
        if isinstance(value, int | float | str) and not isinstance(value, bool)
    )


def report(ceilings: Ceilings, figures: Figures, history: HistoryFigures) -> list[str]:
    throughput = figures.throughput
    rebuild_rate = figures.rebuild_rate
    total_mib = total_memory_mib()
    about = machine()
    lines = [
        f"machine: {about['architecture']}, {about['cores']} cores,"
        f" {about['memory_gib']:.0f} GiB, Python {about['python']}, {about['date']}",
        "",
        "ceilings (nothing on top):",
        *(f"  {line}" for line in ceilings.lines()),
        "",
        f"backlog of {figures.backlog:,} submissions: {figures.referrals:,} referrals,"
        f" {figures.rejections:,} rejections; {figures.cases_allocated:,} cases allocated,"
        f" {figures.cases_queued:,} queued; reporting agrees",
        f"  published in {figures.backlog_published_s:.1f} s; all done in"
        f" {figures.backlog_done_s:.1f} s = {throughput:,.0f} submissions/s",
        f"  = {throughput / ceilings.consume_per_s:.2%} of the broker's consume ceiling,"
        f" {throughput / ceilings.insert_many_per_s:.1%} of the database's insert_many,"
        f" {throughput / ceilings.transaction_per_s:.1f}x its transaction rate",
        "  database work a submission (documents written, transactions committed):",
        *(
            f"  {line}"
            for line in database_lines(
                ceilings, figures.backlog_database, figures.backlog, throughput
            )
        ),
        *cpu_lines(figures),
        f"latency, publication to case-allocated, at {figures.steady_rate:g}/s on a fresh"
        f" database ({figures.fresh_latency_samples} cases):"
        f" median {figures.fresh_latency_p50_s * 1000:.0f} ms,"
        f" p99 {figures.fresh_latency_p99_s * 1000:.0f} ms",
        f"  = {figures.fresh_latency_p50_s / ceilings.round_trip_s:.1f}x and"
        f" {figures.fresh_latency_p99_s / ceilings.round_trip_s:.1f}x the broker's round trip"
        f" ({ceilings.round_trip_s * 1000:.1f} ms; two hops and four services on the way)",
        f"latency, the same after the backlog ({figures.latency_samples} cases):"
        f" median {figures.latency_p50_s * 1000:.0f} ms,"
        f" p99 {figures.latency_p99_s * 1000:.0f} ms",
        f"  = {figures.latency_p99_s / figures.fresh_latency_p99_s:.2f}x the fresh p99;"
        f" {figures.latency_p50_s / ceilings.round_trip_s:.1f}x and"
        f" {figures.latency_p99_s / ceilings.round_trip_s:.1f}x the broker's round trip",
        *front_door_lines(ceilings, figures),
        f"rebuild of reporting: {figures.rebuild_events:,} events in {figures.rebuild_s:.1f} s"
        f" = {rebuild_rate:,.0f} events/s",
        f"  = {rebuild_rate / ceilings.consume_per_s:.1%} of the consume ceiling,"
        f" {rebuild_rate / ceilings.insert_many_per_s:.0%} of the insert_many ceiling",
        "peak resident memory, by the end of the backlog (and of the run):",
        *(
            f"  {name:<22} {mib:7.1f} MiB = {mib / total_mib:.2%} of the machine"
            f" ({figures.peak_memory_end_mib.get(name, mib):.1f} MiB)"
            for name, mib in sorted(figures.peak_memory_mib.items())
        ),
        *history_lines(ceilings, history),
        "",
        "goals (issue 20):",
        *(goal.line() for goal in goals(ceilings, figures, history)),
    ]
    return lines


def cpu_lines(figures: Figures) -> list[str]:
    """Where the machine's cores went during the backlog: each process's CPU seconds, a
    thousand submissions' worth, and its share of what the cores could give in that time."""
    cores = os.cpu_count() or 1
    available = cores * figures.backlog_done_s
    total = sum(figures.backlog_cpu_s.values())
    return [
        f"  CPU during the backlog: {total:,.0f} s of the {available:,.0f} s the"
        f" {cores} cores had = {total / available:.0%} busy; by process:",
        *(
            f"    {name:<22} {seconds:7.1f} s = {seconds * 1000 / figures.backlog:.2f} s"
            f" a 1,000 submissions, {seconds / available:.0%} of the cores"
            for name, seconds in sorted(
                figures.backlog_cpu_s.items(), key=lambda item: item[1], reverse=True
            )
        ),
    ]


def results(ceilings: Ceilings, figures: Figures, history: HistoryFigures) -> dict[str, Any]:
    """What ``--json`` writes: the machine, the ceilings, each goal, and every figure."""
    written: dict[str, Any] = finite(
        {
            "machine": machine(),
            "ceilings": asdict(ceilings),
            "goals": [goal.as_json() for goal in goals(ceilings, figures, history)],
            "figures": {
                **asdict(figures),
                "database": {
                    "backlog": database_summary(
                        ceilings, figures.backlog_database, figures.backlog
                    ),
                    "front_door": database_summary(
                        ceilings,
                        figures.front_door_database,
                        figures.front_door.accepted + figures.front_door.rejected
                        if figures.front_door
                        else 0,
                    ),
                },
                "history": asdict(history),
            },
        }
    )
    return written


def database_summary(
    ceilings: Ceilings, work: Mapping[str, DatabaseWork], submissions: int
) -> dict[str, Any]:
    """A submission's cost to the database, per service and in all, and the bound it sets."""
    if not work or submissions <= 0:
        return {}
    whole = total(work).per(submissions)
    return {
        "submissions": submissions,
        "per_submission": {
            service: asdict(done.per(submissions)) for service, done in work.items()
        },
        "per_submission_total": asdict(whole),
        "bound_per_s": whole.bound(ceilings),
    }


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity made null: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=GOAL_BACKLOG)
    parser.add_argument("--rate", type=float, default=10.0, help="steady rate, a second")
    parser.add_argument("--latency-s", type=float, default=30.0, help="seconds at that rate")
    parser.add_argument("--front-door-partners", type=int, default=50, help="0 skips it")
    parser.add_argument("--front-door-s", type=float, default=30.0, help="seconds they post")
    parser.add_argument(
        "--history", type=int, default=GOAL_HISTORY, help="referrals of history; 0 skips it"
    )
    parser.add_argument("--page-samples", type=int, default=40, help="requests of each page")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--limit-s", type=float, default=3600.0, help="give up after")
    parser.add_argument("--json", type=Path, help="also write the goals and figures here")
    args = parser.parse_args()
    print("measuring the ceilings...", flush=True)
    ceilings = measure()
    with tempfile.TemporaryDirectory() as data_dir:
        platform = start_platform(data_dir)
        try:
            figures = asyncio.run(run(platform, args))
        finally:
            stop_platform(platform)
    history = history_phase(args)
    if args.json:  # first: a long run's figures are kept whatever the printing does
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(results(ceilings, figures, history), indent=2, allow_nan=False)
        )
    print("\n".join(report(ceilings, figures, history)))
    if args.json:
        print(f"\ngoals and figures written to {args.json}")


if __name__ == "__main__":
    main()
