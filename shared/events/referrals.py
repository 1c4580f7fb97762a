"""The front door's events: a request as a partner sent it, and what became of it.

``referral-submitted`` is the one event partners publish; the referral service answers each
with ``referral-received`` (pseudonymous: no names, dates of birth or identifiers) or
``referral-rejected``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from shared.events.envelope import EventData, examples_of
from shared.events.vocabulary import (
    FamilyMatchRule,
    HeadlineOutcome,
    LevelOfNeed,
    ScreeningDecision,
)

# ---------------------------------------------------------------------------------------------
# referral-submitted: a Request for Early Help Support, as a partner sent it


class Referrer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Who is making the request.")
    organisation: str = Field(min_length=1, max_length=200, description="Their organisation.")
    role: str = Field(min_length=1, max_length=200, description="Their role, e.g. DSL.")
    email: EmailStr | None = Field(default=None, description="Contact email.")
    phone: str | None = Field(default=None, max_length=40, description="Contact phone.")


class Child(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    given_name: str = Field(min_length=1, max_length=100, description="First name.")
    family_name: str = Field(min_length=1, max_length=100, description="Surname.")
    date_of_birth: date = Field(
        description="ISO date of birth; for an unborn baby, the expected date (up to 40 weeks"
        " ahead)."
    )
    gender: Literal["female", "male", "other", "not_known"] = Field(
        description="Gender as recorded by the referrer."
    )
    upn: str | None = Field(
        default=None,
        max_length=20,
        description="Unique Pupil Number: a check letter then 12 characters, e.g. A123456789012.",
        examples=["H801200001001"],
    )
    nhs_number: str | None = Field(
        default=None,
        max_length=20,
        description="NHS number: 10 digits with a valid check digit; spaces are ignored.",
        examples=["943 476 5919"],
    )
    school: str | None = Field(default=None, max_length=200, description="School attended.")


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line1: str = Field(min_length=1, max_length=200, description="First line of the address.")
    line2: str | None = Field(default=None, max_length=200, description="Second line.")
    town: str | None = Field(default=None, max_length=100, description="Town or village.")
    postcode: str = Field(
        min_length=5,
        max_length=8,
        description="UK postcode; it decides the family's district.",
        examples=["WX3 4AB"],
    )


class SafeguardingOverride(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lawful_basis: str = Field(
        min_length=1, description="Why the request proceeds without consent (the lawful basis)."
    )
    recorded_by: str = Field(min_length=1, description="Who recorded the override.")


class Consent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    given: bool = Field(description="Whether the family consented to the request.")
    given_by: str | None = Field(
        default=None, max_length=200, description="Who gave consent; required when given."
    )
    given_at: AwareDatetime | None = Field(
        default=None, description="When consent was given, with its timezone; required when given."
    )
    safeguarding_override: SafeguardingOverride | None = Field(
        default=None, description="Set when the request proceeds without consent."
    )


class ReferralSubmitted(EventData):
    """A Request for Early Help Support as a partner system sent it: the front door's input.

    Unknown fields are refused rather than ignored, so a partner's misspelt field is
    answered instead of silently lost.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra=examples_of("referral-submitted")
    )
    event_type: ClassVar[str] = "referral-submitted"

    partner_id: str = Field(min_length=1, max_length=100, description="The sending system's id.")
    submission_id: str = Field(
        min_length=1, max_length=200, description="The partner's own id for this submission."
    )
    route: str = Field(
        min_length=1,
        max_length=100,
        description="The referral route, one of GET /routes (e.g. school, gp, police); it"
        " decides the Children in Need census referral-source code.",
    )
    referrer: Referrer = Field(description="Who made the request.")
    children: list[Child] = Field(min_length=1, description="The children the request is for.")
    address: Address = Field(description="The family's address.")
    needs: list[HeadlineOutcome] = Field(
        min_length=1, description="Needs behind the request, as Supporting Families outcomes."
    )
    level_of_need: LevelOfNeed = Field(description="The referrer's view of the level of need.")
    consent: Consent = Field(description="Consent, or a safeguarding override.")
    open_to_social_care: bool = Field(
        default=False,
        description="Whether the family is open to Children's Social Care; Early Help then"
        " co-works the case and the reference is required.",
    )
    social_care_case_reference: str | None = Field(
        default=None,
        max_length=100,
        description="The social care case reference: required for step-downs and for families"
        " open to social care.",
    )
    safeguarding_concern: bool = Field(
        default=False,
        description="The referrer believes a child may be at risk of significant harm: the"
        " request is stepped up to Children's Social Care whatever the level of need.",
    )
    notes: str | None = Field(default=None, max_length=5000, description="Free text.")

    def event_subject(self) -> str | None:
        return None


