"""Who may use the audit API: managers audit and read audits; administrators keep the
register of auditors. Submitting an audit also needs the token's ``sub`` to be the audit's
assigned auditor, which the endpoint checks."""

from __future__ import annotations

from shared.auth import (
    ADMIN_ONLY,
    ADMINISTRATOR,
    DEAD_LETTER_RULES,
    EVERY_ROLE,
    MANAGERS,
    Policy,
    Role,
    Rule,
)

READ = Rule(MANAGERS | ADMINISTRATOR)

POLICY: Policy = {
    ("GET", "/standards"): Rule(EVERY_ROLE),
    ("GET", "/auditors"): READ,
    ("GET", "/auditors/{auditor_id}"): READ,
    ("POST", "/auditors"): ADMIN_ONLY,
    ("PATCH", "/auditors/{auditor_id}"): ADMIN_ONLY,
    ("POST", "/auditors/{auditor_id}/deactivation"): ADMIN_ONLY,
    ("POST", "/audits/draws"): Rule(frozenset({Role.HEAD_OF_SERVICE, Role.ADMINISTRATOR})),
    ("GET", "/audits/draws"): READ,
    ("GET", "/audits"): READ,
    ("GET", "/audits/{audit_id}"): READ,
    ("GET", "/audits/compliance"): Rule(MANAGERS | {Role.PERFORMANCE_ANALYST, Role.ADMINISTRATOR}),
    ("POST", "/audits/{audit_id}/completion"): Rule(MANAGERS),
    ("GET", "/refusals"): ADMIN_ONLY,
    **DEAD_LETTER_RULES,
}
