"""Topic names, each equal to the type of the event it carries, and the catalogue of who
publishes and who consumes each one.

The catalogue is the one table the broker's ACLs are derived from (``shared.kafka_access``),
and a test holds every service's subscriptions and publications to it, so a topic added
later gets its ACLs from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

REFERRAL_SUBMITTED = "referral-submitted"
REFERRAL_RECEIVED = "referral-received"
REFERRAL_REJECTED = "referral-rejected"
CASE_ALLOCATED = "case-allocated"
CASE_CLOSED = "case-closed"
AUDIT_COMPLETED = "audit-completed"
AUDIT_ASSIGNED = "audit-assigned"
TEAM_CAPACITY_CHANGED = "team-capacity-changed"
PERFORMANCE_SNAPSHOT = "performance-snapshot"
FAMILY_ERASED = "family-erased"

REFERRAL = "referral"
ALLOCATION = "allocation"
AUDIT = "audit"
REPORTING = "reporting"
SERVICES = (REFERRAL, ALLOCATION, AUDIT, REPORTING)
PARTNERS = "partners"
"""Partner systems as publishers: each has a broker user of its own."""


@dataclass(frozen=True)
class Topic:
    """One topic: the service (or the partners) that publishes it, and the services that
    consume it. Consumers outside the platform (reporting tools) are not listed."""

    name: str
    published_by: str
    consumed_by: tuple[str, ...] = ()


CATALOGUE = (
    Topic(REFERRAL_SUBMITTED, PARTNERS, (REFERRAL,)),
    Topic(REFERRAL_RECEIVED, REFERRAL, (ALLOCATION, REPORTING)),
    Topic(REFERRAL_REJECTED, REFERRAL, (REPORTING,)),
    Topic(CASE_ALLOCATED, ALLOCATION, (REFERRAL, AUDIT, REPORTING)),
    Topic(CASE_CLOSED, ALLOCATION, (REFERRAL, AUDIT, REPORTING)),
    Topic(TEAM_CAPACITY_CHANGED, ALLOCATION, (REPORTING,)),
    Topic(AUDIT_ASSIGNED, AUDIT, (REPORTING,)),
    Topic(AUDIT_COMPLETED, AUDIT, (REPORTING,)),
    Topic(PERFORMANCE_SNAPSHOT, REPORTING),
    # Every service erases what it keeps of the family, the referral service included.
    Topic(FAMILY_ERASED, REFERRAL, (REFERRAL, ALLOCATION, AUDIT, REPORTING)),
)

ALL_TOPICS = tuple(topic.name for topic in CATALOGUE)

DLQ_SUFFIX = ".dlq"


def published_by(publisher: str) -> tuple[str, ...]:
    return tuple(topic.name for topic in CATALOGUE if topic.published_by == publisher)


def consumed_by(service: str) -> tuple[str, ...]:
    return tuple(topic.name for topic in CATALOGUE if service in topic.consumed_by)


def dead_letter_topic(topic: str) -> str:
    """Where a consumer of ``topic`` puts what it could not process."""
    return f"{topic}{DLQ_SUFFIX}"


def topic_name(event_type: str, namespace: str = "") -> str:
    """The physical topic for an event type; the namespace isolates test runs and copies."""
    return f"{namespace}{event_type}"