# ---------------------------------------------------------------------------------------------
# The front door's answers


class ReferralReceived(EventData):
    """A valid request, matched to a family and screened by the front door.

    Pseudonymous: the family id, district, ages, needs, level and pathway; names, dates of
    birth and identifiers stay in the referral service.
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_extra=examples_of("referral-received")
    )
    event_type: ClassVar[str] = "referral-received"

    referral_id: str = Field(description="Referral service's id for this request.")
    family_id: str = Field(description="The matched family (one family, one worker, one plan).")
    partner_id: str = Field(description="The partner that sent the request.")
    submission_id: str = Field(description="The partner's id for the submission.")
    route: str = Field(description="The referral route.")
    referral_source: str = Field(description="Children in Need census referral-source code.")
    district: str = Field(description="District decided by the family's postcode.")
    level_of_need: LevelOfNeed = Field(description="Level of need used for screening.")
    decision: ScreeningDecision = Field(description="Signpost, Early Help, or step up.")
    needs: list[HeadlineOutcome] = Field(description="Needs behind the request.")
    child_count: int = Field(ge=1, description="How many children the request is for.")
    is_step_down: bool = Field(default=False, description="Stepped down from social care.")
    open_to_social_care: bool = Field(
        default=False, description="Family has an open statutory case (co-working)."
    )
    social_care_case_reference: str | None = Field(
        default=None, description="Social care case reference, for step-downs and co-working."
    )
    is_re_referral: bool = Field(
        default=False,
        description="No case is open and the family's last case closed within 12 months.",
    )
    received_at: datetime = Field(description="When the front door received the request.")
    child_ages: list[int] = Field(
        default_factory=list,
        description="Each child's age in whole years when the request was received (0 for an"
        " unborn baby), in the order given; no names or dates of birth leave the front door.",
    )
    family_match: FamilyMatchRule | None = Field(
        default=None,
        description="The rule that matched an existing family, or new_family.",
    )
    family_has_open_case: bool = Field(
        default=False,
        description="The family already has an open (or queued) Early Help case, which this"
        " request joins so the family keeps its worker.",
    )
    safeguarding_concern: bool = Field(
        default=False, description="The referrer raised a safeguarding concern."
    )
    without_consent: bool = Field(
        default=False,
        description="Accepted without consent under a recorded safeguarding override.",
    )
    screening_reason: str | None = Field(
        default=None, description="Why screening decided as it did, for a person."
    )
    screening_rules_version: str | None = Field(
        default=None, description="Version of the screening rules that decided."
    )
    signposted_services: list[str] = Field(
        default_factory=list,
        description="Directory service ids the family was signposted to (signpost decisions).",
    )


class RejectionReason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    field: str = Field(description="Path of the offending field, dotted; empty for the whole.")
    code: str = Field(description="Machine-readable reason, e.g. missing, invalid_route.")
    message: str = Field(description="What is wrong, for a person.")


class ReferralRejected(EventData):
    """A request that cannot be accepted, with every reason found."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_extra=examples_of("referral-rejected")
    )
    event_type: ClassVar[str] = "referral-rejected"

    rejection_id: str = Field(description="Referral service's id for this rejection.")
    partner_id: str | None = Field(description="The sender, when it could be read.")
    submission_id: str | None = Field(description="The partner's id, when it could be read.")
    route: str | None = Field(default=None, description="The route, when it could be read.")
    reasons: list[RejectionReason] = Field(min_length=1, description="One per problem found.")
    received_at: datetime = Field(description="When the front door received the request.")

    def event_subject(self) -> str | None:
        return self.partner_id
