"""The monthly performance measures and the funding formula, as pure functions.

The read models keep one fact per referral, rejection, allocation, case, team capacity
change and audit, under the thing's own id, and beside them the figures as aggregates
addressed by id (MongoDB's computed pattern): a month's counters per district and for the
county, and per district the changes to the month-end figures (open cases, the queue,
capacity) month by month. ``project`` turns a batch of events into the facts it changes and
the increments it makes: each fact contributes to the aggregates by what it says now, so
an event that changes a fact takes away what the fact contributed before and adds what it
contributes after. Redelivered, late and out-of-order events therefore land where they
belong, and a report is a few reads by id however long the history.

A month is that of the fact's own time in UTC, never of its arrival.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from itertools import accumulate
from typing import Any

from pydantic import BaseModel

from shared.events import (
    AllocationKind,
    AllocationStatus,
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
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
from shared.months import month_end, month_of

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
# Facts

Fact = dict[str, Any]
"""What the events say of one thing, as stored (datetimes in UTC, to the millisecond)."""

REFERRAL = "referral"
REJECTION = "rejection"
ALLOCATION = "allocation"
CASE = "case"
CAPACITY = "capacity"
AUDIT = "audit"
FACT_KINDS = (REFERRAL, REJECTION, ALLOCATION, CASE, CAPACITY, AUDIT)

FactKey = tuple[str, str]
"""(kind, id): a fact, addressed by its own id within its kind."""

MONTHLY = "monthly"
"""A month's counters of a district or (``ALL_DISTRICTS``) the county, by ``month|district``."""
STANDING = "standing"
"""One district's (or the county's) month-end changes, month by month, and the county's list
of months and districts: addressed by district."""

Increment = tuple[str, str, str]
"""(aggregate kind, aggregate id, dotted path of a counter)."""

MonthKey = tuple[str, str]
"""(month, district): figures an event moved, for the snapshots."""

WAIT_SECONDS_EXACT_BELOW = 3600
"""Waits are kept to the second below an hour and to the minute above (at most 30 s off, a
hundredth of an hour is 36 s), so a month's distribution has a bounded number of values."""


def fact_keys(data: EventData) -> list[FactKey]:
    """The facts an event changes."""
    match data:
        case ReferralReceived():
            return [(REFERRAL, data.referral_id)]
        case ReferralRejected():
            return [(REJECTION, data.rejection_id)]
        case CaseAllocated():
            keys = [(CASE, data.case_id)]
            if _opens_co_working(data):
                keys.append((REFERRAL, data.referral_id))
            if _is_allocation(data):
                keys.append((ALLOCATION, f"{data.case_id}|{data.referral_id}"))
            return keys
        case CaseClosed():
            return [(CASE, data.case_id)]
        case TeamCapacityChanged():
            return [(CAPACITY, f"{data.team_id}|{_utc(data.changed_at).isoformat()}")]
        case AuditAssigned() | AuditCompleted():
            return [(AUDIT, data.audit_id)]
    raise TypeError(f"no projection for {type(data).__name__}")


