"""Event contracts: the CloudEvents 1.0 envelope and every event the services exchange.

Wire types live here and nowhere else. Adding an optional field keeps an event's schema
version; removing, renaming, retyping or requiring a field is a breaking change that needs a
new version and an upcaster (see ``UPCASTERS``), and the contract tests refuse it otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, ValidationError

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/cloudevents+json"


class EventData(BaseModel):
    """The ``data`` of an event. Readers ignore fields they do not know (tolerant reader)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def event_subject(self) -> str | None:
        """The envelope's subject and the Kafka key: the family for family-scoped events."""
        return getattr(self, "family_id", None)


DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope in structured JSON mode.

    ``source`` + ``id`` identify an event uniquely and are the consumers' idempotency key.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = Field(default=SPEC_VERSION, description="CloudEvents version.")
    id: str = Field(min_length=1, description="Unique within the source.")
    source: str = Field(min_length=1, description="URI reference of the producer, /earlyhelp/x.")
    type: str = Field(min_length=1, description="The event type, equal to its topic name.")
    time: AwareDatetime = Field(description="When the fact happened, timezone-aware.")
    subject: str | None = Field(default=None, description="The family id when family-scoped.")
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of ``data``."
    )
    correlationid: str = Field(
        min_length=1, description="Links every event that came from one submission."
    )
    schemaversion: int = Field(ge=1, description="Version of the data schema for this type.")
    data: DataT = Field(description="The event's own fields, as its type's schema defines.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(serialize_as_any=True).encode()


RawEvent = CloudEvent[dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# Vocabulary shared by the contracts


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
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "partner_id": "northvale-primary",
                    "submission_id": "np-2026-0001",
                    "route": "school",
                    "referrer": {
                        "name": "Sam Patel",
                        "organisation": "Northvale Primary",
                        "role": "Designated Safeguarding Lead",
                        "email": "dsl@northvale.example.org",
                    },
                    "children": [
                        {
                            "given_name": "Amira",
                            "family_name": "Hassan",
                            "date_of_birth": "2016-04-12",
                            "gender": "female",
                            "upn": "A123456789012",
                            "school": "Northvale Primary",
                        },
                        {
                            "given_name": "Yusuf",
                            "family_name": "Hassan",
                            "date_of_birth": "2019-09-30",
                            "gender": "male",
                        },
                    ],
                    "address": {"line1": "4 Mill Lane", "town": "Northvale", "postcode": "WX3 4AB"},
                    "needs": ["education", "family_relationships"],
                    "level_of_need": 2,
                    "consent": {
                        "given": True,
                        "given_by": "Layla Hassan (mother)",
                        "given_at": "2026-11-20T10:00:00Z",
                    },
                },
                {
                    "partner_id": "wessex-csc",
                    "submission_id": "csc-step-down-0042",
                    "route": "social_care_step_down",
                    "referrer": {
                        "name": "Jo Okafor",
                        "organisation": "Wessexshire Children's Social Care",
                        "role": "Social worker",
                        "phone": "01632 960 123",
                    },
                    "children": [
                        {
                            "given_name": "Mia",
                            "family_name": "Clarke",
                            "date_of_birth": "2013-06-02",
                            "gender": "female",
                            "nhs_number": "943 476 5919",
                        }
                    ],
                    "address": {"line1": "12 Harbour Row", "postcode": "WX7 2PL"},
                    "needs": ["family_relationships", "health"],
                    "level_of_need": 3,
                    "consent": {
                        "given": True,
                        "given_by": "Dan Clarke (father)",
                        "given_at": "2026-11-18T15:30:00Z",
                    },
                    "social_care_case_reference": "CSC-2026-1187",
                },
                {
                    "partner_id": "wessex-police",
                    "submission_id": "pv-99120",
                    "route": "police",
                    "referrer": {
                        "name": "PC Alex Reed",
                        "organisation": "Wessex Police",
                        "role": "Public protection officer",
                    },
                    "children": [
                        {
                            "given_name": "Leo",
                            "family_name": "Brook",
                            "date_of_birth": "2012-02-01",
                            "gender": "male",
                        }
                    ],
                    "address": {"line1": "9 Quay Street", "postcode": "WX12 7QT"},
                    "needs": ["domestic_abuse", "safe_from_abuse_and_exploitation"],
                    "level_of_need": 3,
                    "consent": {
                        "given": False,
                        "safeguarding_override": {
                            "lawful_basis": "Children Act 1989 s.47: risk of significant harm",
                            "recorded_by": "DS Kim Lowe",
                        },
                    },
                    "safeguarding_concern": True,
                },
            ]
        },
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
# Events the services publish


