"""Event contracts: the CloudEvents 1.0 envelope and every event the services exchange.

Wire types live in this package and nowhere else. Adding an optional field keeps an event's
schema version; removing, renaming, retyping or requiring a field is a breaking change that
needs a new version and an upcaster in ``PLATFORM_EVENTS``, and the contract tests refuse
it otherwise.
"""

from shared.events.audits import AuditAssigned, AuditCompleted, StandardScore
from shared.events.cases import (
    CaseAllocated,
    CaseClosed,
    TeamCapacityChanged,
    case_allocated_v1_to_v2,
)
from shared.events.codec import EventRegistry, EventT, UndecodableEvent, Upcaster, read_envelope
from shared.events.envelope import (
    CONTENT_TYPE,
    SPEC_VERSION,
    CloudEvent,
    EventData,
    RawEvent,
    envelope,
)
from shared.events.families import FamilyErased
from shared.events.performance import (
    MonthlyReport,
    PerformanceSnapshot,
    performance_snapshot_v1_to_v2,
    performance_snapshot_v2_to_v3,
)
from shared.events.referrals import (
    Address,
    Child,
    Consent,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
    Referrer,
    RejectionReason,
    SafeguardingOverride,
)
from shared.events.vocabulary import (
    AllocationKind,
    AllocationStatus,
    CaseOutcome,
    FamilyMatchRule,
    HeadlineOutcome,
    LevelOfNeed,
    OfstedGrade,
    ScreeningDecision,
)

PLATFORM_EVENTS = EventRegistry(
    [
        ReferralSubmitted,
        ReferralReceived,
        ReferralRejected,
        CaseAllocated,
        CaseClosed,
        AuditCompleted,
        AuditAssigned,
        TeamCapacityChanged,
        PerformanceSnapshot,
        FamilyErased,
    ],
    {
        ("case-allocated", 1): case_allocated_v1_to_v2,
        ("performance-snapshot", 1): performance_snapshot_v1_to_v2,
        ("performance-snapshot", 2): performance_snapshot_v2_to_v3,
    },
)
"""Every event the platform exchanges, and the upcasters that read their older versions."""

__all__ = [
    "CONTENT_TYPE",
    "PLATFORM_EVENTS",
    "SPEC_VERSION",
    "Address",
    "AllocationKind",
    "AllocationStatus",
    "AuditAssigned",
    "AuditCompleted",
    "CaseAllocated",
    "CaseClosed",
    "CaseOutcome",
    "Child",
    "CloudEvent",
    "Consent",
    "EventData",
    "EventRegistry",
    "EventT",
    "FamilyErased",
    "FamilyMatchRule",
    "HeadlineOutcome",
    "LevelOfNeed",
    "MonthlyReport",
    "OfstedGrade",
    "PerformanceSnapshot",
    "RawEvent",
    "ReferralReceived",
    "ReferralRejected",
    "ReferralSubmitted",
    "Referrer",
    "RejectionReason",
    "SafeguardingOverride",
    "ScreeningDecision",
    "StandardScore",
    "TeamCapacityChanged",
    "UndecodableEvent",
    "Upcaster",
    "envelope",
    "read_envelope",
]
