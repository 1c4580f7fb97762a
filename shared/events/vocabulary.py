"""The vocabulary the contracts share: the enumerations their fields take values from."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class HeadlineOutcome(StrEnum):
    """Supporting Families' ten headline outcomes: the needs behind a request."""

    EDUCATION = "education"
    EARLY_YEARS = "early_years"
    HEALTH = "health"
    SUBSTANCE_USE = "substance_use"
    FAMILY_RELATIONSHIPS = "family_relationships"
    SAFE_FROM_ABUSE_AND_EXPLOITATION = "safe_from_abuse_and_exploitation"
    CRIME = "crime"
    DOMESTIC_ABUSE = "domestic_abuse"
    HOUSING = "housing"
    FINANCIAL_STABILITY = "financial_stability"


class LevelOfNeed(IntEnum):
    """1 universal, 2 and 3 Early Help, 4 statutory (Children's Social Care)."""

    UNIVERSAL = 1
    EARLY_HELP_SINGLE_AGENCY = 2
    EARLY_HELP_MULTI_AGENCY = 3
    STATUTORY = 4


class ScreeningDecision(StrEnum):
    """What the front door decided to do with a valid request."""

    SIGNPOST = "signpost"
    EARLY_HELP = "early_help"
    STEP_UP = "step_up"


class FamilyMatchRule(StrEnum):
    """How the front door found the family: exact identifiers first, then demographics."""

    UPN = "upn"
    NHS_NUMBER = "nhs_number"
    SURNAME_DOB_POSTCODE = "surname_dob_postcode"
    NEW_FAMILY = "new_family"


class AllocationStatus(StrEnum):
    ALLOCATED = "allocated"
    QUEUED = "queued"


class AllocationKind(StrEnum):
    """Which allocation rule applied, in the order the rules are tried."""

    EXISTING_CASE = "existing_case"
    STEP_DOWN = "step_down"
    CO_WORKING = "co_working"
    STANDARD = "standard"


class CaseOutcome(StrEnum):
    NEEDS_MET = "needs_met"
    STEPPED_UP = "stepped_up"
    DISENGAGED = "disengaged"
    MOVED_AWAY = "moved_away"
    OTHER = "other"


class OfstedGrade(StrEnum):
    OUTSTANDING = "outstanding"
    GOOD = "good"
    REQUIRES_IMPROVEMENT = "requires_improvement"
    INADEQUATE = "inadequate"