class ReferralReceived(EventData):
    """A valid request, matched to a family and screened by the front door.

    Pseudonymous: the family id, district, ages, needs, level and pathway; names, dates of
    birth and identifiers stay in the referral service.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "referral_id": "ref-5c1e0b7a9d2f4e6a8b3c",
                    "family_id": "fam-0f8e2d4c6b1a3957e8d1",
                    "partner_id": "northvale-primary",
                    "submission_id": "np-2026-0001",
                    "route": "school",
                    "referral_source": "2A",
                    "district": "northvale",
                    "level_of_need": 2,
                    "decision": "early_help",
                    "needs": ["education", "family_relationships"],
                    "child_count": 2,
                    "received_at": "2026-11-20T10:05:00Z",
                    "child_ages": [10, 7],
                    "family_match": "new_family",
                    "screening_reason": "level 2 (Early Help need): for allocation to a"
                    " locality team",
                    "screening_rules_version": "2026.11",
                }
            ]
        },
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
        frozen=True,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "rejection_id": "rej-9a7b5c3d1e0f2a4b6c8d",
                    "partner_id": "northvale-primary",
                    "submission_id": "np-2026-0002",
                    "route": "carrier_pigeon",
                    "reasons": [
                        {
                            "field": "route",
                            "code": "unknown_route",
                            "message": "unknown route 'carrier_pigeon'; valid routes: ...",
                        },
                        {
                            "field": "consent",
                            "code": "no_consent",
                            "message": "consent was not given and no safeguarding override"
                            " with its lawful basis is recorded",
                        },
                    ],
                    "received_at": "2026-11-20T10:07:00Z",
                }
            ]
        },
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


class CaseAllocated(EventData):
    """A referral was given a case with a team and worker, or its case was queued for one.

    One referral gives one ``allocated`` event, or a ``queued`` one followed by ``allocated``
    when capacity frees. A worker leaving gives another ``allocated`` (or ``queued``) event
    for each of their cases, with ``reallocated_from_worker_id`` set.
    """

    event_type: ClassVar[str] = "case-allocated"
    schema_version: ClassVar[int] = 2
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "case_id": "case-4f1c2a9e0b7d3c5a6e8f",
                    "family_id": "fam-3b9d7e1f2a4c6e8b0d1f",
                    "referral_id": "ref-9a8b7c6d5e4f3a2b1c0d",
                    "district": "northvale",
                    "team_id": "northvale-north",
                    "worker_id": "nv-amara-okafor",
                    "status": "allocated",
                    "kind": "standard",
                    "level_of_need": 3,
                    "social_care_case_reference": None,
                    "referral_received_at": "2026-11-02T09:15:00Z",
                    "allocated_at": "2026-11-02T09:15:02Z",
                    "time_to_allocation_seconds": 2.0,
                }
            ]
        }
    )

    case_id: str = Field(description="Allocation service's case id.")
    family_id: str = Field(description="The family the case is for.")
    referral_id: str = Field(description="The referral that opened or joined the case.")
    district: str = Field(description="The family's district.")
    team_id: str | None = Field(description="Locality team, or null while queued unassigned.")
    worker_id: str | None = Field(description="Lead practitioner, or null while queued.")
    status: AllocationStatus = Field(description="Allocated or queued.")
    kind: AllocationKind = Field(description="Which allocation rule applied.")
    level_of_need: LevelOfNeed = Field(description="Level of need from screening.")
    social_care_case_reference: str | None = Field(
        default=None, description="Statutory case reference for step-downs and co-working."
    )
    referral_received_at: datetime = Field(description="When the request reached the front door.")
    allocated_at: datetime = Field(description="When the allocation (or queueing) happened.")
    queue_position: int | None = Field(
        default=None,
        ge=1,
        description="Place in the district's queue when queued (1 is next); null when allocated.",
    )
    time_to_allocation_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds from the referral reaching the front door to this allocation;"
        " null while queued.",
    )
    reallocated_from_worker_id: str | None = Field(
        default=None,
        description="The worker who held the case before, when a leaver's case is reallocated.",
    )


class CaseClosed(EventData):
    """A case ended, with its outcome."""

    event_type: ClassVar[str] = "case-closed"

    case_id: str = Field(description="Allocation service's case id.")
    family_id: str = Field(description="The family the case was for.")
    district: str = Field(description="The family's district.")
    team_id: str | None = Field(description="The team that held the case.")
    worker_id: str | None = Field(description="The worker that held the case.")
    outcome: CaseOutcome = Field(description="Why the case ended.")
    closed_at: datetime = Field(description="When the case closed.")


class StandardScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    standard: str = Field(description="The Early Help Quality Standard scored.")
    grade: OfstedGrade = Field(description="Grade on the Ofsted scale.")


class AuditCompleted(EventData):
    """A quality audit of a case, graded against the Early Help Quality Standards."""

    event_type: ClassVar[str] = "audit-completed"

    audit_id: str = Field(description="Audit service's id for the audit.")
    case_id: str = Field(description="The audited case.")
    family_id: str = Field(description="The audited case's family.")
    district: str = Field(description="The case's district.")
    team_id: str | None = Field(default=None, description="The case's team.")
    auditor_id: str = Field(description="Team manager or head of service who audited.")
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Audit month, YYYY-MM.")
    scores: list[StandardScore] = Field(description="One grade per quality standard.")
    overall_grade: OfstedGrade = Field(description="The overall grade.")
    learning_points: list[str] = Field(default_factory=list, description="What to learn.")
    completed_at: datetime = Field(description="When the audit was completed.")
    auditor_role: str | None = Field(
        default=None, description="The auditor's role: team_manager or head_of_service."
    )
    level_of_need: LevelOfNeed | None = Field(
        default=None, description="The case's level of need when it was drawn for audit."
    )
    due_by: datetime | None = Field(
        default=None,
        description="When the audit fell due: the end of its month. Completed after this, it"
        " was late.",
    )


class AuditAssigned(EventData):
    """A case was drawn for an auditor's monthly audit: the audit is now due."""

    event_type: ClassVar[str] = "audit-assigned"

    audit_id: str = Field(description="Audit service's id for the audit.")
    case_id: str = Field(description="The case to audit.")
    family_id: str = Field(description="The case's family.")
    district: str = Field(description="The case's district.")
    team_id: str | None = Field(default=None, description="The case's team.")
    auditor_id: str = Field(description="Team manager or head of service who must audit it.")
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Audit month, YYYY-MM.")
    assigned_at: datetime = Field(description="When the draw assigned it.")
    due_by: datetime = Field(description="When it falls due: the end of its month.")


