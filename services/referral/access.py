"""Who may use the front door's API: the HTTP access policy.

Personal data (names, dates of birth, identifiers, addresses) lives only in this service.
Reading it is for casework roles, needs a stated reason, and leaves a record in the access
log (``handlers/access_log.py``): who, when, which family, what and why. Administrators run
the service (keys, erasure, retention) but do not read families' details.
"""

from __future__ import annotations

from shared.auth import (
    ADMIN_ONLY,
    CASEWORK,
    DEAD_LETTER_RULES,
    EVERY_ROLE,
    PARTNER,
    Policy,
    Rule,
)

CATALOGUE = Rule(EVERY_ROLE)
PERSONAL_DATA = Rule(CASEWORK)

POLICY: Policy = {
    ("POST", "/referrals"): PARTNER,
    ("GET", "/referrals/{referral_id}"): PERSONAL_DATA,
    ("GET", "/rejections/{rejection_id}"): PERSONAL_DATA,
    ("GET", "/routes"): CATALOGUE,
    ("GET", "/districts"): CATALOGUE,
    ("GET", "/directory/services"): CATALOGUE,
    ("GET", "/partner-keys"): ADMIN_ONLY,
    ("POST", "/partner-keys"): ADMIN_ONLY,
    ("DELETE", "/partner-keys/{key_id}"): ADMIN_ONLY,
    ("GET", "/access-log"): ADMIN_ONLY,
    ("POST", "/families/{family_id}/erasure"): ADMIN_ONLY,
    ("GET", "/retention/review"): ADMIN_ONLY,
    ("GET", "/refusals"): ADMIN_ONLY,
    **DEAD_LETTER_RULES,
}
