"""The front door's rules: routes, districts, validation, family matching and screening.

Pure functions over typed values: no I/O, no clock, no id generation.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.events import LevelOfNeed, ReferralSubmitted, RejectionReason, ScreeningDecision

ROUTES: Mapping[str, str] = {
    # route -> Children in Need census referral-source code
    "family_member": "1A",
    "acquaintance": "1B",
    "self_referral": "1C",
    "other_individual": "1D",
    "school": "2A",
    "nursery": "2A",
    "college": "2A",
    "education_welfare": "2B",
    "send_service": "2B",
    "gp": "3A",
    "health_visitor": "3B",
    "school_nurse": "3C",
    "midwife": "3D",
    "dentist": "3D",
    "emergency_department": "3E",
    "camhs": "3F",
    "adult_mental_health": "3F",
    "substance_misuse_service": "3F",
    "housing": "4",
    "social_care_step_down": "5A",
    "adult_social_care": "5B",
    "youth_offending": "5B",
    "another_local_authority": "5C",
    "early_help_team": "5D",
    "police": "6",
    "probation": "7",
    "cafcass": "7",
    "childrens_centre": "8",
    "voluntary_sector": "8",
    "domestic_abuse_service": "8",
    "faith_group": "8",
    "anonymous": "9",
    "unknown": "10",
}
STEP_DOWN_ROUTE = "social_care_step_down"

POSTCODE_DISTRICTS: Mapping[str, str] = {
    # outward code -> district, for the fictional county of Wessexshire
    **{f"WX{n}": "northvale" for n in range(1, 6)},
    **{f"WX{n}": "eastmere" for n in range(6, 11)},
    **{f"WX{n}": "southford" for n in range(11, 16)},
    **{f"WX{n}": "westbrook" for n in range(16, 21)},
}

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def normalise_postcode(postcode: str) -> str | None:
    """``"wx1  2ab"`` -> ``"WX1 2AB"``; ``None`` when it is not a UK postcode."""
    match = _POSTCODE.match(re.sub(r"\s+", "", postcode.upper()))
    return f"{match[1]} {match[2]}" if match else None


def district_for(postcode: str, districts: Mapping[str, str] = POSTCODE_DISTRICTS) -> str | None:
    normalised = normalise_postcode(postcode)
    return None if normalised is None else districts.get(normalised.split(" ")[0])


def parse_submission(document: Any) -> ReferralSubmitted | list[RejectionReason]:
    """The submission, or one reason per problem with the field's dotted path."""
    try:
        return ReferralSubmitted.model_validate(document)
    except ValidationError as error:
        return [
            RejectionReason(
                field=".".join(str(part) for part in item["loc"]),
                code=item["type"],
                message=item["msg"],
            )
            for item in error.errors()
        ]


def check_rules(
    submission: ReferralSubmitted, districts: Mapping[str, str] = POSTCODE_DISTRICTS
) -> list[RejectionReason]:
    """Rules beyond the schema: known route, served postcode, consent, step-down reference."""
    reasons: list[RejectionReason] = []
    if submission.route not in ROUTES:
        reasons.append(
            RejectionReason(
                field="route",
                code="unknown_route",
                message=f"unknown route {submission.route!r}; valid routes: "
                + ", ".join(sorted(ROUTES)),
            )
        )
    if normalise_postcode(submission.address.postcode) is None:
        reasons.append(
            RejectionReason(
                field="address.postcode",
                code="invalid_postcode",
                message=f"{submission.address.postcode!r} is not a UK postcode",
            )
        )
    elif district_for(submission.address.postcode, districts) is None:
        reasons.append(
            RejectionReason(
                field="address.postcode",
                code="outside_area",
                message=f"{submission.address.postcode!r} is not in a district we serve",
            )
        )
    consent = submission.consent
    if not consent.given and consent.safeguarding_override is None:
        reasons.append(
            RejectionReason(
                field="consent",
                code="no_consent",
                message="consent was not given and no safeguarding override "
                "with its lawful basis is recorded",
            )
        )
    if submission.route == STEP_DOWN_ROUTE and not submission.social_care_case_reference:
        reasons.append(
            RejectionReason(
                field="social_care_case_reference",
                code="missing",
                message="a step-down from social care needs the social care case reference",
            )
        )
    return reasons


def screen(level: LevelOfNeed) -> ScreeningDecision:
    """1 universal: signpost; 2 and 3: Early Help; 4 statutory: step up to social care."""
    if level is LevelOfNeed.UNIVERSAL:
        return ScreeningDecision.SIGNPOST
    if level is LevelOfNeed.STATUTORY:
        return ScreeningDecision.STEP_UP
    return ScreeningDecision.EARLY_HELP


@dataclass(frozen=True)
class Screened:
    """A valid submission with what the front door worked out about it."""

    submission: ReferralSubmitted
    referral_source: str
    district: str
    family_key: str
    decision: ScreeningDecision

    @property
    def is_step_down(self) -> bool:
        return self.submission.route == STEP_DOWN_ROUTE


def family_key(submission: ReferralSubmitted) -> str:
    """A stable key for the family: the eldest child's surname, birth date and postcode.

    A first cut of family matching; matching on UPN and NHS number comes with the full
    front door.
    """
    eldest = min(
        submission.children,
        key=lambda child: (child.date_of_birth, _normalise_name(child.family_name)),
    )
    postcode = normalise_postcode(submission.address.postcode) or submission.address.postcode
    material = "|".join(
        (_normalise_name(eldest.family_name), eldest.date_of_birth.isoformat(), postcode)
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def screen_submission(
    submission: ReferralSubmitted, districts: Mapping[str, str] = POSTCODE_DISTRICTS
) -> Screened | Sequence[RejectionReason]:
    reasons = check_rules(submission, districts)
    if reasons:
        return reasons
    district = district_for(submission.address.postcode, districts)
    assert district is not None
    return Screened(
        submission=submission,
        referral_source=ROUTES[submission.route],
        district=district,
        family_key=family_key(submission),
        decision=screen(submission.level_of_need),
    )


def _normalise_name(name: str) -> str:
    """Case, accents, spaces and punctuation folded away; letters of any script kept."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(char for char in decomposed if char.isalnum())
