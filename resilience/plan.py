"""What partners send during a campaign: a seeded, reproducible mix of submissions.

The mix is chosen to exercise every path an outage can cut short: new families and repeat
families (a referral joins an open case), siblings in one request, step-downs and families
open to social care (with their social care reference), every level of need (signposted,
Early Help, stepped up), invalid requests (each rejected for a known reason), duplicates
(the same partner and submission id again, on Kafka or over HTTP) and redeliveries of the
very same event. Pure: no I/O, so the same seed gives the same plan.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from services.referral.domain import ROUTE_CATALOGUE, STEP_DOWN_ROUTE
from simulator import traffic
from simulator.traffic import Family, Invalid, Kind, Submission, child, document, spoil

TOPIC = "referral-submitted"
ORDINARY_ROUTES = tuple(route.id for route in ROUTE_CATALOGUE if route.id != STEP_DOWN_ROUTE)
INVALID_KINDS = (
    Invalid.UNKNOWN_ROUTE,
    Invalid.NO_CONSENT,
    Invalid.OUTSIDE_AREA,
    Invalid.STEP_DOWN_WITHOUT_REFERENCE,
)


class Channel(StrEnum):
    KAFKA = "kafka"
    HTTP = "http"


@dataclass(frozen=True)
class Send:
    """One delivery of a submission: a Kafka event (its id) or an HTTP request."""

    submission: Submission
    channel: Channel
    event_id: str


@dataclass(frozen=True)
class Plan:
    submissions: list[Submission]
    sends: list[Send]

    def counts(self) -> dict[str, int]:
        kinds = {kind.value: 0 for kind in Kind}
        for submission in self.submissions:
            kinds[submission.kind.value] += 1
        return {
            "submissions": len(self.submissions),
            "sends": len(self.sends),
            "over_http": sum(1 for send in self.sends if send.channel is Channel.HTTP),
            "repeated": len(self.sends) - len(self.submissions),
            **kinds,
        }


def make_plan(count: int, seed: int, *, today: date) -> Plan:
    """``count`` distinct submissions and the deliveries that carry them, some twice."""
    rng = random.Random(seed)
    families: list[Family] = []
    taken: set[tuple[str, date, str]] = set()

    def new_family() -> Family:
        while True:
            family = traffic.random_family(rng, today)
            if family.identity not in taken:
                taken.add(family.identity)
                families.append(family)
                return family

    submissions: list[Submission] = []
    for index in range(count):
        roll = rng.random()
        kind = (
            Kind.INVALID if roll < 0.07
            else Kind.REPEAT_FAMILY if roll < 0.20 and families
            else Kind.SIBLINGS if roll < 0.32
            else Kind.STEP_DOWN if roll < 0.40
            else Kind.CO_WORKING if roll < 0.45
            else Kind.NEW_FAMILY
        )  # fmt: skip
        family = rng.choice(families) if kind is Kind.REPEAT_FAMILY else new_family()
        route = STEP_DOWN_ROUTE if kind is Kind.STEP_DOWN else rng.choice(ORDINARY_ROUTES)
        partner_id = f"{route.replace('_', '-')}-{rng.randint(1, 3)}"
        request = document(rng, family, route, partner_id, f"s-{seed}-{index:05d}", today)
        if kind is Kind.SIBLINGS:
            request["children"].append(child(rng, family.surname, today))
        if kind in (Kind.STEP_DOWN, Kind.CO_WORKING):
            request["social_care_case_reference"] = f"CSC-{seed}-{index:05d}"
            request["open_to_social_care"] = kind is Kind.CO_WORKING
            request["level_of_need"] = rng.choice((2, 3))
        mistake = rng.choice(INVALID_KINDS) if kind is Kind.INVALID else None
        if mistake is not None:
            spoil(request, mistake)
        submissions.append(Submission(partner_id, request["submission_id"], kind, request, mistake))

    sends: list[Send] = []
    for submission in submissions:
        # Invalid ones travel on Kafka only: a rejection is per delivery, and an HTTP retry
        # of a request whose answer was lost is a new delivery.
        over_http = submission.valid and rng.random() < 0.12
        first = Send(submission, Channel.HTTP if over_http else Channel.KAFKA, _event_id(rng))
        sends.append(first)
    repeats: list[Send] = []
    for send in sends:
        if send.submission.valid and rng.random() < 0.08:
            # The partner sends it again: a new event, or the other channel.
            channel = rng.choice((Channel.KAFKA, Channel.HTTP))
            repeats.append(Send(send.submission, channel, _event_id(rng)))
        elif send.channel is Channel.KAFKA and rng.random() < 0.04:
            repeats.append(send)  # the partner's producer retried: the very same event
    for repeat in repeats:
        after = next(i for i, send in enumerate(sends) if send.submission is repeat.submission)
        sends.insert(rng.randint(after + 1, len(sends)), repeat)
    return Plan(submissions, sends)


def partner_event(send: Send, *, now: datetime | None = None) -> bytes:
    """The ``referral-submitted`` CloudEvent a partner's system publishes."""
    return traffic.partner_event(
        send.submission,
        event_id=send.event_id,
        now=now or datetime.now(UTC),
        correlation_id=f"campaign-{send.event_id}",
    )


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def distinct_keys(submissions: Sequence[Submission]) -> set[tuple[str, str]]:
    return {submission.key for submission in submissions}
