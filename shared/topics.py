"""Topic names: each equals the type of the event it carries."""

from __future__ import annotations

REFERRAL_SUBMITTED = "referral-submitted"
REFERRAL_RECEIVED = "referral-received"
REFERRAL_REJECTED = "referral-rejected"
CASE_ALLOCATED = "case-allocated"
CASE_CLOSED = "case-closed"
AUDIT_COMPLETED = "audit-completed"
AUDIT_ASSIGNED = "audit-assigned"
TEAM_CAPACITY_CHANGED = "team-capacity-changed"
PERFORMANCE_SNAPSHOT = "performance-snapshot"

ALL_TOPICS = (
    REFERRAL_SUBMITTED,
    REFERRAL_RECEIVED,
    REFERRAL_REJECTED,
    CASE_ALLOCATED,
    CASE_CLOSED,
    AUDIT_COMPLETED,
    AUDIT_ASSIGNED,
    TEAM_CAPACITY_CHANGED,
    PERFORMANCE_SNAPSHOT,
)

DLQ_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    """Where a consumer of ``topic`` puts what it could not process."""
    return f"{topic}{DLQ_SUFFIX}"


def topic_name(event_type: str, namespace: str = "") -> str:
    """The physical topic for an event type; the namespace isolates test runs and copies."""
    return f"{namespace}{event_type}"
