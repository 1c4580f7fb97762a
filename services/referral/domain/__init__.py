"""The front door's rules: routes, districts, validation, family matching and screening.

Pure functions over typed values: no I/O, no clock, no id generation beyond hashing. The
council's postcode table is an argument: the sample county's is in ``sample.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from shared.events import (
    FamilyMatchRule,
    LevelOfNeed,
    ReferralSubmitted,
    RejectionReason,
    ScreeningDecision,
)
from shared.months import add_months

# ---------------------------------------------------------------------------------------------
# What a use case can refuse with; ``app.py`` gives each its HTTP status


class NotFound(Exception):
    """What the request names does not exist."""


class Conflict(Exception):
    """The request cannot be done in the state things are in now."""


class Invalid(Exception):
    """The request breaks a rule by itself, whatever the state."""


class Refused(Exception):
    """A partner key is missing, unknown, revoked or not allowed this submission; the
    partner and key are named when known, for the record of refusals."""

    def __init__(
        self, reason: str, *, partner_id: str | None = None, key_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.partner_id = partner_id
        self.key_id = key_id


class Unauthenticated(Refused):
    """No usable partner key."""


class Forbidden(Refused):
    """A good key, but not for this partner or route."""


# ---------------------------------------------------------------------------------------------
# Routes and the Children in Need census referral-source codes

CIN_REFERRAL_SOURCES: Mapping[str, str] = {
    "1A": "Individual: family member/relative/carer",
    "1B": "Individual: acquaintance (including neighbours and child minders)",
    "1C": "Individual: self",
    "1D": "Individual: other",
    "2A": "Schools",
    "2B": "Education services",
    "3A": "Health services: GP",
    "3B": "Health services: health visitor",
    "3C": "Health services: school nurse",
    "3D": "Health services: other primary health services",
    "3E": "Health services: A&E",
    "3F": "Health services: other",
    "4": "Housing",
    "5A": "LA services: social care",
    "5B": "LA services: other internal",
    "5C": "LA services: external (another local authority)",
    "5D": "LA services: early help",
    "6": "Police",
    "7": "Other legal agency",
    "8": "Other",
    "9": "Anonymous",
    "10": "Unknown",
}


@dataclass(frozen=True)
class Route:
    """A way a request reaches the front door, and the census code it is counted under."""

    id: str
    name: str
    referral_source: str


ROUTE_CATALOGUE: Sequence[Route] = (
    Route("family_member", "Family member or carer", "1A"),
    Route("acquaintance", "Neighbour, friend or childminder", "1B"),
    Route("self_referral", "The family themselves", "1C"),
    Route("other_individual", "Another individual", "1D"),
    Route("school", "School", "2A"),
    Route("nursery", "Nursery or pre-school in a school", "2A"),
    Route("college", "Sixth form or further education college", "2A"),
    Route("education_welfare", "Education welfare and attendance service", "2B"),
    Route("send_service", "Special educational needs and disabilities service", "2B"),
    Route("early_years_setting", "Private or voluntary early years setting", "2B"),
    Route("gp", "GP practice", "3A"),
    Route("health_visitor", "Health visitor", "3B"),
    Route("school_nurse", "School nurse", "3C"),
    Route("midwife", "Midwife", "3D"),
    Route("dentist", "Dental practice", "3D"),
    Route("emergency_department", "A&E (emergency department)", "3E"),
    Route("camhs", "Child and adolescent mental health services", "3F"),
    Route("adult_mental_health", "Adult mental health services", "3F"),
    Route("substance_misuse_service", "Drug and alcohol service", "3F"),
    Route("housing", "Housing provider or housing options", "4"),
    Route("social_care_step_down", "Children's Social Care step-down", "5A"),
    Route("adult_social_care", "Adult social care", "5B"),
    Route("youth_offending", "Youth offending (youth justice) service", "5B"),
    Route("another_local_authority", "Another local authority", "5C"),
    Route("early_help_team", "Early Help team", "5D"),
    Route("police", "Police", "6"),
    Route("probation", "Probation service", "7"),
    Route("cafcass", "Cafcass", "7"),
    Route("childrens_centre", "Children's centre or family hub", "8"),
    Route("voluntary_sector", "Voluntary or community organisation", "8"),
    Route("domestic_abuse_service", "Domestic abuse service", "8"),
    Route("faith_group", "Faith group", "8"),
    Route("anonymous", "Anonymous", "9"),
    Route("unknown", "Not known", "10"),
)
ROUTES: Mapping[str, str] = {route.id: route.referral_source for route in ROUTE_CATALOGUE}
STEP_DOWN_ROUTE = "social_care_step_down"

# ---------------------------------------------------------------------------------------------
# Postcodes and districts

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def normalise_postcode(postcode: str) -> str | None:
    """``"wx1  2ab"`` -> ``"WX1 2AB"``; ``None`` when it is not a UK postcode."""
    match = _POSTCODE.match(re.sub(r"\s+", "", postcode.upper()))
    return f"{match[1]} {match[2]}" if match else None


def district_for(postcode: str, districts: Mapping[str, str]) -> str | None:
    """The district a postcode is in, by its outward code in the council's ``districts``."""
    normalised = normalise_postcode(postcode)
    return None if normalised is None else districts.get(normalised.split(" ")[0])