class TeamCapacityChanged(EventData):
    """A locality team's capacity after a worker joined, left or changed FTE or cap.

    Carries the whole figure rather than a difference, so the newest event per team is
    all a reader needs.
    """

    event_type: ClassVar[str] = "team-capacity-changed"

    team_id: str = Field(description="Locality team id.", examples=["northvale-north"])
    team_name: str = Field(description="The team's name.", examples=["Northvale North"])
    district: str = Field(description="The district the team serves.", examples=["northvale"])
    workers: int = Field(ge=0, description="Workers currently in the team.")
    fte: float = Field(ge=0, description="The team's total full-time equivalent.")
    capacity: int = Field(ge=0, description="Families the team can hold: its workers' caps.")
    changed_at: datetime = Field(description="When the change was made.")

    def event_subject(self) -> str | None:
        return self.team_id


class PerformanceSnapshot(EventData):
    """One district's (or the county's) monthly performance figures, as they stand now.

    Published by reporting when the figures change, at most once every few seconds per
    district and month; the newest ``version`` per key supersedes the rest.
    """

    event_type: ClassVar[str] = "performance-snapshot"

    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="The month, YYYY-MM.")
    district: str = Field(description="The district, or ``all`` for the whole county.")
    version: int = Field(ge=1, description="Rises with every snapshot of this month/district.")
    figures: dict[str, Any] = Field(
        description="The monthly report, as ``GET /reports/monthly`` answers it."
    )
    generated_at: datetime = Field(description="When the figures were computed.")

    def event_subject(self) -> str | None:
        return f"{self.month}|{self.district}"


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        ReferralSubmitted,
        ReferralReceived,
        ReferralRejected,
        CaseAllocated,
        CaseClosed,
        AuditCompleted,
        AuditAssigned,
        TeamCapacityChanged,
        PerformanceSnapshot,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _case_allocated_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 called the first rule's allocation "continuing"; v2 names it "existing_case".
    if data.get("kind") == "continuing":
        return {**data, "kind": AllocationKind.EXISTING_CASE.value}
    return data


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("case-allocated", 1): _case_allocated_v1_to_v2,
}
"""``(event type, version)`` -> function lifting that version's data to the next one."""


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


