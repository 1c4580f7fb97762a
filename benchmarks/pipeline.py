"""The benchmark: the platform's figures beside the ceilings of the broker and database under it.

In one run, on the embedded servers exactly as ``make run`` starts them:

1. the ceilings (``benchmarks.ceilings``): raw produce and consume rates, raw insert rates;
2. a backlog of partner traffic (``simulator.traffic``: routes in their shares, siblings,
   repeat families, step-downs, invalid requests) published at once, timed from the first
   publication until every submission is answered, every case allocated or queued, and
   reporting's figures agree with the referral and allocation services' own records;
3. latency from a partner's publication to ``case-allocated``, at a steady rate;
4. rebuilding reporting from the retained events;
5. each service's peak resident memory.

Usage: ``make bench`` or ``python -m benchmarks.pipeline --backlog 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from benchmarks.ceilings import Ceilings, measure
from shared import topics
from shared.auth import Role, mint_token
from shared.embedded import free_port, kafka_bootstrap, mongodb_uri
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
CHECK_INTERVAL_S = 1.0
"""Between two looks at the services' progress: often enough to time the end within it."""
"""Consecutive checks that must find nothing left to do before the run counts as done."""


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


@dataclass(frozen=True)
class Figures:
    backlog: int
    backlog_published_s: float
    backlog_done_s: float
    referrals: int
    rejections: int
    cases_allocated: int
    cases_queued: int
    steady_rate: float
    fresh_latency_samples: int
    fresh_latency_p50_s: float
    fresh_latency_p99_s: float
    """At the steady rate on a fresh database, before the backlog."""
    latency_samples: int
    latency_p50_s: float
    latency_p99_s: float
    """At the steady rate after the backlog."""
    rebuild_events: int
    rebuild_s: float
    peak_memory_mib: dict[str, float]


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


def peak_memory(root: int) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each process the platform started."""
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if parent != root:
            continue
        name = (
            command.split()[-1]
            if "services." in command
            else ("kafka (broker)" if "kafka.Kafka" in command else "secantusdb (database)")
        )
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                found[name] = int(line.split()[1]) / 1024
    return found


def start_platform(data_dir: str) -> Platform:
    secret = new_secret()
    ports = {service: free_port() for service in SERVICES}
    kafka_port, mongodb_port = free_port(), free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI"}
    }
    env |= {
        "EARLYHELP_DATA_DIR": data_dir,
        "EARLYHELP_KAFKA_PORT": str(kafka_port),
        "EARLYHELP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "EARLYHELP_MONGODB_PORT": str(mongodb_port),
        "EARLYHELP_LOG_LEVEL": "WARNING",
        "EARLYHELP_AUTH_SECRET": secret,
        "EARLYHELP_DEAD_LETTER_KEY": new_secret(),
        "EARLYHELP_MATCH_KEY_SECRET": new_secret(),
        **{f"EARLYHELP_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bootstrap, mongodb = kafka_bootstrap(kafka_port), mongodb_uri(mongodb_port)
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


async def wait_ready(http: httpx.AsyncClient, platform: Platform) -> None:
    deadline = time.monotonic() + 180
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
        started = time.perf_counter()
        published_s = await publish_backlog(platform.bootstrap, args.backlog, args.seed)
        await wait_until_done(http, platform, args.limit_s)
        done_s = time.perf_counter() - started
        counts = await agreement(http, platform)
        print(f"backlog of {args.backlog:,} done in {done_s:.1f} s", flush=True)
        samples, p50, p99 = await steady_latency(
            platform.bootstrap, args.rate, args.latency_s, args.seed + 1
        )
        await wait_until_done(http, platform, args.limit_s)
        await agreement(http, platform)
    events, rebuild_s = rebuild(platform)
    return Figures(
        backlog=args.backlog,
        backlog_published_s=published_s,
        backlog_done_s=done_s,
        referrals=counts["referrals"],
        rejections=counts["rejections"],
        cases_allocated=counts["allocated"],
        cases_queued=counts["queued"],
        steady_rate=args.rate,
        fresh_latency_samples=fresh[0],
        fresh_latency_p50_s=fresh[1],
        fresh_latency_p99_s=fresh[2],
        latency_samples=samples,
        latency_p50_s=p50,
        latency_p99_s=p99,
        rebuild_events=events,
        rebuild_s=rebuild_s,
        peak_memory_mib=peak_memory(platform.process.pid),
    )


def report(ceilings: Ceilings, figures: Figures) -> list[str]:
    throughput = figures.backlog / figures.backlog_done_s
    rebuild_rate = figures.rebuild_events / figures.rebuild_s
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    lines = [
        f"machine: {host.machine()}, {os.cpu_count()} cores, {total_mib / 1024:.0f} GiB,"
        f" Python {host.python_version()}, {datetime.now(UTC):%Y-%m-%d}",
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
        f"rebuild of reporting: {figures.rebuild_events:,} events in {figures.rebuild_s:.1f} s"
        f" = {rebuild_rate:,.0f} events/s",
        f"  = {rebuild_rate / ceilings.consume_per_s:.1%} of the consume ceiling,"
        f" {rebuild_rate / ceilings.bulk_upsert_per_s:.0%} of the bulk-upsert ceiling",
        "peak resident memory:",
        *(
            f"  {name:<22} {mib:7.1f} MiB = {mib / total_mib:.2%} of the machine"
            for name, mib in sorted(figures.peak_memory_mib.items())
        ),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=10.0, help="steady rate, a second")
    parser.add_argument("--latency-s", type=float, default=30.0, help="seconds at that rate")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--limit-s", type=float, default=3600.0, help="give up after")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print("measuring the ceilings...", flush=True)
    ceilings = measure()
    with tempfile.TemporaryDirectory() as data_dir:
        platform = start_platform(data_dir)
        try:
            figures = asyncio.run(run(platform, args))
        finally:
            platform.process.send_signal(signal.SIGINT)
            platform.process.wait(120)
    print("\n".join(report(ceilings, figures)))
    if args.json:
        args.json.write_text(
            json.dumps({"ceilings": asdict(ceilings), "figures": asdict(figures)}, indent=2)
        )


if __name__ == "__main__":
    main()