def record(kind: str, fact: Fact | None, data: EventData) -> Fact:
    """The fact ``kind`` after ``data``: a new dict, ``fact`` is left as it was."""
    new: Fact = dict(fact or {})
    match data:
        case ReferralReceived():
            new.update(
                month=month_of(data.received_at),
                district=data.district,
                source=data.referral_source,
                route=data.route,
                decision=data.decision.value,
                re_referral=data.is_re_referral,
                step_down=data.is_step_down,
                received_at=_utc(data.received_at),
            )
        case ReferralRejected():
            new.update(
                month=month_of(data.received_at),
                partner_id=data.partner_id,
                codes=sorted({reason.code for reason in data.reasons}),
                received_at=_utc(data.received_at),
            )
        case CaseAllocated() if kind == REFERRAL:
            # Co-working is allocation's decision: the referral counts as it says, whichever
            # event arrives first.
            new["co_working"] = True
        case CaseAllocated() if kind == ALLOCATION:
            if not new:  # the first allocation of a referral's case stands
                new.update(
                    month=month_of(data.allocated_at),
                    district=data.district,
                    team_id=data.team_id,
                    kind=data.kind.value,
                    seconds=data.time_to_allocation_seconds,
                    allocated_at=_utc(data.allocated_at),
                )
        case CaseAllocated():
            at = _utc(data.allocated_at)
            new["district"] = data.district
            if data.team_id is not None:
                # Every team the case had, by time: the newest is its team, whatever order
                # the events came in.
                new["teams"] = {**new.get("teams", {}), _time_key(at): data.team_id}
            first = "allocated_at" if data.status is AllocationStatus.ALLOCATED else "queued_at"
            new[first] = min(new[first], at) if new.get(first) else at
        case CaseClosed():
            new.update(
                district=data.district,
                closed_at=_utc(data.closed_at),
                outcome=data.outcome.value,
            )
        case TeamCapacityChanged():
            new.update(
                team_id=data.team_id,
                district=data.district,
                capacity=data.capacity,
                changed_at=_utc(data.changed_at),
            )
        case AuditAssigned():
            new.update(
                month=data.month,
                district=data.district,
                team_id=data.team_id,
                assigned_at=_utc(data.assigned_at),
                due_by=None if data.due_by is None else _utc(data.due_by),
            )
        case AuditCompleted():
            new.update(
                month=data.month,
                district=data.district,
                team_id=data.team_id,
                completed_at=_utc(data.completed_at),
                overall_grade=data.overall_grade.value,
            )
        case _:
            raise TypeError(f"no projection for {type(data).__name__}")
    return new


def touched(data: EventData) -> list[MonthKey]:
    """The month and district whose figures an event moves."""
    match data:
        case ReferralReceived():
            return [(month_of(data.received_at), data.district)]
        case ReferralRejected():
            return [(month_of(data.received_at), ALL_DISTRICTS)]
        case CaseAllocated():
            return [(month_of(data.allocated_at), data.district)]
        case CaseClosed():
            return [(month_of(data.closed_at), data.district)]
        case TeamCapacityChanged():
            return [(month_of(data.changed_at), data.district)]
        case AuditAssigned() | AuditCompleted():
            return [(data.month, data.district), (data.month, ALL_DISTRICTS)]
    raise TypeError(f"no projection for {type(data).__name__}")


def marked(keys: Iterable[MonthKey], *, now: datetime) -> set[MonthKey]:
    """Every figure the moved ones change: a month-end figure (open cases, capacity) also
    moves every later month's, the current one's included, and every district's the county's."""
    current = month_of(now)
    found = set(keys)
    found |= {(current, district) for month, district in found if month < current}
    return found | {(month, ALL_DISTRICTS) for month, _ in found}


def _is_allocation(data: CaseAllocated) -> bool:
    """A referral's case given a worker, or a referral joining an open case: a reallocation
    (a leaver's case moved) is neither."""
    return data.status is AllocationStatus.ALLOCATED and data.reallocated_from_worker_id is None


def _opens_co_working(data: CaseAllocated) -> bool:
    return data.kind is AllocationKind.CO_WORKING and data.reallocated_from_worker_id is None


# ---------------------------------------------------------------------------------------------
# What each fact contributes to the aggregates


def contributions(kind: str, fact: Fact) -> Counter[Increment]:
    """The counters ``fact`` adds to, by how much."""
    counts: Counter[Increment] = Counter()
    match kind:
        case "referral":
            _referral(fact, counts)
        case "rejection":
            counts[(MONTHLY, month_id(fact["month"], ALL_DISTRICTS), "rejections.total")] += 1
            for code in fact["codes"]:
                counts[
                    (
                        MONTHLY,
                        month_id(fact["month"], ALL_DISTRICTS),
                        _path("rejections.reason", code),
                    )
                ] += 1
            counts[(STANDING, ALL_DISTRICTS, _path("months", fact["month"]))] += 1
        case "allocation":
            _allocation(fact, counts)
        case "case":
            _case(fact, counts)
        case "capacity":
            team, district = fact["team_id"], fact["district"]
            for standing in (district, ALL_DISTRICTS):
                entry = _path("capacity", team, _time_key(fact["changed_at"]))
                counts[(STANDING, standing, f"{entry}.places")] += fact["capacity"]
                counts[(STANDING, standing, f"{entry}.changes")] += 1
            counts[(STANDING, ALL_DISTRICTS, _path("districts", district))] += 1
            counts[(STANDING, ALL_DISTRICTS, _path("team_districts", team, district))] += 1
        case "audit":
            _audit(fact, counts)
        case _:
            raise ValueError(f"unknown fact kind {kind!r}")
    return counts


