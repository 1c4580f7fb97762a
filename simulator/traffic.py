"""Partner traffic: a seeded, endless stream of Requests for Early Help Support.

Routes come in the proportions an Early Help front door sees (schools about 40%), with
siblings in one request, families referred again (usually by another route), step-downs
from social care, families open to social care (co-working) and invalid requests, each
invalid one carrying the reason the front door will give for it. Schools' systems send
UPNs and health systems NHS numbers, so family matching is exercised on every rule.

Pure: no I/O and no clock, so a seed and a day give the same traffic on any machine. The
fault campaign (``resilience.plan``) builds its documents from the same parts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from services.referral.domain import ROUTE_CATALOGUE, ROUTES, STEP_DOWN_ROUTE
from services.referral.sample import POSTCODE_DISTRICTS
from shared.events import HeadlineOutcome
from shared.topics import REFERRAL_SUBMITTED

SURNAMES = (
    "Hassan", "Brook", "Clarke", "Okafor", "Patel", "Nowak", "Evans", "Murphy", "Khan",
    "Jones", "Fraser", "Ahmed", "Walsh", "Silva", "Kowalski", "Reid", "Hughes", "Begum",
    "Turner", "Lewis", "Ward", "Mensah", "Rossi", "Doyle", "Price", "Shah", "Grant", "Moss",
)  # fmt: skip
GIVEN_NAMES = (
    "Amira", "Leo", "Mia", "Yusuf", "Ava", "Noah", "Isla", "Oscar", "Zara", "Theo", "Ella",
    "Jack", "Layla", "Finn", "Ruby", "Arlo", "Sofia", "Kai", "Maya", "Ezra",
)  # fmt: skip
GENDERS = ("female", "male")
NEEDS = tuple(outcome.value for outcome in HeadlineOutcome)
OUTWARD_CODES = tuple(POSTCODE_DISTRICTS)
POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
OUTSIDE_AREA_POSTCODE = "SP4 7DE"
"""A real postcode just over the county border: well formed, but no district of ours."""

ROUTE_SHARES: Mapping[str, float] = {
    # Schools (census 2A) make about 40% of requests for Early Help support: the share one
    # council reports for its Local Support Teams, and the reason schools' grant funds them.
    "school": 0.33, "nursery": 0.04, "college": 0.03,
    # The rest keep roughly the shape of the referral sources in the DfE Children in Need
    # census (health about 15%, individuals about 8%, LA services about a tenth, here with
    # the step-downs), except police: close to 30% of referrals to social care, but fewer
    # to Early Help, as police contacts about harm go to social care directly. A modelled
    # mix for demos and load, not any council's data.
    "education_welfare": 0.02, "send_service": 0.015, "early_years_setting": 0.005,
    "gp": 0.03, "health_visitor": 0.04, "school_nurse": 0.02, "midwife": 0.015,
    "dentist": 0.002, "emergency_department": 0.01, "camhs": 0.02,
    "adult_mental_health": 0.008, "substance_misuse_service": 0.005,
    "police": 0.10,
    "family_member": 0.03, "acquaintance": 0.01, "self_referral": 0.035, "other_individual": 0.005,
    STEP_DOWN_ROUTE: 0.06, "adult_social_care": 0.01, "youth_offending": 0.01,
    "another_local_authority": 0.005, "early_help_team": 0.015,
    "housing": 0.04,
    "probation": 0.005, "cafcass": 0.005,
    "childrens_centre": 0.025, "voluntary_sector": 0.02, "domestic_abuse_service": 0.02,
    "faith_group": 0.005,
    "anonymous": 0.005, "unknown": 0.005,
}  # fmt: skip
"""Each route's share of all submissions; they sum to 1 and cover the whole catalogue."""

ROUTE_FAMILIES: Mapping[str, str] = {
    "1": "individuals", "2A": "schools", "2B": "education_services", "3": "health",
    "4": "housing", "5": "la_services", "6": "police", "7": "other_legal", "8": "other",
    "9": "anonymous_or_unknown", "10": "anonymous_or_unknown",
}  # fmt: skip
"""Census referral-source codes (or their number alone) grouped the way reports speak."""

PARTNERS_PER_ROUTE: Mapping[str, int] = {"school": 40, "nursery": 8, "gp": 12, "college": 3}
"""How many partner systems send on a route (3 unless named): a county has many schools."""

REFERRER_ROLES: Mapping[str, str] = {
    "individuals": "Parent or carer",
    "schools": "Designated Safeguarding Lead",
    "education_services": "Education welfare officer",
    "health": "Health practitioner",
    "housing": "Housing officer",
    "la_services": "Social worker",
    "police": "Public protection officer",
    "other_legal": "Probation officer",
    "other": "Family support worker",
    "anonymous_or_unknown": "Not known",
}


