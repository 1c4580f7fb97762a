"""Who may read the figures: performance analysts and heads of service, within their
districts. County-wide figures (no ``district``, every district, the funding split) need
every district or "*". The dashboard page itself is static and holds no figures: it asks
the API with the token it is given."""

from __future__ import annotations

from shared.auth import ADMIN_ONLY, DEAD_LETTER_RULES, OPEN, REPORTING, Policy, Rule

FIGURES = Rule(REPORTING, by_district=True)

POLICY: Policy = {
    ("GET", "/reports/months"): Rule(REPORTING),
    ("GET", "/reports/monthly"): FIGURES,
    ("GET", "/reports/monthly.csv"): FIGURES,
    ("GET", "/reports/districts"): FIGURES,
    ("GET", "/reports/trend"): FIGURES,
    ("GET", "/reports/funding"): FIGURES,
    ("GET", "/dashboard"): OPEN,
    ("GET", "/"): OPEN,
    ("GET", "/refusals"): ADMIN_ONLY,
    **DEAD_LETTER_RULES,
}