def _referral(fact: Fact, counts: Counter[Increment]) -> None:
    if "month" not in fact:
        return  # only allocation's co-working flag so far: the referral is not received yet
    month, district = fact["month"], fact["district"]
    for bucket in _buckets(month, district):
        counts[(MONTHLY, bucket, "requests.total")] += 1
        counts[(MONTHLY, bucket, _path("requests.source", fact["source"]))] += 1
        counts[(MONTHLY, bucket, _path("requests.route", fact["route"]))] += 1
        counts[(MONTHLY, bucket, _path("requests.decision", fact["decision"]))] += 1
        for flag, counter in (
            ("re_referral", "requests.re_referrals"),
            ("step_down", "requests.step_downs"),
            ("co_working", "requests.co_working"),
        ):
            if fact.get(flag):
                counts[(MONTHLY, bucket, counter)] += 1
    counts[(STANDING, ALL_DISTRICTS, _path("months", month))] += 1
    counts[(STANDING, ALL_DISTRICTS, _path("districts", district))] += 1


def _allocation(fact: Fact, counts: Counter[Increment]) -> None:
    month, district, team = fact["month"], fact["district"], fact.get("team_id")
    for bucket in _buckets(month, district):
        if fact["kind"] == AllocationKind.EXISTING_CASE.value:
            # A referral joining a case already open: no case was given a worker.
            counts[(MONTHLY, bucket, "allocations.joined")] += 1
            continue
        counts[(MONTHLY, bucket, "allocations.count")] += 1
        if fact.get("seconds") is not None:
            counts[(MONTHLY, bucket, _path("allocations.waits", _wait_key(fact["seconds"])))] += 1
        if team is not None:
            counts[(MONTHLY, bucket, _path("allocations.teams", team))] += 1
    counts[(STANDING, ALL_DISTRICTS, _path("months", month))] += 1
    if team is not None:
        counts[(STANDING, ALL_DISTRICTS, _path("team_districts", team, district))] += 1


def _case(fact: Fact, counts: Counter[Increment]) -> None:
    district = fact["district"]
    teams = fact.get("teams") or {}
    team = teams[max(teams)] if teams else None
    closed_at = fact.get("closed_at")
    if closed_at is not None:
        for bucket in _buckets(month_of(closed_at), district):
            counts[(MONTHLY, bucket, "closures.total")] += 1
            counts[(MONTHLY, bucket, _path("closures.outcome", fact["outcome"]))] += 1
    # Open at a month's end: allocated before it and not closed before it.
    allocated_at = fact.get("allocated_at")
    if allocated_at is not None:
        for month, change in _interval(allocated_at, closed_at):
            for standing in (district, ALL_DISTRICTS):
                counts[(STANDING, standing, _path("open", month))] += change
                if team is not None:
                    counts[(STANDING, standing, _path("team_open", team, month))] += change
    # Queued at a month's end: queued before it, and neither allocated nor closed before it.
    queued_at = fact.get("queued_at")
    if queued_at is not None:
        ends = [at for at in (allocated_at, closed_at) if at is not None]
        for month, change in _interval(queued_at, min(ends) if ends else None):
            for standing in (district, ALL_DISTRICTS):
                counts[(STANDING, standing, _path("queued", month))] += change
    counts[(STANDING, ALL_DISTRICTS, _path("districts", district))] += 1
    if team is not None:
        counts[(STANDING, ALL_DISTRICTS, _path("team_districts", team, district))] += 1


def _interval(start: datetime, stop: datetime | None) -> list[tuple[str, int]]:
    """Month-end changes of a state held from ``start`` until ``stop``: one in at the month
    it began, one out at the month it ended (none when it ended before it began)."""
    if stop is None:
        return [(month_of(start), 1)]
    if stop <= start:
        return []
    return [(month_of(start), 1), (month_of(stop), -1)]


