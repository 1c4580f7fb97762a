"""``python -m simulator``: partner systems' traffic on ``referral-submitted``.

    python -m simulator --rate 5            # five a second, until Ctrl-C (or --count N)
    python -m simulator --backlog 1000      # a thousand as fast as the broker takes them

It publishes as a partner's system does: one CloudEvent per submission with the partner as
its source, ``acks=all``, keyed by submission id, so a resend of a submission lands on the
partition of the first and is answered after it. The mix is ``simulator.traffic``'s. It
prints a line every few seconds while it runs at a rate, and what it sent at the end.
``make run`` runs it beside the services when ``EARLYHELP_DEMO_RATE`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.embedded import kafka_bootstrap
from shared.kafka import ensure_topics
from shared.kafka_security import KafkaSecurity
from shared.settings import DEFAULT_KAFKA_PORT
from shared.topics import REFERRAL_SUBMITTED, topic_name
from simulator.traffic import Kind, Tally, partner_event, traffic

IN_FLIGHT = 1000
"""Records sent before waiting for their acknowledgements: batches fill, memory stays flat."""


class SimulatorSettings(BaseSettings):
    """Where to publish, from the variables the services read, so it finds their broker."""

    model_config = SettingsConfigDict(env_prefix="EARLYHELP_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_partitions: int = Field(default=4, ge=1)
    topic_namespace: str = ""

    @property
    def bootstrap(self) -> str:
        """The configured broker, else the embedded one ``make run`` starts."""
        return self.kafka_bootstrap_servers or kafka_bootstrap(self.kafka_port)


@dataclass(frozen=True)
class Options:
    bootstrap: str
    topic: str
    seed: int
    rate: float | None = None
    """Submissions a second; None sends as fast as the broker takes them."""
    count: int | None = None
    """How many to send; None sends until stopped."""
    partitions: int = 4
    report_every_s: float = 5.0


def parse_args(argv: Sequence[str] | None, settings: SimulatorSettings) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Publish partner traffic (referral-submitted) in realistic proportions.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--rate", type=float, help="submissions a second, steadily, until Ctrl-C or --count"
    )
    mode.add_argument(
        "--backlog", type=int, metavar="N", help="publish N as fast as possible, then stop"
    )
    parser.add_argument("--count", type=int, metavar="N", help="with --rate: stop after N")
    parser.add_argument(
        "--seed", type=int, help="fixes the traffic; by default each run has its own (printed)"
    )
    parser.add_argument(
        "--bootstrap",
        default=settings.bootstrap,
        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else the embedded"
        " broker's port, EARLYHELP_KAFKA_PORT)",
    )
    parser.add_argument(
        "--topic-namespace",
        default=settings.topic_namespace,
        help="prefix of the topic, as the services' EARLYHELP_TOPIC_NAMESPACE (default empty)",
    )
    parser.add_argument(
        "--report-every", type=float, default=5.0, metavar="S", help="with --rate: seconds"
    )
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    if args.backlog is not None and args.backlog < 0:
        parser.error("--backlog must be 0 or more")
    if args.count is not None and args.backlog is not None:
        parser.error("--count goes with --rate; --backlog is a count already")
    return Options(
        bootstrap=args.bootstrap,
        topic=topic_name(REFERRAL_SUBMITTED, args.topic_namespace),
        # A new seed each run by default: a fixed one sends the same submission ids again,
        # which the front door rightly answers as duplicates.
        seed=args.seed if args.seed is not None else secrets.randbelow(10**9),
        rate=args.rate,
        count=args.backlog if args.backlog is not None else args.count,
        partitions=settings.kafka_partitions,
        report_every_s=args.report_every,
    )


async def publish(
    options: Options, *, stop: asyncio.Event, out: TextIO, today: date | None = None
) -> Tally:
    """Send the traffic until ``options.count`` is reached or ``stop`` is set.

    Returns once every record sent is acknowledged by all in-sync replicas.
    """
    # The topic may not exist yet (a backlog published before the services start), and
    # it should have the services' partitions, not whatever the broker auto-creates.
    await ensure_topics(options.bootstrap, [options.topic], partitions=options.partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=options.bootstrap,
        client_id="partner-simulator",
        acks="all",
        enable_idempotence=True,
        linger_ms=5 if options.rate is not None else 20,
        max_batch_size=256 * 1024,
        **KafkaSecurity().aiokafka_options(),
    )
    await producer.start()
    tally = Tally()
    window = IN_FLIGHT if options.rate is None else max(1, min(IN_FLIGHT, int(options.rate)))
    try:
        submissions = traffic(options.seed, today=today or datetime.now(UTC).date())
        if options.count is not None:
            submissions = itertools.islice(submissions, options.count)
        in_flight: list[asyncio.Future[Any]] = []
        started = time.monotonic()
        next_report = started + options.report_every_s
        for index, submission in enumerate(submissions):
            due = started + index / options.rate if options.rate is not None else 0.0
            if await _stopped_before(stop, due):
                break
            event = partner_event(submission, event_id=str(uuid.uuid4()), now=datetime.now(UTC))
            in_flight.append(
                await producer.send(options.topic, event, key=submission.submission_id.encode())
            )
            tally.add(submission)
            if len(in_flight) >= window:
                await asyncio.gather(*in_flight)
                in_flight.clear()
            if options.rate is not None and time.monotonic() >= next_report:
                elapsed = time.monotonic() - started
                print(
                    f"simulator: {tally.total} sent in {elapsed:.0f} s"
                    f" ({tally.total / elapsed:.1f}/s), {tally.kinds[Kind.INVALID.value]} invalid",
                    file=out,
                    flush=True,
                )
                next_report += options.report_every_s
        await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    return tally


async def _stopped_before(stop: asyncio.Event, due: float) -> bool:
    """Wait until the monotonic time ``due``; True when asked to stop first."""
    delay = due - time.monotonic()
    if delay <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True


def account(options: Options, tally: Tally, elapsed_s: float) -> str:
    rate = tally.total / elapsed_s if elapsed_s > 0 else 0.0
    return "\n".join(
        [
            f"simulator: sent {tally.total} submissions to {options.topic} on"
            f" {options.bootstrap} in {elapsed_s:.1f} s ({rate:.0f}/s), seed {options.seed}",
            *(f"  {line}" for line in tally.report()),
        ]
    )


async def _run(options: Options) -> tuple[Tally, float]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    tally = await publish(options, stop=stop, out=sys.stdout)
    return tally, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s simulator %(message)s")
    options = parse_args(argv, SimulatorSettings())
    try:
        tally, elapsed_s = asyncio.run(_run(options))
    except KafkaError as error:
        print(f"simulator: cannot publish on {options.bootstrap}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(account(options, tally, elapsed_s), flush=True)