class Kind(StrEnum):
    NEW_FAMILY = "new_family"
    SIBLINGS = "siblings"
    REPEAT_FAMILY = "repeat_family"
    STEP_DOWN = "step_down"
    CO_WORKING = "co_working"
    INVALID = "invalid"


KIND_SHARES: Mapping[Kind, float] = {
    Kind.NEW_FAMILY: 0.58,
    Kind.SIBLINGS: 0.15,  # two or three children in one request
    Kind.REPEAT_FAMILY: 0.12,  # a family already referred, referred again
    Kind.STEP_DOWN: ROUTE_SHARES[STEP_DOWN_ROUTE],
    Kind.CO_WORKING: 0.04,  # open to social care, with its case reference
    Kind.INVALID: 0.05,
}
"""Each kind's share of all submissions; they sum to 1."""


class Invalid(StrEnum):
    """The mistakes partners make, each answered by the front door with a known reason."""

    UNKNOWN_ROUTE = "unknown_route"
    NO_CONSENT = "no_consent"
    CONSENT_INCOMPLETE = "consent_incomplete"
    OUTSIDE_AREA = "outside_area"
    STEP_DOWN_WITHOUT_REFERENCE = "step_down_without_reference"
    OPEN_TO_SOCIAL_CARE_WITHOUT_REFERENCE = "open_to_social_care_without_reference"
    MISSING_DATE_OF_BIRTH = "missing_date_of_birth"
    INVALID_UPN = "invalid_upn"


EXPECTED_REJECTION: Mapping[Invalid, tuple[str, str]] = {
    Invalid.UNKNOWN_ROUTE: ("route", "unknown_route"),
    Invalid.NO_CONSENT: ("consent", "no_consent"),
    Invalid.CONSENT_INCOMPLETE: ("consent", "consent_incomplete"),
    Invalid.OUTSIDE_AREA: ("address.postcode", "outside_area"),
    Invalid.STEP_DOWN_WITHOUT_REFERENCE: ("social_care_case_reference", "missing"),
    Invalid.OPEN_TO_SOCIAL_CARE_WITHOUT_REFERENCE: ("social_care_case_reference", "missing"),
    Invalid.MISSING_DATE_OF_BIRTH: ("children.0.date_of_birth", "missing"),
    Invalid.INVALID_UPN: ("children.0.upn", "invalid_upn"),
}
"""The one reason (field, code) the front door rejects each mistake with."""


@dataclass(frozen=True)
class Submission:
    """One Request for Early Help Support as a partner sends it, and what it is meant to be."""

    partner_id: str
    submission_id: str
    kind: Kind
    document: dict[str, Any]
    invalid: Invalid | None = None

    @property
    def valid(self) -> bool:
        return self.kind is not Kind.INVALID

    @property
    def key(self) -> tuple[str, str]:
        return (self.partner_id, self.submission_id)

    @property
    def route(self) -> str:
        return str(self.document["route"])

    @property
    def expected_rejection(self) -> tuple[str, str] | None:
        return None if self.invalid is None else EXPECTED_REJECTION[self.invalid]


@dataclass(frozen=True)
class Family:
    """A family as partners know it: its eldest child, address and any siblings.

    ``gender`` is None for a family whose eldest child's gender is drawn afresh with each
    request (the campaign's); the simulator's families keep theirs.
    """

    surname: str
    child_name: str
    born: date
    postcode: str
    gender: str | None = None
    siblings: tuple[Mapping[str, str], ...] = ()

    @property
    def identity(self) -> tuple[str, date, str]:
        return (self.surname, self.born, self.postcode)


def random_family(rng: random.Random, today: date) -> Family:
    """A family in the county with one child aged between about six months and sixteen."""
    return Family(
        surname=rng.choice(SURNAMES),
        child_name=rng.choice(GIVEN_NAMES),
        born=today - timedelta(days=rng.randint(200, 16 * 365)),
        postcode=f"{rng.choice(OUTWARD_CODES)} {rng.randint(1, 9)}"
        f"{rng.choice(POSTCODE_LETTERS)}{rng.choice(POSTCODE_LETTERS)}",
    )


def child(rng: random.Random, surname: str, today: date) -> dict[str, str]:
    """A brother or sister."""
    return {
        "given_name": rng.choice(GIVEN_NAMES),
        "family_name": surname,
        "date_of_birth": (today - timedelta(days=rng.randint(200, 16 * 365))).isoformat(),
        "gender": rng.choice(GENDERS),
    }


def document(
    rng: random.Random,
    family: Family,
    route: str,
    partner_id: str,
    submission_id: str,
    today: date,
) -> dict[str, Any]:
    """A valid request for ``family`` on ``route``, consent given the day before."""
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
                "gender": family.gender or rng.choice(GENDERS),
            },
            *(dict(sibling) for sibling in family.siblings),
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