def _audit(fact: Fact, counts: Counter[Increment]) -> None:
    month = fact["month"]
    buckets = (
        _buckets(month, fact["district"])
        if fact.get("district")
        else [month_id(month, ALL_DISTRICTS)]
    )
    for bucket in buckets:
        counts[(MONTHLY, bucket, "audits.due")] += 1
        if fact.get("completed_at") is not None:
            counts[(MONTHLY, bucket, "audits.completed")] += 1
            counts[(MONTHLY, bucket, _path("audits.grades", fact["overall_grade"]))] += 1
        elif fact.get("due_by") is not None:
            # Still open, by when it is due: overdue is then a sum up to the time of reading.
            counts[(MONTHLY, bucket, _path("audits.open_due", _time_key(fact["due_by"])))] += 1
    counts[(STANDING, ALL_DISTRICTS, _path("months", month))] += 1


# ---------------------------------------------------------------------------------------------
# Projection


@dataclass(frozen=True)
class Projection:
    """What a batch of events changes: each fact's new state, the net increments, the
    figures moved, and how many of the events changed a fact."""

    facts: dict[FactKey, Fact]
    increments: dict[Increment, int]
    touched: set[MonthKey]
    changed_by: int


def project(events: Sequence[EventData], known: Mapping[FactKey, Fact]) -> Projection:
    """Apply ``events`` in order to the facts ``known`` (those of ``fact_keys`` already
    stored; a missing one is new). Facts the events leave as they were are left out.

    Applying an event again changes nothing (every fact takes what an event says, the
    first allocation or the earliest time where the first counts), so a redelivered event
    adds nothing to the figures: the projection needs no record of the events applied.
    """
    before = {key: known.get(key) for data in events for key in fact_keys(data)}
    after: dict[FactKey, Fact | None] = dict(before)
    moved: set[MonthKey] = set()
    changed_by = 0
    for data in events:
        changed = False
        for key in fact_keys(data):
            recorded = record(key[0], after[key], data)
            changed = changed or recorded != after[key]
            after[key] = recorded
        if changed:
            changed_by += 1
            moved.update(touched(data))
    facts: dict[FactKey, Fact] = {}
    increments: Counter[Increment] = Counter()
    for key, fact in after.items():
        old = before[key]
        if fact is None or fact == old:
            continue
        facts[key] = fact
        increments.update(contributions(key[0], fact))
        if old is not None:
            increments.subtract(contributions(key[0], old))
    return Projection(
        facts, {path: count for path, count in increments.items() if count}, moved, changed_by
    )


class Fold:
    """Events folded in order into facts held in memory, from none stored: a rebuild's,
    written once at the end rather than read and written again for every batch. ``keep``
    takes the share of the facts a fold holds, so a long log is folded a share at a time.
    """

    def __init__(self, keep: Callable[[FactKey], bool] | None = None) -> None:
        self.facts: dict[FactKey, Fact] = {}
        self.touched: set[MonthKey] = set()
        self.changed_by = 0
        """Events that changed the first of their facts (``fact_keys``), the thing they are
        about: each counted by the one fold holding that fact."""
        self._keep = keep

    def add(self, data: EventData) -> None:
        moved = False
        for index, key in enumerate(fact_keys(data)):
            if self._keep is not None and not self._keep(key):
                continue
            old = self.facts.get(key)
            new = record(key[0], old, data)
            if new != old:
                self.facts[key] = new
                moved = True
                self.changed_by += index == 0
        if moved:
            self.touched.update(touched(data))

    def increments(self, leaving_out: Collection[FactKey] = ()) -> dict[Increment, int]:
        """What the facts add to the aggregates, but for those ``leaving_out``."""
        counts: Counter[Increment] = Counter()
        for key, fact in self.facts.items():
            if key not in leaving_out:
                counts.update(contributions(key[0], fact))
        return {path: count for path, count in counts.items() if count}


def share_of(key: FactKey, shares: int) -> int:
    """Which of ``shares`` a fact falls in, the same in every process (unlike ``hash``)."""
    return zlib.crc32(f"{key[0]}|{key[1]}".encode()) % shares


# ---------------------------------------------------------------------------------------------
# The monthly report


@dataclass(frozen=True, kw_only=True)
class MonthTotals:
    """The aggregates one month's report is computed from, read at ``now`` (the time an audit
    counts as overdue against): the month's counters and its district's (or the county's)
    month-end changes, as stored (nested by the dotted paths)."""

    month: str
    district: str | None
    now: datetime
    counters: Mapping[str, Any] = field(default_factory=dict)
    standing: Mapping[str, Any] = field(default_factory=dict)


