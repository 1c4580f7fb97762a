"""The fault campaign: prove the platform loses nothing while its processes die.

    python -m resilience.campaign --submissions 2000 --kills-per-service 2 --restart-database

Starts the broker, an on-disk SecantusDB and the four services as separate processes, then,
all at once: partners publish a seeded mix of submissions on ``referral-submitted`` (some
over ``POST /referrals``); managers close cases and auditors draw and complete audits over
HTTP; and each service in turn is killed with SIGKILL at a random moment and restarted,
``--kills-per-service`` times, with the database restarted and the broker SIGKILLed and
restarted once each in the first round.
When every outbox is empty, every consumer has caught up and the figures have stopped
changing, it checks the invariants (``resilience.invariants``), prints them, and exits 1 on
any breach. The seed fixes the submissions, the order of the faults and the managers'
choices; the moments still vary with the machine's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from resilience.client import PlatformClient
from resilience.invariants import Check, Stores, check_everything
from resilience.plan import TOPIC, Channel, Plan, Send, make_plan, partner_event
from resilience.processes import SERVICES, CampaignPlatform
from shared.mongo import create_mongo_client
from shared.secrets import new_secret

log = logging.getLogger("campaign")

OUTCOMES = ("needs_met", "stepped_up", "disengaged", "moved_away", "other")
DATABASE = "database"
BROKER = "broker"
GRADES = ("outstanding", "good", "requires_improvement", "inadequate")


@dataclass(frozen=True)
class CampaignConfig:
    submissions: int = 2000
    seed: int = 7
    kills_per_service: int = 2
    restart_database: bool = True
    database_down_s: float = 35.0
    """How long the database stays down: longer than a consumer's three tries take."""
    kill_broker: bool = True
    broker_down_s: float = 5.0
    """How long the SIGKILLed broker stays down before it starts again."""
    rate_per_s: float = 25.0
    """At most this many submissions a second; fewer when the faults need longer."""
    cap_per_fte: int | None = None
    """Shrink the sample teams' caps (a short run needs a queue too); None keeps them."""
    close_share: float = 0.12
    """Cases closed by managers during the run, as a share of the submissions."""
    audits_per_month: int = 2
    settle_timeout_s: float = 1200.0
    work_dir: Path | None = None


@dataclass
class Progress:
    """What the campaign did, for the printed account."""

    kills: list[str] = field(default_factory=list)
    database_restarts: int = 0
    broker_kills: int = 0
    published: int = 0
    sent_more: asyncio.Event = field(default_factory=asyncio.Event)
    http_sends: int = 0
    http_retries: int = 0
    closed: int = 0
    audits_completed: int = 0
    publishing_done: bool = False
    faults_done: bool = False


@dataclass(frozen=True)
class CampaignResult:
    plan: Plan
    progress: Progress
    checks: list[Check]
    seconds: float

    @property
    def breaches(self) -> list[Check]:
        return [check for check in self.checks if not check.holds]

    def report(self) -> str:
        plan_counts = ", ".join(f"{name} {count}" for name, count in self.plan.counts().items())
        lines = [
            f"plan: {plan_counts}",
            f"faults: {len(self.progress.kills)} kills ({', '.join(self.progress.kills)}), "
            f"{self.progress.database_restarts} database restart(s), "
            f"{self.progress.broker_kills} broker kill(s)",
            f"over HTTP: {self.progress.http_sends} submissions "
            f"({self.progress.http_retries} retried), {self.progress.closed} cases closed, "
            f"{self.progress.audits_completed} audits completed",
            *(check.line() for check in self.checks),
            f"{len(self.checks)} checks, {len(self.breaches)} breaches, {self.seconds:.0f}s",
        ]
        return "\n".join(lines)


async def run_campaign(config: CampaignConfig) -> CampaignResult:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work_dir = config.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="campaign-"))
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        secret = new_secret()
        platform = CampaignPlatform(
            work_dir,
            extra_env={
                "EARLYHELP_AUDITS_PER_MONTH": str(config.audits_per_month),
                "EARLYHELP_AUTH_SECRET": secret,
                "EARLYHELP_DEAD_LETTER_KEY": new_secret(),
                "EARLYHELP_MATCH_KEY_SECRET": new_secret(),
            },
        )
        try:
            await asyncio.to_thread(platform.start_servers)
            platform.start_services()
            client = PlatformClient(platform.ports, secret)
            try:
                await platform.wait_ready(client)
                if config.cap_per_fte is not None:
                    for team in await client.teams():
                        await client.set_team_cap(team["id"], config.cap_per_fte)
                plan, progress = await _run_faults(platform, client, config)
                checks = await _settle_and_check(platform, client, plan, config)
            finally:
                await client.close()
        finally:
            await asyncio.to_thread(platform.stop)
    return CampaignResult(plan, progress, checks, time.monotonic() - started)