# ---------------------------------------------------------------------------------------------
# Children's identifiers

_UPN_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
_UPN = re.compile(r"^[A-Z][0-9]{11}[0-9A-Z]$")


def normalise_upn(upn: str) -> str:
    return re.sub(r"\s+", "", upn).upper()


def upn_problem(upn: str) -> str | None:
    """What is wrong with a Unique Pupil Number, or None when it is valid.

    The first character is a check letter over the other twelve (the DfE's modulus 23
    scheme), so a mistyped UPN is caught here rather than matching the wrong child.
    """
    value = normalise_upn(upn)
    if not _UPN.match(value):
        return "a UPN is a check letter then 11 digits and a digit or letter (13 characters)"
    total = sum(
        weight * (int(char) if char.isdigit() else _UPN_CHECK_LETTERS.find(char))
        for weight, char in zip(range(2, 14), value[1:], strict=True)
    )
    if value[-1].isalpha() and value[-1] not in _UPN_CHECK_LETTERS:
        return f"{value[-1]!r} is not a letter used in UPNs"
    expected = _UPN_CHECK_LETTERS[total % 23]
    return None if value[0] == expected else f"check letter should be {expected}, not {value[0]}"


def normalise_nhs_number(nhs_number: str) -> str:
    return re.sub(r"[\s-]+", "", nhs_number)


def nhs_number_problem(nhs_number: str) -> str | None:
    """What is wrong with an NHS number, or None: ten digits, the last a modulus 11 check."""
    value = normalise_nhs_number(nhs_number)
    if not re.fullmatch(r"[0-9]{10}", value):
        return "an NHS number is 10 digits"
    remainder = sum(
        int(digit) * weight for digit, weight in zip(value[:9], range(10, 1, -1), strict=True)
    )
    check = (11 - remainder % 11) % 11
    if check == 10 or check != int(value[9]):
        return "the check digit does not match"
    return None


# ---------------------------------------------------------------------------------------------
# Validation

UNBORN_HORIZON = timedelta(weeks=40)
OLDEST_AGE = 25  # Early Help reaches young people with SEND up to 25
MAX_CHILDREN = 20
"""Children in one request: more is a mistake, and each child adds family keys to check."""
OVERRIDE_TEXT_LIMITS: Mapping[str, int] = {"lawful_basis": 1000, "recorded_by": 200}
"""The contract leaves a safeguarding override's texts unbounded; the front door does not."""


def parse_submission(document: Any) -> ReferralSubmitted | list[RejectionReason]:
    """The submission, or one reason per problem with the field's dotted path."""
    try:
        return ReferralSubmitted.model_validate(document)
    except ValidationError as error:
        return reasons_of(error)