def monthly_report(totals: MonthTotals) -> MonthlyReport:
    """Every measure of the month, as ``GET /reports/monthly`` answers them."""
    counters, standing = totals.counters, totals.standing
    requests = counters.get("requests", {})
    total = requests.get("total", 0)
    by_source = _counts(requests.get("source"))
    decisions = _counts(requests.get("decision"))
    schools = by_source.get(SCHOOLS_SOURCE, 0)
    re_referrals = requests.get("re_referrals", 0)
    rejections = counters.get("rejections", {}) if totals.district is None else {}
    allocations = counters.get("allocations", {})
    # Whole seconds, so their names need no unescaping.
    waits = {int(key): count for key, count in (allocations.get("waits") or {}).items()}
    median, p90 = percentiles_of_counts(waits, (50, 90))
    end = month_end(totals.month)
    capacity = _capacity_at(standing, end)
    places = sum(capacity.values()) if capacity else None
    open_cases = _standing_at(standing.get("open"), totals.month)
    closures = counters.get("closures", {})
    audits = counters.get("audits", {})
    now_key = _time_key(totals.now)
    return MonthlyReport(
        month=totals.month,
        district=totals.district,
        requests=RequestFigures(
            total=total,
            by_source=by_source,
            by_route=_counts(requests.get("route")),
            schools=schools,
            schools_share=_ratio(schools, total),
        ),
        outcomes=OutcomeFigures(
            accepted_for_early_help=decisions.get("early_help", 0),
            stepped_up=decisions.get("step_up", 0),
            signposted=decisions.get("signpost", 0),
            rejected=rejections.get("total", 0),
            rejected_by_reason=_counts(rejections.get("reason")),
        ),
        re_referrals=ReReferralFigures(count=re_referrals, rate=_ratio(re_referrals, total)),
        step_downs=requests.get("step_downs", 0),
        co_working=requests.get("co_working", 0),
        allocations=AllocationFigures(
            count=allocations.get("count", 0),
            joined_open_case=allocations.get("joined", 0),
            median_hours=_hours(median),
            p90_hours=_hours(p90),
            queued_at_month_end=_standing_at(standing.get("queued"), totals.month),
        ),
        caseload=CaseloadFigures(
            open_at_month_end=open_cases,
            capacity=places,
            utilisation=None if places is None else _ratio(open_cases, places),
        ),
        closures=ClosureFigures(
            total=closures.get("total", 0), by_outcome=_counts(closures.get("outcome"))
        ),
        audits=AuditFigures(
            due=audits.get("due", 0),
            completed=audits.get("completed", 0),
            overdue=sum(
                count
                for due_by, count in _counts(audits.get("open_due")).items()
                if due_by <= now_key
            ),
            grades=_counts(audits.get("grades")),
        ),
        teams=_teams(totals, capacity),
    )


def _teams(totals: MonthTotals, capacity: Mapping[str, int]) -> list[TeamFigures]:
    allocations = _counts(totals.counters.get("allocations", {}).get("teams"))
    open_cases = {
        team: _standing_at(months, totals.month)
        for team, months in _named(totals.standing.get("team_open")).items()
    }
    teams = (
        set(capacity)
        | {team for team, count in allocations.items() if count}
        | {team for team, count in open_cases.items() if count}
    )
    districts = _named(totals.standing.get("team_districts"))
    return [
        TeamFigures(
            team_id=team,
            district=totals.district or _main_district(districts.get(team)),
            allocations=allocations.get(team, 0),
            open_at_month_end=open_cases.get(team, 0),
            capacity=capacity.get(team),
        )
        for team in sorted(teams)
    ]


def _main_district(counts: Mapping[str, int] | None) -> str | None:
    """The district most of a team's facts name (the first by name on a tie)."""
    named = {_name(district): count for district, count in (counts or {}).items() if count > 0}
    return min(named, key=lambda district: (-named[district], district)) if named else None


def _capacity_at(standing: Mapping[str, Any], end: datetime) -> dict[str, int]:
    """Each team's places by its newest change before ``end``; teams with none are left out
    (no data, not no places)."""
    end_key = _time_key(end)
    found: dict[str, int] = {}
    for team, changes in _named(standing.get("capacity")).items():
        before = [key for key, change in changes.items() if key < end_key and change["changes"] > 0]
        if before:
            # A change to no places adds nothing, so its counter may never have been written.
            found[team] = changes[max(before)].get("places", 0)
    return found