def spoil(document: dict[str, Any], mistake: Invalid) -> None:
    """Make one mistake in an otherwise valid request."""
    match mistake:
        case Invalid.UNKNOWN_ROUTE:
            document["route"] = "mash"  # the hub it is sent to, not the route it comes by
        case Invalid.NO_CONSENT:
            document["consent"] = {"given": False}
        case Invalid.CONSENT_INCOMPLETE:
            document["consent"] = {"given": True}
        case Invalid.OUTSIDE_AREA:
            document["address"]["postcode"] = OUTSIDE_AREA_POSTCODE
        case Invalid.STEP_DOWN_WITHOUT_REFERENCE:
            document["route"] = STEP_DOWN_ROUTE
            document.pop("social_care_case_reference", None)
        case Invalid.OPEN_TO_SOCIAL_CARE_WITHOUT_REFERENCE:
            document["open_to_social_care"] = True
            document.pop("social_care_case_reference", None)
        case Invalid.MISSING_DATE_OF_BIRTH:
            del document["children"][0]["date_of_birth"]
        case Invalid.INVALID_UPN:
            eldest = document["children"][0]
            valid = upn_for(eldest, document["address"]["postcode"])
            wrong = UPN_CHECK_LETTERS[(UPN_CHECK_LETTERS.index(valid[0]) + 1) % 23]
            eldest["upn"] = wrong + valid[1:]  # a mistyped digit gives another check letter


def partner_event(
    submission: Submission, *, event_id: str, now: datetime, correlation_id: str | None = None
) -> bytes:
    """The ``referral-submitted`` CloudEvent a partner's system publishes."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": f"/partners/{submission.partner_id}",
            "type": REFERRAL_SUBMITTED,
            "time": now.isoformat(),
            "correlationid": correlation_id or event_id,
            "schemaversion": 1,
            "data": submission.document,
        }
    ).encode()


def route_family(route: str) -> str:
    """The group of census referral sources a route belongs to ("schools", "health"...)."""
    source = ROUTES.get(route)
    if source is None:
        return "not_a_route"
    return ROUTE_FAMILIES.get(source) or ROUTE_FAMILIES[source.rstrip("ABCDEF")]


# ---------------------------------------------------------------------------------------------
# Children's identifiers, derived from who the child is so every referral carries the same

UPN_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn_for(pupil: Mapping[str, str], postcode: str) -> str:
    """The pupil's Unique Pupil Number: the DfE's modulus 23 check letter, then 12 digits."""
    digits = "801" + _digits(pupil, postcode, 9)
    total = sum(weight * int(digit) for weight, digit in zip(range(2, 14), digits, strict=True))
    return UPN_CHECK_LETTERS[total % 23] + digits


def nhs_number_for(patient: Mapping[str, str], postcode: str) -> str:
    """The child's NHS number: nine digits and a modulus 11 check digit (never 10)."""
    for salt in itertools.count():
        digits = _digits(patient, postcode, 9, salt=salt)
        weighted = zip(digits, range(10, 1, -1), strict=True)
        check = (11 - sum(int(digit) * weight for digit, weight in weighted) % 11) % 11
        if check != 10:
            return digits + str(check)
    raise AssertionError("unreachable")


def _digits(person: Mapping[str, str], postcode: str, count: int, *, salt: int = 0) -> str:
    material = "|".join(
        (person["given_name"], person["family_name"], person.get("date_of_birth", ""), postcode)
    )
    number = int(hashlib.sha256(f"{salt}|{material}".encode()).hexdigest(), 16)
    return str(number % 10**count).zfill(count)


# ---------------------------------------------------------------------------------------------
# The stream

_KINDS = tuple(KIND_SHARES)
_KIND_WEIGHTS = tuple(KIND_SHARES.values())
_ORDINARY_ROUTES = tuple(route.id for route in ROUTE_CATALOGUE if route.id != STEP_DOWN_ROUTE)
_ORDINARY_WEIGHTS = tuple(ROUTE_SHARES[route] for route in _ORDINARY_ROUTES)
_MISTAKES = tuple(Invalid)
_ROUTE_NAMES = {route.id: route.name for route in ROUTE_CATALOGUE}