def reasons_of(error: ValidationError) -> list[RejectionReason]:
    """One reason per schema problem, with the field's dotted path."""
    return [
        RejectionReason(
            field=".".join(str(part) for part in item["loc"]),
            code=item["type"],
            message=item["msg"],
        )
        for item in error.errors()
    ]


def check_rules(
    submission: ReferralSubmitted,
    districts: Mapping[str, str],
    *,
    today: date | None = None,
) -> list[RejectionReason]:
    """Rules beyond the schema, each broken one giving its own reason.

    Known route, valid identifiers and plausible dates of birth (when ``today`` is given),
    a served postcode, consent or an override, and the social care reference that step-downs
    and families open to social care must carry.
    """
    reasons: list[RejectionReason] = []

    def refuse(field_path: str, code: str, message: str) -> None:
        reasons.append(RejectionReason(field=field_path, code=code, message=message))

    if len(submission.children) > MAX_CHILDREN:
        refuse(
            "children",
            "too_many_children",
            f"{len(submission.children)} children; one request is for at most {MAX_CHILDREN}",
        )
    override = submission.consent.safeguarding_override
    for name, limit in OVERRIDE_TEXT_LIMITS.items():
        text: str = getattr(override, name) if override is not None else ""
        if len(text) > limit:
            refuse(
                f"consent.safeguarding_override.{name}",
                "too_long",
                f"{len(text)} characters; at most {limit}",
            )
    if submission.route not in ROUTES:
        refuse(
            "route",
            "unknown_route",
            f"unknown route {submission.route!r}; valid routes: " + ", ".join(sorted(ROUTES)),
        )
    for index, child in enumerate(submission.children):
        path = f"children.{index}"
        if child.upn is not None and (problem := upn_problem(child.upn)):
            refuse(f"{path}.upn", "invalid_upn", f"{child.upn!r} is not a valid UPN: {problem}")
        if child.nhs_number is not None and (problem := nhs_number_problem(child.nhs_number)):
            refuse(
                f"{path}.nhs_number",
                "invalid_nhs_number",
                f"{child.nhs_number!r} is not a valid NHS number: {problem}",
            )
        if today is not None:
            if child.date_of_birth > today + UNBORN_HORIZON:
                refuse(
                    f"{path}.date_of_birth",
                    "date_of_birth_in_future",
                    f"{child.date_of_birth} is more than 40 weeks ahead",
                )
            elif age_on(child.date_of_birth, today) > OLDEST_AGE:
                refuse(
                    f"{path}.date_of_birth",
                    "too_old",
                    f"born {child.date_of_birth}: Early Help is for children and young people"
                    f" up to {OLDEST_AGE}",
                )
    if normalise_postcode(submission.address.postcode) is None:
        refuse(
            "address.postcode",
            "invalid_postcode",
            f"{submission.address.postcode!r} is not a UK postcode",
        )
    elif district_for(submission.address.postcode, districts) is None:
        refuse(
            "address.postcode",
            "outside_area",
            f"{submission.address.postcode!r} is not in a district we serve",
        )
    consent = submission.consent
    if consent.given:
        if not consent.given_by or consent.given_at is None:
            refuse(
                "consent",
                "consent_incomplete",
                "consent was given but who gave it (given_by) and when (given_at) are needed",
            )
    elif consent.safeguarding_override is None:
        refuse(
            "consent",
            "no_consent",
            "consent was not given and no safeguarding override with its lawful basis is recorded",
        )
    if not submission.social_care_case_reference:
        if submission.route == STEP_DOWN_ROUTE:
            refuse(
                "social_care_case_reference",
                "missing",
                "a step-down from social care needs the social care case reference",
            )
        elif submission.open_to_social_care:
            refuse(
                "social_care_case_reference",
                "missing",
                "a family open to social care needs the social care case reference",
            )
    return reasons


def age_on(born: date, on: date) -> int:
    """Age in whole years on ``on``; 0 for a child not yet born."""
    if born > on:
        return 0
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# ---------------------------------------------------------------------------------------------
# Family matching: one family, one worker, one plan