def _standing_at(changes: Mapping[str, int] | None, month: str) -> int:
    """A month-end figure: the sum of its changes in every month up to ``month``."""
    return sum(count for key, count in (changes or {}).items() if _name(key) <= month)


def percentile_of_counts(counts: Mapping[int, int], p: float) -> float | None:
    """The p-th percentile of values given with how often each occurs, interpolating between
    the nearest two as ``percentile`` does over the values written out."""
    [found] = percentiles_of_counts(counts, (p,))
    return found


def percentiles_of_counts(counts: Mapping[int, int], ps: Sequence[float]) -> list[float | None]:
    """Each of the percentiles ``ps`` of counted values, sorting them once: a month's waits
    are a thousand values or so, and a trend reads twelve months."""
    present = sorted((value, count) for value, count in counts.items() if count > 0)
    if not present:
        return [None for _ in ps]
    values = [float(value) for value, _ in present]
    ends = list(accumulate(count for _, count in present))
    size = ends[-1]

    def nth(index: int) -> float:
        return values[bisect_right(ends, index)]

    found: list[float | None] = []
    for p in ps:
        rank = (size - 1) * p / 100
        low, high = math.floor(rank), math.ceil(rank)
        low_value = nth(low)
        found.append(low_value + (nth(high) - low_value) * (rank - low))
    return found


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def _wait_key(seconds: float) -> int:
    whole = round(seconds)
    return whole if whole < WAIT_SECONDS_EXACT_BELOW else round(seconds / 60) * 60


def _counts(values: Mapping[str, int] | None) -> dict[str, int]:
    """Counters under one path, by their names, leaving out those back at zero."""
    return dict(sorted((_name(key), count) for key, count in (values or {}).items() if count))


def listed(values: Mapping[str, int] | None) -> list[str]:
    """The names counted under one path (the county's months or districts), ascending."""
    return list(_counts(values))


def _named(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {_name(key): value for key, value in (values or {}).items()}


def month_id(month: str, district: str) -> str:
    """The id of a month's counters of ``district`` (``ALL_DISTRICTS`` for the county)."""
    return f"{month}|{district}"


def _buckets(month: str, district: str) -> list[str]:
    return [month_id(month, district), month_id(month, ALL_DISTRICTS)]


def _path(prefix: str, *names: object) -> str:
    """A counter's dotted path, each name escaped so a dot or dollar in it cannot nest it."""
    return ".".join([prefix, *(_escaped(str(name)) for name in names)])


@functools.lru_cache(maxsize=4096)
def _escaped(name: str) -> str:
    """Cached: the names are a county's districts, teams, months and routes, over and over."""
    return name.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def _name(key: str) -> str:
    return key.replace("%2E", ".").replace("%24", "$").replace("%25", "%")


def _time_key(at: datetime) -> str:
    """A field name that sorts as the time does, to the millisecond (no dots)."""
    at = _utc(at)
    return at.strftime("%Y%m%d%H%M%S") + f"{at.microsecond // 1000:03d}"


def _utc(at: datetime) -> datetime:
    """``at`` in UTC to the millisecond, as the database keeps it: a fact read back is the
    fact written, so what it contributed can be taken away exactly."""
    at = at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


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


# ---------------------------------------------------------------------------------------------
# CSV


def flatten(report: MonthlyReport) -> list[tuple[str, str, str]]:
    """``(measure, value, meaning)`` rows with dotted names, teams as
    ``teams.<id>.<measure>``; the meaning is the measure's own documentation (what
    ``requests`` counts, and that rejections are not in it), so a spreadsheet says what
    each figure is without the API's reference beside it."""
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, value: Any, meaning: str) -> None:
        if isinstance(value, Mapping):
            for name, inner in value.items():
                walk(f"{prefix}.{name}" if prefix else name, inner, meaning)
        else:
            rows.append((prefix, "" if value is None else str(value), meaning))

    def walk_model(prefix: str, model: BaseModel) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(value, BaseModel):
                walk_model(path, value)
            elif name != "teams":
                walk(path, value, info.description or "")

    walk_model("", report)
    for team in report.teams:
        for name, info in TeamFigures.model_fields.items():
            if name not in ("team_id", "district"):
                walk(f"teams.{team.team_id}.{name}", getattr(team, name), info.description or "")
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
