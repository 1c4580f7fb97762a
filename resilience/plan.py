"""What partners send during a campaign: a seeded, reproducible mix of submissions.

The mix is chosen to exercise every path an outage can cut short: new families and repeat
families (a referral joins an open case), siblings in one request, step-downs and families
open to social care (with their social care reference), every level of need (signposted,
Early Help, stepped up), invalid requests (each rejected for a known reason), duplicates
(the same partner and submission id again, on Kafka or over HTTP) and redeliveries of the
very same event. Pure: no I/O, so the same seed gives the same plan.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from services.referral.domain import ROUTE_CATALOGUE, STEP_DOWN_ROUTE
from shared.events import HeadlineOutcome

TOPIC = "referral-submitted"
SURNAMES = (
    "Hassan", "Brook", "Clarke", "Okafor", "Patel", "Nowak", "Evans", "Murphy", "Khan",
    "Jones", "Fraser", "Ahmed", "Walsh", "Silva", "Kowalski", "Reid", "Hughes", "Begum",
    "Turner", "Lewis", "Ward", "Mensah", "Rossi", "Doyle", "Price", "Shah", "Grant", "Moss",
)  # fmt: skip
GIVEN_NAMES = (
    "Amira", "Leo", "Mia", "Yusuf", "Ava", "Noah", "Isla", "Oscar", "Zara", "Theo", "Ella",
    "Jack", "Layla", "Finn", "Ruby", "Arlo", "Sofia", "Kai", "Maya", "Ezra",
)  # fmt: skip
NEEDS = tuple(outcome.value for outcome in HeadlineOutcome)
ORDINARY_ROUTES = tuple(route.id for route in ROUTE_CATALOGUE if route.id != STEP_DOWN_ROUTE)
INVALID_KINDS = ("unknown_route", "no_consent", "outside_area", "step_down_without_reference")


class Channel(StrEnum):
    KAFKA = "kafka"
    HTTP = "http"


class Kind(StrEnum):
    NEW_FAMILY = "new_family"
    SIBLINGS = "siblings"
    REPEAT_FAMILY = "repeat_family"
    STEP_DOWN = "step_down"
    CO_WORKING = "co_working"
    INVALID = "invalid"


@dataclass(frozen=True)
class Send:
    """One delivery of a submission: a Kafka event (its id) or an HTTP request."""

    submission: Submission
    channel: Channel
    event_id: str


@dataclass(frozen=True)
class Submission:
    partner_id: str
    submission_id: str
    kind: Kind
    document: dict[str, Any]

    @property
    def valid(self) -> bool:
        return self.kind is not Kind.INVALID

    @property
    def key(self) -> tuple[str, str]:
        return (self.partner_id, self.submission_id)


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


@dataclass(frozen=True)
class _Family:
    surname: str
    child_name: str
    born: date
    postcode: str


def make_plan(count: int, seed: int, *, today: date) -> Plan:
    """``count`` distinct submissions and the deliveries that carry them, some twice."""
    rng = random.Random(seed)
    families: list[_Family] = []
    taken: set[tuple[str, date, str]] = set()

    def new_family() -> _Family:
        while True:
            family = _Family(
                surname=rng.choice(SURNAMES),
                child_name=rng.choice(GIVEN_NAMES),
                born=today - timedelta(days=rng.randint(200, 16 * 365)),
                postcode=f"WX{rng.randint(1, 20)} {rng.randint(1, 9)}"
                f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
            )
            identity = (family.surname, family.born, family.postcode)
            if identity not in taken:
                taken.add(identity)
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
        document = _document(rng, family, route, partner_id, f"s-{seed}-{index:05d}", today)
        if kind is Kind.SIBLINGS:
            document["children"].append(_child(rng, family.surname, today))
        if kind in (Kind.STEP_DOWN, Kind.CO_WORKING):
            document["social_care_case_reference"] = f"CSC-{seed}-{index:05d}"
            document["open_to_social_care"] = kind is Kind.CO_WORKING
            document["level_of_need"] = rng.choice((2, 3))
        if kind is Kind.INVALID:
            _spoil(rng, document)
        submissions.append(Submission(partner_id, document["submission_id"], kind, document))

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
    return json.dumps(
        {
            "specversion": "1.0",
            "id": send.event_id,
            "source": f"/partners/{send.submission.partner_id}",
            "type": TOPIC,
            "time": (now or datetime.now(UTC)).isoformat(),
            "correlationid": f"campaign-{send.event_id}",
            "schemaversion": 1,
            "data": send.submission.document,
        }
    ).encode()


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _document(
    rng: random.Random,
    family: _Family,
    route: str,
    partner_id: str,
    submission_id: str,
    today: date,
) -> dict[str, Any]:
    level = rng.choices((1, 2, 3, 4), weights=(12, 42, 38, 8))[0]
    return {
        "partner_id": partner_id,
        "submission_id": submission_id,
        "route": route,
        "referrer": {
            "name": "Sam Patel",
            "organisation": "Wessexshire partner",
            "role": "Lead professional",
            "email": "lead@partner.example.org",
        },
        "children": [
            {
                "given_name": family.child_name,
                "family_name": family.surname,
                "date_of_birth": family.born.isoformat(),
                "gender": rng.choice(("female", "male")),
            }
        ],
        "address": {"line1": f"{rng.randint(1, 99)} Mill Lane", "postcode": family.postcode},
        "needs": sorted(rng.sample(NEEDS, rng.randint(1, 3))),
        "level_of_need": level,
        "consent": {
            "given": True,
            "given_by": "Parent",
            "given_at": f"{(today - timedelta(days=1)).isoformat()}T10:00:00Z",
        },
        "open_to_social_care": False,
    }


def _child(rng: random.Random, surname: str, today: date) -> dict[str, Any]:
    return {
        "given_name": rng.choice(GIVEN_NAMES),
        "family_name": surname,
        "date_of_birth": (today - timedelta(days=rng.randint(200, 16 * 365))).isoformat(),
        "gender": rng.choice(("female", "male")),
    }


def _spoil(rng: random.Random, document: dict[str, Any]) -> None:
    match rng.choice(INVALID_KINDS):
        case "unknown_route":
            document["route"] = "carrier-pigeon"
        case "no_consent":
            document["consent"] = {"given": False}
        case "outside_area":
            document["address"]["postcode"] = "ZZ9 9ZZ"
        case _:
            document["route"] = STEP_DOWN_ROUTE
            document.pop("social_care_case_reference", None)


def distinct_keys(submissions: Sequence[Submission]) -> set[tuple[str, str]]:
    return {submission.key for submission in submissions}