@dataclass(frozen=True)
class FamilyKey:
    """One way of recognising a family, keyed so the index holds no identifier in clear."""

    value: str
    rule: FamilyMatchRule


@dataclass(frozen=True)
class MatchKeys:
    """Family keys as HMAC-SHA-256 under the council's secret.

    A plain hash of a surname, a date of birth and a postcode could be recomputed by anyone
    who knows a child's details (they are small spaces), to confirm the child is known to
    Early Help; without the secret, nobody can.
    """

    secret: bytes = field(repr=False)

    def key(self, rule: FamilyMatchRule, material: str) -> FamilyKey:
        digest = hmac.new(self.secret, f"{rule.value}:{material}".encode(), hashlib.sha256)
        return FamilyKey(digest.hexdigest(), rule)


_RULE_PRIORITY = (
    FamilyMatchRule.UPN,
    FamilyMatchRule.NHS_NUMBER,
    FamilyMatchRule.SURNAME_DOB_POSTCODE,
)


def family_keys(submission: ReferralSubmitted, match_keys: MatchKeys) -> list[FamilyKey]:
    """Every child's keys, strongest rule first: UPNs, then NHS numbers, then demographics."""
    per_child = [
        child_family_keys(
            match_keys,
            upn=child.upn,
            nhs_number=child.nhs_number,
            family_name=child.family_name,
            date_of_birth=child.date_of_birth.isoformat(),
            postcode=submission.address.postcode,
        )
        for child in submission.children
    ]
    keys: list[FamilyKey] = []
    for rule in _RULE_PRIORITY:
        for child_keys in per_child:
            for key in child_keys:
                if key.rule is rule and key not in keys:
                    keys.append(key)
    return keys


def child_family_keys(
    match_keys: MatchKeys,
    *,
    upn: str | None,
    nhs_number: str | None,
    family_name: str | None,
    date_of_birth: str | None,
    postcode: str,
) -> list[FamilyKey]:
    """One child's keys, from its identifiers as given (ISO date of birth).

    The one derivation of family keys: matching uses it on a validated submission, erasure
    on the raw JSON of a stored one, so changing the key material changes both alike.
    """
    address = normalise_postcode(postcode) or postcode
    keys: list[FamilyKey] = []
    if upn:
        keys.append(match_keys.key(FamilyMatchRule.UPN, normalise_upn(upn)))
    if nhs_number:
        keys.append(match_keys.key(FamilyMatchRule.NHS_NUMBER, normalise_nhs_number(nhs_number)))
    if family_name is not None and date_of_birth is not None:
        material = "|".join((normalise_name(family_name), date_of_birth, address))
        keys.append(match_keys.key(FamilyMatchRule.SURNAME_DOB_POSTCODE, material))
    return keys


@dataclass(frozen=True)
class FamilyHistory:
    """What the front door knows of a family's cases, from case-allocated and case-closed."""

    family_id: str
    open_cases: tuple[str, ...] = ()
    last_closed_at: datetime | None = None


@dataclass(frozen=True)
class FamilyRecord:
    """A family as the front door keeps it: its cases, its dates and whether it was erased."""

    family_id: str
    district: str | None = None
    open_cases: tuple[str, ...] = ()
    last_closed_at: datetime | None = None
    last_referral_at: datetime | None = None
    personal_data_erased_at: datetime | None = None


@dataclass(frozen=True)
class KnownFamilies:
    """The families some of a submission's keys already point to."""

    by_key: Mapping[str, str] = field(default_factory=dict)
    histories: Mapping[str, FamilyHistory] = field(default_factory=dict)


@dataclass(frozen=True)
class FamilyMatch:
    family_id: str
    rule: FamilyMatchRule
    other_families: tuple[str, ...]
    """Families that weaker keys point to: a possible duplicate for a person to review."""

    @property
    def is_new(self) -> bool:
        return self.rule is FamilyMatchRule.NEW_FAMILY


