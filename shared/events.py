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


class AllocationStatus(StrEnum):
    ALLOCATED = "allocated"
    QUEUED = "queued"


class AllocationKind(StrEnum):
    """Why the case went where it did."""

    STANDARD = "standard"
    CONTINUING = "continuing"
    STEP_DOWN = "step_down"
    CO_WORKING = "co_working"


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
    date_of_birth: date = Field(description="ISO date of birth.")
    gender: Literal["female", "male", "other", "not_known"] = Field(
        description="Gender as recorded by the referrer."
    )
    upn: str | None = Field(default=None, description="Unique Pupil Number (13 characters).")
    nhs_number: str | None = Field(default=None, description="NHS number (10 digits).")
    school: str | None = Field(default=None, max_length=200, description="School attended.")


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line1: str = Field(min_length=1, max_length=200, description="First line of the address.")
    line2: str | None = Field(default=None, max_length=200, description="Second line.")
    town: str | None = Field(default=None, max_length=100, description="Town or village.")
    postcode: str = Field(min_length=5, max_length=8, description="UK postcode.")


class SafeguardingOverride(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lawful_basis: str = Field(
        min_length=1, description="Why the request proceeds without consent (the lawful basis)."
    )
    recorded_by: str = Field(min_length=1, description="Who recorded the override.")


class Consent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    given: bool = Field(description="Whether the family consented to the request.")
    given_by: str | None = Field(default=None, description="Who gave consent.")
    given_at: datetime | None = Field(default=None, description="When consent was given.")
    safeguarding_override: SafeguardingOverride | None = Field(
        default=None, description="Set when the request proceeds without consent."
    )


class ReferralSubmitted(EventData):
    """A Request for Early Help Support as a partner system sent it: the front door's input.

    Unknown fields are refused rather than ignored, so a partner's misspelt field is
    answered instead of silently lost.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str] = "referral-submitted"

    partner_id: str = Field(min_length=1, max_length=100, description="The sending system's id.")
    submission_id: str = Field(
        min_length=1, max_length=200, description="The partner's own id for this submission."
    )
    route: str = Field(min_length=1, description="The referral route, e.g. school, gp, police.")
    referrer: Referrer = Field(description="Who made the request.")
    children: list[Child] = Field(min_length=1, description="The children the request is for.")
    address: Address = Field(description="The family's address.")
    needs: list[HeadlineOutcome] = Field(
        min_length=1, description="Needs behind the request, as Supporting Families outcomes."
    )
    level_of_need: LevelOfNeed = Field(description="The referrer's view of the level of need.")
    consent: Consent = Field(description="Consent, or a safeguarding override.")
    open_to_social_care: bool = Field(
        default=False, description="Whether the family is open to Children's Social Care."
    )
    social_care_case_reference: str | None = Field(
        default=None, description="The social care case reference (open cases, step-downs)."
    )
    notes: str | None = Field(default=None, max_length=5000, description="Free text.")

    def event_subject(self) -> str | None:
        return None


# ---------------------------------------------------------------------------------------------
# Events the services publish


class ReferralReceived(EventData):
    """A valid request, matched to a family and screened by the front door."""

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
        default=False, description="Within 12 months of the family's last closed case."
    )
    received_at: datetime = Field(description="When the front door received the request.")


class RejectionReason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    field: str = Field(description="Path of the offending field, dotted; empty for the whole.")
    code: str = Field(description="Machine-readable reason, e.g. missing, invalid_route.")
    message: str = Field(description="What is wrong, for a person.")


class ReferralRejected(EventData):
    """A request that cannot be accepted, with every reason found."""

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
    """A family's case was given to a team and worker, or queued for one."""

    event_type: ClassVar[str] = "case-allocated"

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


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        ReferralSubmitted,
        ReferralReceived,
        ReferralRejected,
        CaseAllocated,
        CaseClosed,
        AuditCompleted,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
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