async def _run_faults(
    platform: CampaignPlatform, client: PlatformClient, config: CampaignConfig
) -> tuple[Plan, Progress]:
    plan = make_plan(config.submissions, config.seed, today=datetime.now(UTC).date())
    progress = Progress()
    rng = random.Random(config.seed + 1)
    rate_per_s = len(plan.sends) / publication_seconds(config, len(plan.sends))
    await asyncio.gather(
        _publish(platform, client, plan.sends, rate_per_s, progress),
        _break_things(
            platform, client, config, random.Random(rng.random()), len(plan.sends), progress
        ),
        _manage(platform, client, config, random.Random(rng.random()), progress),
    )
    return plan, progress


async def _publish(
    platform: CampaignPlatform,
    client: PlatformClient,
    sends: list[Send],
    rate_per_s: float,
    progress: Progress,
) -> None:
    """Partners send at a steady rate; an HTTP partner retries until it has an answer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=platform.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    posting: set[asyncio.Task[None]] = set()
    try:
        began = time.monotonic()
        for index, send in enumerate(sends):
            if send.channel is Channel.KAFKA:
                await producer.send(
                    TOPIC, partner_event(send), key=send.submission.submission_id.encode()
                )
            else:
                task = asyncio.create_task(_post_until_answered(client, send, progress))
                posting.add(task)
                task.add_done_callback(posting.discard)
            progress.published = index + 1
            progress.sent_more.set()
            ahead = began + (index + 1) / rate_per_s - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        await asyncio.gather(*posting)
    finally:
        progress.publishing_done = True
        await producer.stop()


async def _post_until_answered(client: PlatformClient, send: Send, progress: Progress) -> None:
    progress.http_sends += 1
    deadline = time.monotonic() + 300
    while True:
        try:
            response = await client.submit(send.submission.document)
            if response.status_code in (202, 422):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer to {send.submission.key} over HTTP")
        progress.http_retries += 1
        await asyncio.sleep(0.5)


async def _break_things(
    platform: CampaignPlatform,
    client: PlatformClient,
    config: CampaignConfig,
    rng: random.Random,
    sends: int,
    progress: Progress,
) -> None:
    """Each service in turn, SIGKILLed at a random moment and restarted; the database
    restarted once, and the broker SIGKILLed and restarted once.

    The moments are random points of the publication, so every fault meets traffic.
    """
    order: list[str] = []
    for number in range(config.kills_per_service):
        order += rng.sample(SERVICES, len(SERVICES))
        if number == 0 and config.restart_database:
            order.append(DATABASE)
        if number == 0 and config.kill_broker:
            order.append(BROKER)
    # One random moment in each of as many equal stretches of the publication as there are
    # faults, so they spread over it rather than bunch.
    moments = [
        int((number + rng.uniform(0.1, 0.9)) / len(order) * sends) for number in range(len(order))
    ]
    server_faults = {
        DATABASE: (platform.restart_database, config.database_down_s),
        BROKER: (platform.kill_broker, config.broker_down_s),
    }
    try:
        for target, name in zip(moments, order, strict=True):
            while progress.published < target:
                progress.sent_more.clear()
                await progress.sent_more.wait()
            if name in server_faults:
                fault, down_s = server_faults[name]
                log.info("%s goes down (%d submissions sent)", name, progress.published)
                await asyncio.to_thread(fault, down_s)
                if name == DATABASE:
                    progress.database_restarts += 1
                else:
                    progress.broker_kills += 1
                ready_s = await platform.wait_ready(client)
                log.info("%s back; every service ready after %.1fs", name, ready_s)
                continue
            service = platform.services[name]
            service.kill()
            progress.kills.append(name)
            log.info("killed %s (%d submissions sent)", name, progress.published)
            await asyncio.sleep(rng.uniform(0.1, 2.0))
            service.start()
            ready_s = await platform.wait_ready(client, (name,))
            log.info("%s ready again after %.1fs", name, ready_s)
    finally:
        progress.faults_done = True


def publication_seconds(config: CampaignConfig, sends: int) -> float:
    """Long enough for every fault to meet traffic: a restart takes about ten seconds."""
    faults = config.kills_per_service * len(SERVICES)
    # The outage counts twice: the kills after it need time to catch up with their stretches.
    outage = 2 * (config.database_down_s + 10) if config.restart_database else 0
    outage += 2 * (config.broker_down_s + 10) if config.kill_broker else 0
    return max(sends / config.rate_per_s, faults * 12 + outage + 10)


async def _manage(
    platform: CampaignPlatform,
    client: PlatformClient,
    config: CampaignConfig,
    rng: random.Random,
    progress: Progress,
) -> None:
    """Managers close cases and auditors draw and complete audits while the faults happen.

    A request that fails (its service is down) is simply made again later; one whose
    answer was lost may have taken effect, which the invariants read from the stores.
    """
    to_close = int(config.submissions * config.close_share)
    month = datetime.now(UTC).strftime("%Y-%m")
    standards: list[str] = []
    while not (progress.publishing_done and progress.faults_done):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        with contextlib.suppress(httpx.HTTPError):
            if progress.closed < to_close:
                await _close_some(client, rng, progress, to_close)
            if rng.random() < 0.3:
                standards = standards or await client.standards()
                await _audit_some(client, rng, month, standards, progress)


async def _close_some(
    client: PlatformClient, rng: random.Random, progress: Progress, to_close: int
) -> None:
    cases = [case for case in await client.open_cases() if case["allocation"] == "allocated"]
    for case in rng.sample(cases, min(len(cases), rng.randint(1, 4), to_close - progress.closed)):
        if await client.close_case(case["id"], rng.choice(OUTCOMES)) == 200:
            progress.closed += 1


async def _audit_some(
    client: PlatformClient,
    rng: random.Random,
    month: str,
    standards: list[str],
    progress: Progress,
) -> None:
    await client.draw_audits(month)
    assigned = await client.assigned_audits(month)
    for audit in rng.sample(assigned, min(len(assigned), rng.randint(0, 3))):
        scores = {standard: rng.choice(GRADES) for standard in standards}
        if await client.complete_audit(audit["id"], audit["auditor_id"], scores) == 200:
            progress.audits_completed += 1


async def _settle_and_check(
    platform: CampaignPlatform, client: PlatformClient, plan: Plan, config: CampaignConfig
) -> list[Check]:
    mongo = create_mongo_client(platform.mongodb_uri, app_name="campaign")
    stores = Stores(mongo, platform.database_prefix)
    try:
        await _settled(platform, client, stores, config.settle_timeout_s)
        platform.check_alive()
        return await check_everything(
            plan, stores, client, bootstrap_servers=platform.bootstrap_servers
        )
    finally:
        await mongo.close()


async def _settled(
    platform: CampaignPlatform, client: PlatformClient, stores: Stores, timeout_s: float
) -> None:
    """Until every outbox is empty, no consumer lags and the stores stopped changing."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, ...] | None = None
    steady = 0
    while steady < 3:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the platform did not settle within {timeout_s:.0f}s")
        await asyncio.sleep(2.0)
        platform.check_alive()
        unsent = await stores.unsent()
        try:
            lag = sum([await _lag(client, name) for name in SERVICES])
        except httpx.HTTPError as error:  # a busy server closing an idle connection, say
            log.info("settling: metrics unanswered (%r); asking again", error)
            steady = 0
            continue
        now = await stores.fingerprint()
        steady = steady + 1 if (unsent == 0 and lag == 0 and now == last) else 0
        last = now
        log.info("settling: %d unsent, lag %d, steady %d", unsent, lag, steady)