def match_family(
    keys: Sequence[FamilyKey], known: KnownFamilies, *, new_family_id: str
) -> FamilyMatch:
    """The family a request with these keys is for: exact identifiers win over demographics.

    Siblings in one request are one family, so the strongest key of any child decides.
    With no match the family is new, with the id given: a random one, so it says nothing of
    the children. Two replicas creating the same family at once still end with one: each
    registers the family's keys, whose index lets only the first through, and the other
    matches again and finds it.
    """
    found = [(key, known.by_key[key.value]) for key in keys if key.value in known.by_key]
    if not found:
        return FamilyMatch(new_family_id, FamilyMatchRule.NEW_FAMILY, ())
    best_key, family_id = found[0]
    others = tuple(dict.fromkeys(other for _, other in found if other != family_id))
    return FamilyMatch(family_id, best_key.rule, others)


def referral_id_for(partner_id: str, submission_id: str) -> str:
    """Deterministic, so a duplicate submission converges on the same referral."""
    digest = hashlib.sha256(f"{partner_id}\0{submission_id}".encode()).hexdigest()
    return f"ref-{digest[:20]}"


def is_re_referral(history: FamilyHistory | None, received_at: datetime) -> bool:
    """No case open, and the family's last case closed within the 12 months before."""
    if history is None or history.open_cases or history.last_closed_at is None:
        return False
    return history.last_closed_at <= received_at < add_months(history.last_closed_at, 12)


def normalise_name(name: str) -> str:
    """Case, accents, spaces and punctuation folded away; letters of any script kept."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(char for char in decomposed if char.isalnum())


# ---------------------------------------------------------------------------------------------
# Screening

SCREENING_RULES_VERSION = "2026.11"


@dataclass(frozen=True)
class Screening:
    decision: ScreeningDecision
    reason: str
    rules_version: str = SCREENING_RULES_VERSION


def screen(level: LevelOfNeed, *, safeguarding_concern: bool = False) -> Screening:
    """Level 1 is signposted, 2 and 3 go to Early Help, 4 or a safeguarding concern step up.

    A safeguarding concern outranks the level of need: a child who may be at risk of
    significant harm is for Children's Social Care whatever the referrer graded.
    """
    if safeguarding_concern:
        return Screening(
            ScreeningDecision.STEP_UP,
            "safeguarding concern raised: stepped up to Children's Social Care",
        )
    if level is LevelOfNeed.STATUTORY:
        return Screening(
            ScreeningDecision.STEP_UP,
            "level 4 (statutory need): stepped up to Children's Social Care",
        )
    if level is LevelOfNeed.UNIVERSAL:
        return Screening(
            ScreeningDecision.SIGNPOST,
            "level 1 (universal need): signposted to local services, no allocation",
        )
    return Screening(
        ScreeningDecision.EARLY_HELP,
        f"level {level.value} (Early Help need): for allocation to a locality team",
    )


@dataclass(frozen=True)
class Screened:
    """A valid submission with what the front door worked out about it before matching."""

    submission: ReferralSubmitted
    referral_source: str
    district: str
    child_ages: tuple[int, ...]
    screening: Screening

    @property
    def is_step_down(self) -> bool:
        return self.submission.route == STEP_DOWN_ROUTE

    @property
    def decision(self) -> ScreeningDecision:
        return self.screening.decision


def screen_submission(
    submission: ReferralSubmitted,
    districts: Mapping[str, str],
    *,
    today: date,
) -> Screened | Sequence[RejectionReason]:
    """Check every rule, then work out source code, district, ages and the screening."""
    reasons = check_rules(submission, districts, today=today)
    if reasons:
        return reasons
    district = district_for(submission.address.postcode, districts)
    assert district is not None
    return Screened(
        submission=submission,
        referral_source=ROUTES[submission.route],
        district=district,
        child_ages=tuple(age_on(child.date_of_birth, today) for child in submission.children),
        screening=screen(
            submission.level_of_need, safeguarding_concern=submission.safeguarding_concern
        ),
    )
