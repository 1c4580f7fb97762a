"""The monthly performance measures and the funding formula, as pure functions.

The read models keep one fact per referral, rejection, allocation, case, team capacity
change and audit (see ``store.py``); a month's figures are computed from the facts of that
month, and the month-end figures (queue, open caseload, capacity) from the facts standing at
its end. A month is that of the fact's own time in UTC, never of its arrival, so late and
out-of-order events land where they belong and a replay gives the same figures.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from shared.events.performance import (
    AllocationFigures,
    AuditFigures,
    CaseloadFigures,
    ClosureFigures,
    MonthlyReport,
    OutcomeFigures,
    RequestFigures,
    ReReferralFigures,
    TeamFigures,
)

ALL_DISTRICTS = "all"
SCHOOLS_SOURCE = "2A"
"""Children in Need census referral source for schools."""

FUNDING_INPUTS = ("schools_requests", "accepted_referrals", "open_caseload")
DEFAULT_FUNDING_WEIGHTS: Mapping[str, float] = {
    "schools_requests": 0.5,
    "accepted_referrals": 0.3,
    "open_caseload": 0.2,
}


# ---------------------------------------------------------------------------------------------
# The monthly report


@dataclass(frozen=True, kw_only=True)
class MonthFacts:
    """What the store found for one month and one district (or the county), read at ``now``
    (the time an audit counts as overdue against)."""

    month: str
    district: str | None
    now: datetime
    referrals: Sequence[Mapping[str, Any]] = ()
    rejections: Sequence[Mapping[str, Any]] = ()
    allocations: Sequence[Mapping[str, Any]] = ()
    closures: Sequence[Mapping[str, Any]] = ()
    open_at_end: Sequence[Mapping[str, Any]] = ()
    queued_at_end: Sequence[Mapping[str, Any]] = ()
    capacity_at_end: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    audits: Sequence[Mapping[str, Any]] = ()


def monthly_report(facts: MonthFacts) -> MonthlyReport:
    """Every measure of the month, as ``GET /reports/monthly`` answers them."""
    referrals = facts.referrals
    total = len(referrals)
    by_source = Counter(referral["source"] for referral in referrals)
    decisions = Counter(referral["decision"] for referral in referrals)
    schools = by_source.get(SCHOOLS_SOURCE, 0)
    re_referrals = sum(1 for referral in referrals if referral["re_referral"])
    rejected_by_reason: Counter[str] = Counter()
    for rejection in facts.rejections:
        rejected_by_reason.update(set(rejection["codes"]))
    waits = sorted(
        allocation["seconds"] / 3600
        for allocation in facts.allocations
        if allocation.get("seconds") is not None
    )
    capacity = sum(team["capacity"] for team in facts.capacity_at_end.values())
    open_cases = len(facts.open_at_end)
    completed = [audit for audit in facts.audits if audit.get("completed_at") is not None]
    overdue = [
        audit
        for audit in facts.audits
        if audit.get("completed_at") is None
        and audit.get("due_by") is not None
        and audit["due_by"] <= facts.now
    ]
    return MonthlyReport(
        month=facts.month,
        district=facts.district,
        requests=RequestFigures(
            total=total,
            by_source=_sorted(by_source),
            by_route=_sorted(Counter(referral["route"] for referral in referrals)),
            schools=schools,
            schools_share=_ratio(schools, total),
        ),
        outcomes=OutcomeFigures(
            accepted_for_early_help=decisions.get("early_help", 0),
            stepped_up=decisions.get("step_up", 0),
            signposted=decisions.get("signpost", 0),
            rejected=len(facts.rejections),
            rejected_by_reason=_sorted(rejected_by_reason),
        ),
        re_referrals=ReReferralFigures(count=re_referrals, rate=_ratio(re_referrals, total)),
        step_downs=sum(1 for referral in referrals if referral["step_down"]),
        co_working=sum(1 for referral in referrals if referral.get("co_working")),
        allocations=AllocationFigures(
            count=len(facts.allocations),
            median_hours=_rounded(percentile(waits, 50)),
            p90_hours=_rounded(percentile(waits, 90)),
            queued_at_month_end=len(facts.queued_at_end),
        ),
        caseload=CaseloadFigures(
            open_at_month_end=open_cases,
            capacity=capacity,
            utilisation=_ratio(open_cases, capacity),
        ),
        closures=ClosureFigures(
            total=len(facts.closures),
            by_outcome=_sorted(Counter(closure["outcome"] for closure in facts.closures)),
        ),
        audits=AuditFigures(
            due=len(facts.audits),
            completed=len(completed),
            overdue=len(overdue),
            grades=_sorted(Counter(audit["overall_grade"] for audit in completed)),
        ),
        teams=_teams(facts),
    )


def _teams(facts: MonthFacts) -> list[TeamFigures]:
    allocations = Counter(allocation.get("team_id") for allocation in facts.allocations)
    open_cases = Counter(case.get("team_id") for case in facts.open_at_end)
    teams = {
        team_id: team.get("district")
        for team_id, team in facts.capacity_at_end.items()
        if team_id is not None
    }
    for source in (facts.allocations, facts.open_at_end):
        for fact in source:
            if fact.get("team_id") is not None:
                teams.setdefault(fact["team_id"], fact.get("district"))
    return [
        TeamFigures(
            team_id=team_id,
            district=teams[team_id],
            allocations=allocations.get(team_id, 0),
            open_at_month_end=open_cases.get(team_id, 0),
            capacity=facts.capacity_at_end.get(team_id, {}).get("capacity", 0),
        )
        for team_id in sorted(teams)
    ]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile of sorted ``values``, interpolating between the nearest two.

    None for no values: a month with no allocations has no waiting time, not a zero one.
    """
    if not values:
        return None
    rank = (len(values) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# CSV


def flatten(report: MonthlyReport) -> list[tuple[str, str]]:
    """``(measure, value)`` rows with dotted names, teams as ``teams.<id>.<measure>``."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for name, inner in value.items():
                walk(f"{prefix}.{name}" if prefix else name, inner)
        elif value is None:
            rows.append((prefix, ""))
        else:
            rows.append((prefix, str(value)))

    for name, value in report.model_dump().items():
        if name == "teams":
            for team in value:
                for measure, figure in team.items():
                    if measure not in ("team_id", "district"):
                        walk(f"teams.{team['team_id']}.{measure}", figure)
        else:
            walk(name, value)
    return rows


# ---------------------------------------------------------------------------------------------
# Funding


@dataclass(frozen=True)
class DistrictShare:
    district: str
    inputs: dict[str, int]
    input_shares: dict[str, float]
    share: float
    amount_pence: int


@dataclass(frozen=True)
class FundingSplit:
    amount_pence: int
    weights: dict[str, float]
    districts: list[DistrictShare]


def split_funding(
    amount_pence: int,
    inputs: Mapping[str, Mapping[str, int]],
    weights: Mapping[str, float],
) -> FundingSplit:
    """Share ``amount_pence`` across districts by a weighted formula, to the exact penny.

    A district's share is the weighted mean of its shares of each input (its schools'
    requests over the county's, and so on). An input that is zero everywhere tells nothing
    and its weight goes to the others; with nothing at all, districts share equally.
    Pence are handed out by largest remainder, so the parts always add up to the amount.
    """
    districts = sorted(inputs)
    if not districts:
        return FundingSplit(amount_pence, dict(weights), [])
    totals = {name: sum(inputs[d].get(name, 0) for d in districts) for name in weights}
    used = {name: Fraction(weight) for name, weight in weights.items() if totals[name] > 0}
    weight_sum = sum(used.values(), Fraction(0))
    shares: dict[str, Fraction] = {}
    input_shares: dict[str, dict[str, float]] = {}
    for district in districts:
        per_input = {
            name: Fraction(inputs[district].get(name, 0), totals[name]) if totals[name] else None
            for name in weights
        }
        input_shares[district] = {
            name: round(float(share), 6) for name, share in per_input.items() if share is not None
        }
        if weight_sum == 0:
            shares[district] = Fraction(1, len(districts))
        else:
            shares[district] = (
                sum(
                    (weight * (per_input[name] or Fraction(0)) for name, weight in used.items()),
                    Fraction(0),
                )
                / weight_sum
            )
    pence = _largest_remainder(amount_pence, shares)
    return FundingSplit(
        amount_pence,
        dict(weights),
        [
            DistrictShare(
                district,
                {name: inputs[district].get(name, 0) for name in weights},
                input_shares[district],
                round(float(shares[district]), 6),
                pence[district],
            )
            for district in districts
        ],
    )


def _largest_remainder(amount: int, shares: Mapping[str, Fraction]) -> dict[str, int]:
    exact = {district: share * amount for district, share in shares.items()}
    pence = {district: math.floor(value) for district, value in exact.items()}
    left = amount - sum(pence.values())
    by_remainder = sorted(exact, key=lambda district: (-(exact[district] % 1), district))
    for district in by_remainder[:left]:
        pence[district] += 1
    return pence


class InvalidWeights(ValueError):
    """A funding formula's weights that cannot be used: an unknown input, a weight that is not
    a finite number >= 0, or none above 0. A ``ValueError``, so settings refuse them too."""


_INPUT = "(?:" + "|".join(FUNDING_INPUTS) + ")"
_POSITIVE = r"(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
WEIGHTS_PATTERN = rf"^{_INPUT}:{_POSITIVE}(?:, *{_INPUT}:{_POSITIVE})*$"
"""``input:weight,...``: known inputs, each weight a decimal above 0 (leave an input out to
give it no weight)."""


def parse_weights(text: str) -> dict[str, float]:
    """``"schools_requests:0.5,accepted_referrals:0.5"`` -> weights, refusing unknown inputs
    and weights that are not decimals above 0."""
    if re.fullmatch(WEIGHTS_PATTERN, text) is None:
        for part in text.split(","):
            name, _, value = part.partition(":")
            if name.strip() not in FUNDING_INPUTS:
                raise InvalidWeights(
                    f"unknown funding input {name.strip()!r}; known: {', '.join(FUNDING_INPUTS)}"
                )
            if re.fullmatch(_POSITIVE, value) is None:
                raise InvalidWeights(f"weight of {name} must be a decimal above 0: {value!r}")
        raise InvalidWeights("weights are input:weight pairs separated by commas")
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition(":")
        weights[name.strip()] = float(value)
    return weights


def districts_in(facts: Iterable[Mapping[str, Any]]) -> set[str]:
    return {fact["district"] for fact in facts if fact.get("district")}