async def _lag(client: PlatformClient, service: str) -> int:
    text = await client.metrics(service)
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("earlyhelp_consumer_lag{")
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resilience.campaign", description=__doc__)
    parser.add_argument("--submissions", type=int, default=CampaignConfig.submissions)
    parser.add_argument("--seed", type=int, default=CampaignConfig.seed)
    parser.add_argument("--kills-per-service", type=int, default=CampaignConfig.kills_per_service)
    parser.add_argument("--restart-database", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--database-down-s", type=float, default=CampaignConfig.database_down_s)
    parser.add_argument("--kill-broker", action=argparse.BooleanOptionalAction, default=True,
                        help="SIGKILL the broker once mid-run and start it again")  # fmt: skip
    parser.add_argument("--rate", type=float, default=CampaignConfig.rate_per_s,
                        help="submissions a second")  # fmt: skip
    parser.add_argument("--cap-per-fte", type=int, default=None,
                        help="shrink every sample team's cap per FTE")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the database, logs and server output here")  # fmt: skip
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = CampaignConfig(
        submissions=arguments.submissions,
        seed=arguments.seed,
        kills_per_service=arguments.kills_per_service,
        restart_database=arguments.restart_database,
        database_down_s=arguments.database_down_s,
        kill_broker=arguments.kill_broker,
        rate_per_s=arguments.rate,
        cap_per_fte=arguments.cap_per_fte,
        work_dir=arguments.work_dir,
    )
    result = asyncio.run(run_campaign(config))
    print(result.report(), flush=True)
    return 1 if result.breaches else 0


if __name__ == "__main__":
    sys.exit(main())
