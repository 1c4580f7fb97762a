"""Who may use the allocation API: casework roles read and close cases; administrators keep
the teams and workers. Cases hold ids, never personal data."""

from __future__ import annotations

from shared.auth import ADMIN_ONLY, ADMINISTRATOR, CASEWORK, DEAD_LETTER_RULES, Policy, Rule

READ_TEAMS = Rule(CASEWORK | ADMINISTRATOR)
CASES = Rule(CASEWORK)

POLICY: Policy = {
    ("GET", "/teams"): READ_TEAMS,
    ("GET", "/teams/{team_id}"): READ_TEAMS,
    ("GET", "/workers/{worker_id}"): READ_TEAMS,
    ("POST", "/teams"): ADMIN_ONLY,
    ("PATCH", "/teams/{team_id}"): ADMIN_ONLY,
    ("POST", "/teams/{team_id}/workers"): ADMIN_ONLY,
    ("PATCH", "/workers/{worker_id}"): ADMIN_ONLY,
    ("POST", "/workers/{worker_id}/leave"): ADMIN_ONLY,
    ("GET", "/queue"): CASES,
    ("GET", "/cases"): CASES,
    ("GET", "/cases/{case_id}"): CASES,
    ("POST", "/cases/{case_id}/close"): CASES,
    ("GET", "/refusals"): ADMIN_ONLY,
    **DEAD_LETTER_RULES,
}
