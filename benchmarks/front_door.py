"""The front door over HTTP: many partners' systems posting at once, the platform running.

Each partner has a key of its own, issued by an administrator over ``POST /partner-keys``
as a council would, and posts valid requests (``simulator.traffic``'s, as that partner's)
one after another for the whole window, each as soon as the last was answered, waiting as
``Retry-After`` says when its write limit answers 429. Speed alone proves little: every
request answered 202 must then be on ``referral-received``, and every one answered 422 on
``referral-rejected``, or the front door lost what it promised to keep.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.referral.domain import ROUTE_CATALOGUE
from shared import topics
from shared.kafka import topic_partitions
from shared.settings import ServiceSettings
from simulator.traffic import traffic

PARTNERS = 50
SECONDS = 30.0
KEY_HEADER = "x-partner-key"
NO_ANSWER = 0
"""The status recorded for a request that got no answer (a timeout, a reset)."""


@dataclass(frozen=True)
class Answer:
    """One request: who sent it, what came back, and how long that took."""

    partner_id: str
    submission_id: str
    status: int
    seconds: float
    duplicate: bool = False


@dataclass(frozen=True)
class FrontDoorFigures:
    partners: int
    seconds: float
    """From the first request to the last answer."""
    requests: int
    accepted: int
    """Answered 202 as a new referral."""
    duplicates: int
    """Answered 202 as one accepted before (none is expected)."""
    rejected: int
    """Answered 422, stored as a rejection (none is expected: every request is valid)."""
    rate_limited: int
    """Answered 429: the partner wrote faster than its limit."""
    server_errors: int
    other_non_2xx: int
    """Neither 2xx, 422, 429 nor 5xx."""
    no_answer: int
    accepted_per_s: float
    p50_s: float
    p99_s: float
    """Of every answered request."""
    received: int
    """Accepted requests found on referral-received."""
    rejections_found: int
    """Rejected requests found on referral-rejected."""
    lost: int
    """Accepted or rejected requests on neither topic."""
    partner_rate_per_s: float
    partner_burst: int
    """The write limit each partner had (the services' defaults)."""

    @property
    def limit_per_s(self) -> float:
        """What the partners' write limits allow together, sustained."""
        return self.partners * self.partner_rate_per_s


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value ``fraction`` of the way up the sorted ``values`` (nearest rank, as the
    pipeline's latencies are read)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summarise(
    answers: Sequence[Answer],
    *,
    partners: int,
    seconds: float,
    received: set[tuple[str, str]],
    rejections: set[tuple[str, str]],
    limits: ServiceSettings,
) -> FrontDoorFigures:
    """The figures of a run, from its answers and the keys found on the two topics."""
    new = [answer for answer in answers if answer.status == 202 and not answer.duplicate]
    rejected = [answer for answer in answers if answer.status == 422]
    answered = [answer.seconds for answer in answers if answer.status != NO_ANSWER]
    counted = {202, 422, 429, NO_ANSWER}

    def key(answer: Answer) -> tuple[str, str]:
        return (answer.partner_id, answer.submission_id)

    found = sum(key(answer) in received for answer in new)
    found_rejections = sum(key(answer) in rejections for answer in rejected)
    return FrontDoorFigures(
        partners=partners,
        seconds=seconds,
        requests=len(answers),
        accepted=len(new),
        duplicates=sum(answer.status == 202 and answer.duplicate for answer in answers),
        rejected=len(rejected),
        rate_limited=sum(answer.status == 429 for answer in answers),
        server_errors=sum(answer.status >= 500 for answer in answers),
        other_non_2xx=sum(
            answer.status not in counted and not 200 <= answer.status < 300 and answer.status < 500
            for answer in answers
        ),
        no_answer=sum(answer.status == NO_ANSWER for answer in answers),
        accepted_per_s=len(new) / seconds if seconds > 0 else 0.0,
        p50_s=statistics.median(answered) if answered else float("nan"),
        p99_s=percentile(answered, 0.99),
        received=found,
        rejections_found=found_rejections,
        lost=len(new) - found + len(rejected) - found_rejections,
        partner_rate_per_s=limits.write_rate_per_s,
        partner_burst=limits.write_burst,
    )


def valid_documents(seed: int, today: date) -> Iterator[dict[str, Any]]:
    """Partners' valid requests, in the simulator's mix of routes and families."""
    return (submission.document for submission in traffic(seed, today=today) if submission.valid)


async def issue_keys(
    http: httpx.AsyncClient, referral_url: str, admin: str, partner_ids: Iterable[str]
) -> dict[str, str]:
    """A key for each partner, on every route; the administrator's own writes are limited
    too, so a 429 is waited out."""
    routes = sorted(route.id for route in ROUTE_CATALOGUE)
    keys: dict[str, str] = {}
    for partner_id in partner_ids:
        while True:
            issued = await http.post(
                f"{referral_url}/partner-keys",
                json={"partner_id": partner_id, "routes": routes, "name": "front-door benchmark"},
                headers={"authorization": f"Bearer {admin}"},
            )
            if issued.status_code != 429:
                break
            await asyncio.sleep(float(issued.headers.get("retry-after", "1")))
        issued.raise_for_status()
        keys[partner_id] = issued.json()["key"]
    return keys


async def _post_until(
    referral_url: str,
    partner_id: str,
    key: str,
    documents: Iterator[dict[str, Any]],
    deadline: float,
    answers: list[Answer],
) -> None:
    """One partner's system: a request at a time until ``deadline``."""
    headers = {KEY_HEADER: key, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        while time.perf_counter() < deadline:
            document = {**next(documents), "partner_id": partner_id}
            submission_id = str(document["submission_id"])
            started = time.perf_counter()
            try:
                answer = await http.post(
                    f"{referral_url}/referrals", content=json.dumps(document), headers=headers
                )
            except httpx.HTTPError:
                answers.append(Answer(partner_id, submission_id, NO_ANSWER, 0.0))
                continue
            took = time.perf_counter() - started
            duplicate = answer.status_code == 202 and bool(answer.json().get("duplicate"))
            answers.append(Answer(partner_id, submission_id, answer.status_code, took, duplicate))
            if answer.status_code == 429:
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))