class UndecodableEvent(ValueError):
    """The bytes are not an event this service can read: retrying will not help."""


def envelope(
    data: EventData,
    *,
    event_id: str,
    source: str,
    time: datetime,
    correlation_id: str,
) -> CloudEvent[EventData]:
    """Wrap event data in its envelope; the subject is the family when family-scoped."""
    return CloudEvent[EventData](
        id=event_id,
        source=source,
        type=data.event_type,
        time=time,
        subject=data.event_subject(),
        correlationid=correlation_id,
        schemaversion=data.schema_version,
        data=data,
    )


def read_envelope(raw: bytes) -> RawEvent:
    """Parse the envelope only, leaving ``data`` as a dict for the caller to validate."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UndecodableEvent(f"not JSON: {error}") from error
    except (RecursionError, ValueError) as error:
        # Nested past the parser's depth, or a number too long to read: no event of ours.
        raise UndecodableEvent(f"not readable JSON: {type(error).__name__}") from error
    try:
        return RawEvent.model_validate(document)
    except ValidationError as error:
        raise UndecodableEvent(f"not a CloudEvents 1.0 envelope: {_summary(error)}") from error


EventT = TypeVar("EventT", bound=EventData)


def read_data(event: RawEvent, model: type[EventT]) -> EventT:
    """Validate an envelope's data as ``model``, upcasting older schema versions first."""
    if event.type != model.event_type:
        raise UndecodableEvent(f"expected type {model.event_type!r}, got {event.type!r}")
    version, data = event.schemaversion, dict(event.data)
    if version > model.schema_version:
        raise UndecodableEvent(
            f"{event.type} schema version {version} is newer than {model.schema_version}"
        )
    while version < model.schema_version:
        upcast = UPCASTERS.get((event.type, version))
        if upcast is None:
            raise UndecodableEvent(f"no upcaster for {event.type} version {version}")
        data, version = upcast(data), version + 1
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise UndecodableEvent(f"invalid {event.type} data: {_summary(error)}") from error


def decode(raw: bytes, model: type[EventT]) -> tuple[RawEvent, EventT]:
    event = read_envelope(raw)
    return event, read_data(event, model)


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()
    )