def traffic(seed: int, *, today: date, remembered: int = 10_000) -> Iterator[Submission]:
    """Submissions without end, the same for the same seed and day.

    Step-downs are the step-down route's share, and every other kind draws its route from
    the other routes' shares, so each route's share of all submissions is its
    ``ROUTE_SHARES``. A repeat family's route is drawn afresh, so it is usually another
    partner that refers it again. The ``remembered`` most recent families may be referred
    again; older ones are forgotten so that a long run stays small.
    """
    rng = random.Random(seed)
    families = _FamilyMemory(remembered)
    for index in itertools.count():
        kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        if kind is Kind.REPEAT_FAMILY and not families:
            kind = Kind.NEW_FAMILY
        if kind is Kind.STEP_DOWN:
            route = STEP_DOWN_ROUTE
        else:
            route = rng.choices(_ORDINARY_ROUTES, _ORDINARY_WEIGHTS)[0]
        if kind is Kind.REPEAT_FAMILY:
            family = families.any(rng)
        else:
            # Two children in a request three times as often as three.
            siblings = rng.choice((1, 1, 1, 2)) if kind is Kind.SIBLINGS else 0
            family = families.new(rng, today, siblings)
        number = rng.randint(1, PARTNERS_PER_ROUTE.get(route, 3))
        partner_id = f"{route.replace('_', '-')}-{number:02d}"
        submission = document(rng, family, route, partner_id, f"sim-{seed}-{index:06d}", today)
        _as_partners_send_it(rng, submission, today)
        mistake: Invalid | None = None
        if kind in (Kind.STEP_DOWN, Kind.CO_WORKING):
            submission["social_care_case_reference"] = (
                f"CSC-{today.year}-{rng.randint(1, 999_999):06d}"
            )
            submission["open_to_social_care"] = kind is Kind.CO_WORKING
            submission["level_of_need"] = rng.choice((2, 3))
        elif kind is Kind.INVALID:
            mistake = rng.choice(_MISTAKES)
            spoil(submission, mistake)
        if mistake is None:  # a rejected request leaves no family to refer again
            families.remember(family)
        yield Submission(partner_id, submission["submission_id"], kind, submission, mistake)


def _as_partners_send_it(rng: random.Random, submission: dict[str, Any], today: date) -> None:
    """What a route's own systems add: who refers, pupils' UPNs, NHS numbers, police's
    requests without consent on a safeguarding concern."""
    group = route_family(submission["route"])
    submission["referrer"] |= {
        "organisation": f"{_ROUTE_NAMES[submission['route']]} ({submission['partner_id']})",
        "role": REFERRER_ROLES[group],
    }
    postcode = submission["address"]["postcode"]
    school_age = (today - timedelta(days=4 * 365)).isoformat()
    for each in submission["children"]:
        if group in ("schools", "education_services") and each["date_of_birth"] <= school_age:
            each["upn"] = upn_for(each, postcode)
        if group == "health":
            each["nhs_number"] = nhs_number_for(each, postcode)
    if group == "police" and rng.random() < 0.25:
        submission["consent"] = {
            "given": False,
            "safeguarding_override": {
                "lawful_basis": "Children Act 1989 s.47: risk of significant harm",
                "recorded_by": "DS Kim Lowe",
            },
        }
        submission["safeguarding_concern"] = True


class _FamilyMemory:
    """Families referred so far; past ``size`` the oldest is forgotten."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._families: list[Family] = []
        self._oldest = 0
        self._taken: set[tuple[str, date, str]] = set()

    def __bool__(self) -> bool:
        return bool(self._families)

    def new(self, rng: random.Random, today: date, siblings: int) -> Family:
        """A family not referred before (one that merely shares a name would be matched)."""
        while True:
            family = random_family(rng, today)
            if family.identity not in self._taken:
                break
        return replace(
            family,
            gender=rng.choice(GENDERS),
            siblings=tuple(child(rng, family.surname, today) for _ in range(siblings)),
        )

    def any(self, rng: random.Random) -> Family:
        return rng.choice(self._families)

    def remember(self, family: Family) -> None:
        if family.identity in self._taken:
            return
        self._taken.add(family.identity)
        if len(self._families) < self._size:
            self._families.append(family)
            return
        self._taken.discard(self._families[self._oldest].identity)
        self._families[self._oldest] = family
        self._oldest = (self._oldest + 1) % self._size


@dataclass
class Tally:
    """What was sent, counted for the account printed at the end."""

    kinds: Counter[str] = field(default_factory=Counter)
    mistakes: Counter[str] = field(default_factory=Counter)
    route_families: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def add(self, submission: Submission) -> None:
        self.kinds[submission.kind.value] += 1
        if submission.invalid is not None:
            self.mistakes[submission.invalid.value] += 1
        self.route_families[route_family(submission.route)] += 1

    def report(self) -> list[str]:
        total = self.total or 1
        return [
            "by kind: " + ", ".join(f"{kind.value} {self.kinds[kind.value]}" for kind in Kind),
            "invalid by reason: "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.mistakes.items())),
            "by route family: "
            + ", ".join(
                f"{name} {count} ({count / total:.1%})"
                for name, count in self.route_families.most_common()
            ),
        ]