async def _keys_on(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    wanted: dict[str, set[tuple[str, str]]],
    limit_s: float,
) -> dict[str, set[tuple[str, str]]]:
    """The (partner, submission) keys of each topic's records after ``starts``, read until
    every wanted key is found or ``limit_s`` has passed."""
    found: dict[str, set[tuple[str, str]]] = {topic: set() for topic in wanted}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(starts))
        for partition, offset in starts.items():
            consumer.seek(partition, offset)
        deadline = time.monotonic() + limit_s
        while any(wanted[topic] - found[topic] for topic in wanted):
            if time.monotonic() > deadline:
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for partition, records in batches.items():
                for record in records:
                    data = json.loads(record.value).get("data", {})
                    found[partition.topic].add(
                        (str(data.get("partner_id")), str(data.get("submission_id")))
                    )
    finally:
        await consumer.stop()
    return found


async def measure_front_door(
    referral_url: str,
    bootstrap: str,
    admin_token: str,
    *,
    partners: int = PARTNERS,
    seconds: float = SECONDS,
    seed: int = 0,
    today: date,
    settle_s: float = 600.0,
) -> FrontDoorFigures:
    """``partners`` systems posting at once for ``seconds``, then each answer looked for
    on the topics (for up to ``settle_s``)."""
    partner_ids = [f"front-door-{number:02d}" for number in range(1, partners + 1)]
    async with httpx.AsyncClient(timeout=30) as http:
        keys = await issue_keys(http, referral_url, admin_token, partner_ids)
    names = {topics.REFERRAL_RECEIVED, topics.REFERRAL_REJECTED}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        starts: dict[TopicPartition, int] = await consumer.end_offsets(
            await topic_partitions(bootstrap, names)
        )
    finally:
        await consumer.stop()
    documents = valid_documents(seed, today)
    answers: list[Answer] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _post_until(
                referral_url, partner_id, keys[partner_id], documents, started + seconds, answers
            )
            for partner_id in partner_ids
        )
    )
    took = time.perf_counter() - started
    wanted = {
        topics.REFERRAL_RECEIVED: {
            (answer.partner_id, answer.submission_id)
            for answer in answers
            if answer.status == 202 and not answer.duplicate
        },
        topics.REFERRAL_REJECTED: {
            (answer.partner_id, answer.submission_id) for answer in answers if answer.status == 422
        },
    }
    found = await _keys_on(bootstrap, starts, wanted, settle_s)
    return summarise(
        answers,
        partners=partners,
        seconds=took,
        received=found[topics.REFERRAL_RECEIVED],
        rejections=found[topics.REFERRAL_REJECTED],
        limits=ServiceSettings(),
    )
