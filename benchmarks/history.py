"""Two years of a county's history, stored straight into each service's database.

The page benchmark (``benchmarks.pages``) must time the pages on a database the size a
council reaches after years; replaying that history through the broker would take hours.
So the history is lived here, in memory and in time order, by the services' own rules
(the front door's validation, screening and family matching, allocation's district
aggregate, audit's monthly draw), and what each service would have stored is written with
``insert_many``, built by the services' own serialisation helpers so that the shapes cannot
drift from what the stores write. Reporting's history is folded in by its own store from
the events the history gave. The services then start on top of it as on any other day.

Partner traffic is the simulator's (``simulator.traffic``): routes in their shares,
siblings, repeat families, step-downs, co-working and invalid requests. Staff are the
sample county's nine teams and their auditors, so cases are short (a few days each) and the
last five weeks are busier than the teams can take: most cases are closed, every worker is
full and a waiting list of some weeks stands at the end.

Usage: ``python -m benchmarks.history --referrals 20000 --mongodb-uri URI``, before the
services start on that database (``EARLYHELP_DATABASE_PREFIX`` names it, as for them).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import heapq
import itertools
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Protocol

from services.allocation import domain as allocation
from services.allocation import store as allocation_store
from services.allocation.domain import Band, Case, District, QueuePlace, Team, Worker
from services.allocation.sample import sample_county
from services.allocation.settings import AllocationSettings
from services.audit import domain as audit
from services.audit import store as audit_store
from services.audit.domain import Audit, Auditor, CaseState, DrawPolicy, DrawRound
from services.audit.sample import sample_auditors
from services.audit.settings import AuditSettings
from services.referral import domain as referral
from services.referral import handlers as front_door
from services.referral import store as referral_store
from services.referral.ports import Accepted, Decided
from services.referral.settings import ReferralSettings, match_keys_of
from services.reporting.settings import ReportingSettings
from services.reporting.store import MongoReportingStore
from shared.clock import utc_now
from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    EventData,
    OfstedGrade,
    ReferralReceived,
    ReferralRejected,
    ReferralSubmitted,
)
from shared.mongo import Database, Document, MongoClient, create_mongo_client
from shared.months import add_months, month_end, month_of, month_start, shift_month
from shared.outbox import Outbox
from shared.secrets import SecretMissing, new_secret
from simulator.traffic import traffic

HISTORY_MONTHS = 24
INSERT_BATCH = 2_000
"""Documents per ``insert_many``: large enough that a round trip costs little beside it."""
FOLD_CHUNK = 5_000
"""Events per call of reporting's bulk fold."""
QUEUED_JOBS = 4
"""Writes waiting for the database while the next documents are made: enough to keep it
busy, few enough that the documents waiting stay small."""
PUMP_EVERY = 50
"""Referrals lived between two hand-overs to the writer, which runs only when we yield."""

WORKING_DAY = (clock_time(8), clock_time(18))
DAY_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 0.9, 0.12, 0.08)
"""Monday to Sunday: partners refer in working hours, a few at weekends."""
ALLOCATION_DELAY_S = (0.3, 2.0)
"""How long after the front door allocation places a referral, in seconds."""

UTILISATION = 0.9
"""Caseloads' offered load against capacity, before the last weeks."""
BUSY_UTILISATION = 1.25
BUSY_DAYS = 35
"""The last weeks the teams cannot keep up: their waiting list is what stands at the end."""
EARLY_HELP_SHARE = 0.72
"""The referrals that open a case, for the rate allocation expects before it has counted."""

OUTCOMES: Mapping[CaseOutcome, float] = {
    CaseOutcome.NEEDS_MET: 0.6,
    CaseOutcome.STEPPED_UP: 0.1,
    CaseOutcome.DISENGAGED: 0.15,
    CaseOutcome.MOVED_AWAY: 0.05,
    CaseOutcome.OTHER: 0.1,
}
GRADES: Mapping[OfstedGrade, float] = {
    OfstedGrade.OUTSTANDING: 0.1,
    OfstedGrade.GOOD: 0.55,
    OfstedGrade.REQUIRES_IMPROVEMENT: 0.28,
    OfstedGrade.INADEQUATE: 0.07,
}
AUDITS_ON_TIME = 0.8
AUDITS_LATE = 0.08
"""Of a month's audits, those completed by the month's end and those completed late; the
rest are never completed (overdue)."""
DRAW_AFTER_MONTH_START = timedelta(minutes=5)
"""The audit service draws a month at its first check in it."""
LEARNING_POINTS = (
    "Record the child's own words in the assessment.",
    "Agree review dates with the family at the first visit.",
    "Share the plan with the school's safeguarding lead.",
    "Note management oversight at each supervision.",
)

REFERRAL = "referral"
ALLOCATION = "allocation"
AUDIT = "audit"
REPORTING = "reporting"


class Sink(Protocol):
    """Where the history goes: each service's documents, and the events for reporting."""

    def add(self, service: str, collection: str, document: Document) -> None: ...

    def event(self, event: EventData) -> None: ...

    async def pump(self) -> None:
        """Hand what is ready to the database; called often, as nothing else yields."""


def to_millisecond(at: datetime) -> datetime:
    """Times as the database keeps them, so what is read back equals what was decided."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def arrival_times(
    count: int, start: datetime, end: datetime, rng: random.Random
) -> Iterator[datetime]:
    """``count`` times between ``start`` and ``end``, ascending, in working hours mostly,
    fewer in August and over Christmas (schools are shut)."""
    days: list[tuple[datetime, datetime, float]] = []
    day = start.date()
    while day <= end.date():
        opens = max(datetime.combine(day, WORKING_DAY[0], UTC), start)
        closes = min(datetime.combine(day, WORKING_DAY[1], UTC), end)
        if closes > opens:
            season = 0.7 if day.month == 8 else 1.0
            if (day.month, day.day) >= (12, 20) or (day.month, day.day) <= (1, 2):
                season = 0.4
            share = (closes - opens) / (
                datetime.combine(day, WORKING_DAY[1]) - datetime.combine(day, WORKING_DAY[0])
            )
            days.append((opens, closes, DAY_WEIGHTS[day.weekday()] * season * share))
        day += timedelta(days=1)
    total = sum(weight for _, _, weight in days)
    expected = given = 0.0
    for opens, closes, weight in days:
        expected += count * weight / total
        today = round(expected) - round(given)
        given += today
        span = (closes - opens).total_seconds()
        for offset in sorted(rng.random() * span for _ in range(today)):
            yield to_millisecond(opens + timedelta(seconds=offset))


def apply_update(document: Document, update: Document, *, inserted: bool) -> None:
    """A store's update as the database applies it, so a document built here in memory is
    the one the service's own updates would have left. Only the operators the stores use."""
    for operator, changes in update.items():
        for name, value in changes.items():
            match operator:
                case "$setOnInsert":
                    if inserted:
                        document[name] = value
                case "$set":
                    document[name] = value
                case "$unset":
                    document.pop(name, None)
                case "$max":
                    if document.get(name) is None or value > document[name]:
                        document[name] = value
                case "$addToSet":
                    values = document.setdefault(name, [])
                    if value not in values:
                        values.append(value)
                case "$pull":
                    document[name] = [each for each in document.get(name, []) if each != value]
                case _:
                    raise ValueError(f"update operator {operator} is not modelled here")


# ---------------------------------------------------------------------------------------------
# The front door


class FrontDoorRecords:
    """The referral store's records kept in memory: what ``MongoReferralStore`` writes for
    each submission, made by its own helpers, referrals and keys handed on as they are made
    and families kept until the end (their cases change them)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._family_of_key: dict[str, str] = {}
        self._rejected: set[str] = set()
        self.families: dict[str, Document] = {}
        self.last_event: ReferralReceived | ReferralRejected | None = None

    async def find_accepted(self, partner_id: str, submission_id: str) -> Accepted | None:
        return None  # every submission of the history has its own id

    async def accept(
        self,
        submission: ReferralSubmitted,
        keys: list[referral.FamilyKey],
        decide: Callable[[referral.KnownFamilies], Decided],
        *,
        correlation_id: str,
        now: datetime,
    ) -> Accepted:
        by_key = {
            key.value: self._family_of_key[key.value]
            for key in keys
            if key.value in self._family_of_key
        }
        known = referral.KnownFamilies(
            by_key=by_key,
            histories={
                family_id: referral_store._history(self.families[family_id])
                for family_id in set(by_key.values())
            },
        )
        decided = decide(known)
        event = decided.event
        document = referral_store._referral_document(submission, decided, correlation_id)
        self._sink.add(REFERRAL, referral_store.REFERRALS, document)
        family = self.families.get(event.family_id)
        inserted = family is None
        if family is None:
            family = self.families[event.family_id] = {"_id": event.family_id}
        apply_update(family, referral_store._family_update(event, now), inserted=inserted)
        for key in keys:
            if key.value not in known.by_key:
                self._family_of_key[key.value] = event.family_id
                self._sink.add(
                    REFERRAL,
                    referral_store.FAMILY_KEYS,
                    referral_store._key_document(key, event.family_id, now),
                )
        self.last_event = event
        return referral_store._accepted(document, duplicate=False)

    async def reject(
        self, document: dict[str, Any], event: ReferralRejected, *, correlation_id: str
    ) -> bool:
        if event.rejection_id in self._rejected:
            return False
        self._rejected.add(event.rejection_id)
        record = referral_store._rejection_document(document, event, correlation_id)
        self._sink.add(REFERRAL, referral_store.REJECTIONS, {"_id": event.rejection_id, **record})
        self.last_event = event
        return True

    def case_opened(self, family_id: str, case_id: str) -> None:
        """As ``note_cases_open``: a case already known closed stays closed."""
        family = self.families[family_id]
        if case_id not in family.get("closed_cases", []):
            apply_update(family, {"$addToSet": {"open_cases": case_id}}, inserted=False)

    def case_closed(self, family_id: str, case_id: str, closed_at: datetime) -> None:
        """As ``note_cases_closed``."""
        apply_update(
            self.families[family_id],
            {
                "$pull": {"open_cases": case_id},
                "$addToSet": {"closed_cases": case_id},
                "$max": {"last_closed_at": closed_at},
            },
            inserted=False,
        )

    def finish(self) -> None:
        for family in self.families.values():
            self._sink.add(REFERRAL, referral_store.FAMILIES, family)


# ---------------------------------------------------------------------------------------------
# Allocation


@dataclass
class AllocationRecords:
    """Allocation's aggregates kept in memory and changed only by its domain, each change
    then saved as ``MongoDistricts.save`` saves it: its version claimed, its queue entries
    replaced. Closed cases are final, so they are handed on at once."""

    sink: Sink
    teams: dict[str, Team]
    workers: list[Worker]
    districts: dict[str, District] = field(default_factory=dict)
    open_cases: dict[str, Case] = field(default_factory=dict)
    open_of_family: dict[str, str] = field(default_factory=dict)
    entries: dict[str, dict[Band, dict[str, QueuePlace]]] = field(default_factory=dict)
    saved_at: dict[str, datetime] = field(default_factory=dict)
    list_heads: dict[str, int] = field(default_factory=dict)
    """The next position of each list of cases (the county's and each district's)."""
    listed: dict[str, Document] = field(default_factory=dict)
    """Each open case's places in the lists, which its saves keep."""
    opened: Counter[str] = field(default_factory=Counter)
    closed: int = 0

    @classmethod
    def seeded(cls, sink: Sink, at: datetime) -> AllocationRecords:
        """The sample county's teams and workers, joined as ``handlers.seed`` joins them."""
        teams, workers = sample_county(at)
        records = cls(sink, {team.id: replace(team, capacity_version=1) for team in teams}, workers)
        for worker in workers:
            team = records.teams[worker.team_id]
            records.district(team.district).join(
                worker.id, team.id, allocation.cap_of(worker, team)
            )
        for district_id in sorted(records.districts):
            records._save(district_id, at)
        return records

    def district(self, district_id: str) -> District:
        if district_id not in self.districts:
            self.districts[district_id] = District(district_id)
            self.entries[district_id] = {}
        return self.districts[district_id]

    def capacity(self, district_id: str) -> int:
        return sum(load.cap for load in self.district(district_id).workers.values() if load.active)

    def capacity_events(self, at: datetime) -> list[EventData]:
        return [
            allocation.team_capacity(
                team,
                [worker for worker in self.workers if worker.team_id == team.id],
                self.district(team.district),
                at,
            )
            for team in self.teams.values()
        ]

    def place(
        self, event: ReferralReceived, correlation_id: str, at: datetime
    ) -> list[CaseAllocated]:
        """One referral placed by the rules, as ``handlers.place_referrals`` does."""
        self.district(event.district)
        case_id = self.open_of_family.get(event.family_id)
        open_cases = {} if case_id is None else {event.family_id: self.open_cases[case_id]}
        # A queued case raised in need leaves its place before taking the new one, so a
        # band found missing only then finds the district half-changed: as a store reloads
        # the district, it is put back as it was before the next try.
        case = open_cases.get(event.family_id)
        saved = (
            copy.deepcopy(self.districts[case.district])
            if case is not None and case.allocation is AllocationStatus.QUEUED
            else None
        )
        wanted = allocation.bands_to_read([event], open_cases, self.districts)
        for attempt in itertools.count():
            if saved is not None and attempt:
                self.districts[saved.id] = copy.deepcopy(saved)
            for district_id, band in sorted(wanted):
                self.districts[district_id].know_band(band, self._band(district_id, band))
            try:
                placement = allocation.place_referrals(
                    [(event, correlation_id)], open_cases, self.districts, at
                )
                break
            except allocation.BandNeeded as needed:
                wanted.add((needed.district, needed.band))
        for opened in placement.opened:
            self.opened[opened.district] += 1
            self._list(opened)
        for changed in [*placement.opened, *placement.joined.values()]:
            self._keep(changed)
        for district_id in sorted(placement.changed_districts):
            self._save(district_id, at)
        return placement.allocations

    def close(self, case_id: str, outcome: CaseOutcome, at: datetime) -> CaseClosed:
        """As ``handlers.close_case``; the queue is then offered the freed place."""
        case = self.open_cases.pop(case_id)
        del self.open_of_family[case.family_id]
        closed, event = allocation.close_case(case, outcome, at)
        allocation.release(self.districts[case.district], case)
        self._save(case.district, at)
        self.sink.add(ALLOCATION, allocation_store.CASES, self._document(closed))
        del self.listed[case_id]
        self.closed += 1
        return event

    def allocate_queue(self, district_id: str, at: datetime) -> list[CaseAllocated]:
        """As ``handlers.allocate_queue``."""
        district = self.districts[district_id]
        if not district.queue_length or district.choose_worker() is None:
            return []
        given: list[allocation.Allocation] = []
        while True:
            if district.needs_head():
                district.know_front(self._front(district))
            step = district.allocate_queue()
            if not step:
                break
            given += step
        if not given:
            return []
        events = []
        for each in given:
            case, event = allocation.allocated_from_queue(self.open_cases[each.case_id], each, at)
            self._keep(case)
            events.append(event)
        self._save(district_id, at)
        return events

    def queued(self) -> int:
        return sum(district.queue_length for district in self.districts.values())

    def finish(self) -> None:
        """The aggregates as they stand, and what the teams hold and wait for."""
        sink = self.sink
        for team in self.teams.values():
            sink.add(ALLOCATION, allocation_store.TEAMS, allocation_store._team_document(team))
        for worker in self.workers:
            sink.add(
                ALLOCATION, allocation_store.WORKERS, allocation_store._worker_document(worker)
            )
        for case in self.open_cases.values():
            sink.add(ALLOCATION, allocation_store.CASES, self._document(case))
            sink.add(
                ALLOCATION,
                allocation_store.OPEN_CASES,
                {"_id": case.family_id, "case_id": case.id},
            )
        for chain, following in sorted(self.list_heads.items()):
            sink.add(ALLOCATION, allocation_store.LIST_POSITIONS, {"_id": chain, "next": following})
        for district_id, district in sorted(self.districts.items()):
            sink.add(
                ALLOCATION,
                allocation_store.DISTRICTS,
                allocation_store._district_document(district, district.version),
            )
            # The last save's claim; older ones would have expired (``CLAIMS_KEPT_S``).
            sink.add(
                ALLOCATION,
                allocation_store.DISTRICT_VERSIONS,
                {
                    "_id": f"{district_id}:{district.version}",
                    "claimed_at": self.saved_at[district_id],
                },
            )
            for band in self.entries[district_id].values():
                for place in band.values():
                    sink.add(
                        ALLOCATION,
                        allocation_store.QUEUE_ENTRIES,
                        allocation_store._entry_document(district_id, place),
                    )

    def _list(self, case: Case) -> None:
        """Its places in the county's list and its district's, taken as ``MongoCases.add``
        takes them: the next of each, so the newest opened is last."""
        county = self.list_heads.get(allocation_store.COUNTY_LIST, 0)
        position = self.list_heads.get(case.district, 0)
        self.list_heads[allocation_store.COUNTY_LIST] = county + 1
        self.list_heads[case.district] = position + 1
        self.listed[case.id] = allocation_store.list_fields(case.district, county, position)

    def _document(self, case: Case) -> Document:
        """As stored: a save sets the case's fields and keeps its places in the lists."""
        return {**allocation_store.case_document(case), **self.listed[case.id]}

    def _keep(self, case: Case) -> None:
        self.open_cases[case.id] = case
        self.open_of_family[case.family_id] = case.id

    def _band(self, district_id: str, band: Band) -> list[QueuePlace]:
        return sorted(self.entries[district_id].get(band, {}).values())

    def _front(self, district: District) -> list[QueuePlace]:
        places: list[QueuePlace] = []
        for band in sorted(district.bands):
            places += self._band(district.id, band)
            if len(places) >= allocation.HEAD_SIZE:
                break
        return places

    def _save(self, district_id: str, at: datetime) -> None:
        """What ``MongoDistricts.save`` stores, in memory: the entries the aggregate took
        out and put in, and the next version. A store loads the district afresh each time,
        so the bands it read whole are forgotten too."""
        district = self.districts[district_id]
        entries = self.entries[district_id]
        for band in entries.values():
            for case_id in district.removed & band.keys():
                del band[case_id]
        for place in district.added.values():
            entries.setdefault(place.band, {})[place.case_id] = place
        district.version += 1
        district.added.clear()
        district.removed.clear()
        district._whole_bands.clear()
        self.saved_at[district_id] = at


# ---------------------------------------------------------------------------------------------
# Audit


@dataclass
class AuditRecords:
    """Audit's case population, projected from the case events by its domain, and each
    month's draw and audits. A case closed too long ago to be drawn again is final, so it
    is handed on at once."""

    sink: Sink
    auditors: list[Auditor]
    policy: DrawPolicy = field(default_factory=DrawPolicy)
    cases: dict[str, CaseState] = field(default_factory=dict)
    audits: dict[str, Audit] = field(default_factory=dict)
    draws: dict[str, Document] = field(default_factory=dict)
    drawn: dict[str, set[str]] = field(default_factory=dict)

    def apply(self, event: CaseAllocated | CaseClosed) -> None:
        self.cases[event.case_id] = audit.apply_case_event(self.cases.get(event.case_id), event)

    def draw(self, month: str, seed: int, at: datetime) -> list[tuple[Audit, EventData]]:
        """As ``handlers.draw_month`` on a month not drawn before."""
        population = [
            case
            for case in self.cases.values()
            if case.first_allocated_at is not None and case.first_allocated_at < month_end(month)
        ]
        recent = {
            case_id
            for each in audit.no_repeat_window(month)
            for case_id in self.drawn.get(each, ())
        }
        outcome = audit.draw_audits(
            month=month,
            seed=seed,
            owed=audit.still_owed(self.auditors, {}, self.policy.audits_per_month),
            population=population,
            recently_drawn=recent,
            closed_within_months=self.policy.closed_within_months,
        )
        by_id = {auditor.id: auditor for auditor in self.auditors}
        assigned = [
            audit.assign_audit(
                by_id[each.auditor_id], self.cases[each.case_id], month=month, seed=seed, now=at
            )
            for each in outcome.assignments
        ]
        drawn = DrawRound(seed=seed, at=at, assigned=len(assigned), unfilled=outcome.unfilled)
        self.draws[month] = {"_id": month, "seed": seed, "drawn_at": at, "rounds": [asdict(drawn)]}
        self.drawn[month] = {each.case_id for each in outcome.assignments}
        for given, _ in assigned:
            self.audits[given.id] = given
        # Closed before the earliest month a later draw may take: never drawn again.
        too_old = shift_month(month, -self.policy.closed_within_months - 1)
        self._hand_on_closed_before(month_start(too_old))
        return [(given, event) for given, event in assigned]

    def complete(self, audit_id: str, rng: random.Random, at: datetime) -> EventData:
        """As ``handlers.submit_audit``, by the audit's own auditor."""
        assigned = self.audits[audit_id]
        grades = list(GRADES)
        weights = list(GRADES.values())
        submission = audit.Submission(
            scores={
                standard: rng.choices(grades, weights)[0].value
                for standard in audit.QUALITY_STANDARDS
            },
            learning_points=rng.sample(LEARNING_POINTS, rng.randint(0, 2)),
        )
        completed, event = audit.complete_audit(
            assigned, submission, auditor_id=assigned.auditor_id, now=at
        )
        self.audits[audit_id] = completed
        return event

    def finish(self, at: datetime) -> None:
        sink = self.sink
        for auditor in self.auditors:
            sink.add(
                AUDIT,
                audit_store.AUDITORS,
                {
                    "_id": auditor.id,
                    **audit_store._auditor_document(auditor),
                    "created_at": at,
                    "updated_at": at,
                },
            )
        self._hand_on_closed_before(None)
        for given in self.audits.values():
            sink.add(AUDIT, audit_store.AUDITS, audit_store._audit_document(given))
        for draw in self.draws.values():
            sink.add(AUDIT, audit_store.DRAWS, draw)

    def _hand_on_closed_before(self, cutoff: datetime | None) -> None:
        """As ``MongoCases.save_many`` stores a case: its state, keyed by its id."""
        finished = [
            case
            for case in self.cases.values()
            if cutoff is None or (case.closed_at is not None and case.closed_at < cutoff)
        ]
        for case in finished:
            # ``asdict`` of these flat states, without its deep copies.
            document = {each.name: getattr(case, each.name) for each in fields(case)}
            del document["case_id"]
            self.sink.add(AUDIT, audit_store.CASES, {"_id": case.case_id, **document})
            del self.cases[case.case_id]


# ---------------------------------------------------------------------------------------------
# The history, lived in time order


@dataclass(frozen=True)
class Lived:
    """What the history left: the figures to check it by."""

    referrals: int
    rejected: int
    cases_opened: int
    cases_closed: int
    cases_open: int
    cases_queued: int
    audits: int
    audits_completed: int
    first: datetime
    last: datetime


class Timeline:
    """What happens after a referral, at its own time: closures, draws, completions."""

    def __init__(self) -> None:
        self._due: list[tuple[datetime, int, str, str]] = []
        self._order = itertools.count()

    def at(self, when: datetime, kind: str, subject: str) -> None:
        heapq.heappush(self._due, (when, next(self._order), kind, subject))

    def until(self, when: datetime) -> Iterator[tuple[datetime, str, str]]:
        """Everything due before ``when``, in time order, including what is added meanwhile."""
        while self._due and self._due[0][0] < when:
            due, _, kind, subject = heapq.heappop(self._due)
            yield due, kind, subject


async def live_history(
    sink: Sink,
    *,
    referrals: int,
    seed: int,
    now: datetime,
    match_keys: referral.MatchKeys,
) -> Lived:
    """Live ``referrals`` referrals of the ``HISTORY_MONTHS`` before ``now`` through the
    services' rules, handing each service's documents and every event to ``sink``."""
    now = to_millisecond(now.astimezone(UTC))
    start = add_months(now, -HISTORY_MONTHS)
    rng = random.Random(seed)
    doors = front_door.FrontDoor.sample(match_keys)
    records = FrontDoorRecords(sink)
    teams_at = start - timedelta(days=1)
    cases = AllocationRecords.seeded(sink, teams_at)
    audits = AuditRecords(sink, sample_auditors())
    timeline = Timeline()
    for capacity in cases.capacity_events(teams_at):
        sink.event(capacity)
    month = month_of(start)
    while (drawn_at := month_start(shift_month(month, 1)) + DRAW_AFTER_MONTH_START) < now:
        month = shift_month(month, 1)
        timeline.at(drawn_at, "draw", month)
    busy_from = now - timedelta(days=BUSY_DAYS)
    expected_per_day = referrals * EARLY_HELP_SHARE / max(1.0, (now - start).days)

    def case_events(events: Sequence[CaseAllocated | CaseClosed]) -> None:
        for event in events:
            audits.apply(event)
            if isinstance(event, CaseAllocated):
                records.case_opened(event.family_id, event.case_id)
                # A case's first worker sets its length; a referral joining it does not.
                first_worker = event.kind is not AllocationKind.EXISTING_CASE
                if event.status is AllocationStatus.ALLOCATED and first_worker:
                    timeline.at(closing_time(event), "close", event.case_id)
            else:
                records.case_closed(event.family_id, event.case_id, event.closed_at)
            sink.event(event)

    def closing_time(event: CaseAllocated) -> datetime:
        """A case lasts about as long as its district's capacity over its rate of new cases
        says, so that caseloads run near their caps."""
        elapsed = (event.allocated_at - start).total_seconds() / 86_400
        districts = max(1, len(cases.districts))
        rate = (
            cases.opened[event.district] / elapsed
            if elapsed >= 14
            else expected_per_day / districts
        )
        load = BUSY_UTILISATION if event.allocated_at >= busy_from else UTILISATION
        mean_days = load * cases.capacity(event.district) / max(rate, 1e-6)
        lasts = timedelta(days=rng.gammavariate(2.0, mean_days / 2))
        return to_millisecond(event.allocated_at + max(lasts, timedelta(hours=1)))

    def happen(until: datetime) -> None:
        for due, kind, subject in timeline.until(until):
            if kind == "close":
                outcome = rng.choices(list(OUTCOMES), list(OUTCOMES.values()))[0]
                closed = cases.close(subject, outcome, due)
                case_events([closed])
                case_events(cases.allocate_queue(closed.district, due))
            elif kind == "draw":
                for given, event in audits.draw(subject, rng.randrange(2**31), due):
                    sink.event(event)
                    completion = completion_time(given)
                    if completion is not None and completion < now:
                        timeline.at(completion, "complete", given.id)
            else:
                sink.event(audits.complete(subject, rng, due))

    def completion_time(given: Audit) -> datetime | None:
        chance = rng.random()
        if chance < AUDITS_ON_TIME:
            window = (given.due_by - given.assigned_at).total_seconds()
            return to_millisecond(given.assigned_at + timedelta(seconds=rng.random() * window))
        if chance < AUDITS_ON_TIME + AUDITS_LATE:
            return to_millisecond(given.due_by + timedelta(days=rng.random() * 14))
        return None

    lived = rejected = 0
    first = last = now
    stream = traffic(seed, today=start.date())
    times = arrival_times(referrals, start, now, rng)
    for index, (received_at, submission) in enumerate(zip(times, stream, strict=False)):
        if index == 0:
            first = received_at
        last = received_at
        lived += 1
        happen(received_at)
        document = _as_on(submission.document, received_at, index, seed)
        records.last_event = None
        await front_door.receive_submission(
            document,
            origin=front_door.Origin(
                source=f"/partners/{submission.partner_id}",
                event_id=f"history-{seed}-{index}",
                correlation_id=f"history-{seed}-{index}",
            ),
            store=records,
            now=received_at,
            front_door=doors,
        )
        answer = records.last_event
        assert answer is not None
        sink.event(answer)
        if isinstance(answer, ReferralRejected):
            rejected += 1
        elif allocation.is_for_allocation(answer):
            allocated_at = to_millisecond(
                received_at + timedelta(seconds=rng.uniform(*ALLOCATION_DELAY_S))
            )
            case_events(cases.place(answer, f"history-{seed}-{index}", allocated_at))
        if index % PUMP_EVERY == 0:
            await sink.pump()
    happen(now)
    records.finish()
    open_cases, queued = len(cases.open_cases), cases.queued()
    cases.finish()
    audits.finish(now)
    completed = sum(given.completed_at is not None for given in audits.audits.values())
    await sink.pump()
    return Lived(
        referrals=lived,
        rejected=rejected,
        cases_opened=sum(cases.opened.values()),
        cases_closed=cases.closed,
        cases_open=open_cases,
        cases_queued=queued,
        audits=len(audits.audits),
        audits_completed=completed,
        first=first,
        last=last,
    )


def _as_on(document: dict[str, Any], received_at: datetime, index: int, seed: int) -> Any:
    """The simulator's request as sent on ``received_at``: its consent given the day before,
    and an id no live simulator run will send again. Each document is the simulator's own
    new one, so it is changed in place."""
    document["submission_id"] = f"history-{seed}-{index:07d}"
    consent = document.get("consent")
    if isinstance(consent, dict) and consent.get("given_at"):
        consent["given_at"] = (received_at - timedelta(days=1)).isoformat()
    return document


# ---------------------------------------------------------------------------------------------
# Into the databases


Fold = Callable[..., Awaitable[Any]]
Job = Callable[[], Awaitable[None]]


class MongoSink:
    """Inserts in batches, one write at a time in the background, so the next documents
    are made while the database stores the last (it, not this process, is the bottleneck);
    every ``FOLD_CHUNK`` events go to reporting's bulk fold the same way."""

    def __init__(
        self, databases: Mapping[str, Database], fold: Fold | None, *, now: datetime
    ) -> None:
        self._databases = databases
        self._fold = fold
        self._now = now
        self._buffers: dict[tuple[str, str], list[Document]] = {}
        self._events: list[EventData] = []
        self._jobs: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=QUEUED_JOBS)
        self._failure: BaseException | None = None
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seconds: dict[str, float] = defaultdict(float)
        """Seconds the database spent on each service's writes."""
        self.folded = 0
        self._worker = asyncio.create_task(self._work())

    def add(self, service: str, collection: str, document: Document) -> None:
        self._buffers.setdefault((service, collection), []).append(document)
        self.counts[service, collection] += 1

    def event(self, event: EventData) -> None:
        if self._fold is not None:
            self._events.append(event)

    async def pump(self) -> None:
        await self._hand_over(INSERT_BATCH, FOLD_CHUNK)
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Write what is left and wait for every write; the first failure is raised."""
        await self._hand_over(1, 1)
        await self._jobs.put(None)
        await self._worker
        if self._failure is not None:
            raise self._failure

    async def _hand_over(self, batch: int, chunk: int) -> None:
        for (service, collection), documents in list(self._buffers.items()):
            while len(documents) >= batch:
                taken, documents = documents[:INSERT_BATCH], documents[INSERT_BATCH:]
                self._buffers[service, collection] = documents
                await self._submit(self._insert(service, collection, taken))
        while len(self._events) >= chunk:
            taken_events, self._events = self._events[:FOLD_CHUNK], self._events[FOLD_CHUNK:]
            await self._submit(self._fold_chunk(taken_events))

    def _insert(self, service: str, collection: str, documents: list[Document]) -> Job:
        async def insert() -> None:
            started = time.perf_counter()
            await self._databases[service][collection].insert_many(documents, ordered=False)
            self.seconds[service] += time.perf_counter() - started

        return insert

    def _fold_chunk(self, events: list[EventData]) -> Job:
        async def fold() -> None:
            assert self._fold is not None
            started = time.perf_counter()
            await self._fold(events, now=self._now)
            self.seconds[REPORTING] += time.perf_counter() - started
            self.folded += len(events)

        return fold

    async def _submit(self, job: Job) -> None:
        if self._failure is not None:
            raise self._failure
        await self._jobs.put(job)

    async def _work(self) -> None:
        while (job := await self._jobs.get()) is not None:
            if self._failure is None:
                try:
                    await job()
                except Exception as error:  # raised to the loader at its next hand-over
                    self._failure = error


def databases_of(prefix: str | None) -> dict[str, str]:
    """Each service's database name, as its default settings (and environment) give it."""
    settings = {
        REFERRAL: ReferralSettings(),
        ALLOCATION: AllocationSettings(),
        AUDIT: AuditSettings(),
        REPORTING: ReportingSettings(),
    }
    return {
        name: each.database_name if prefix is None else f"{prefix}{each.service_name}"
        for name, each in settings.items()
    }


def configured_match_keys() -> referral.MatchKeys:
    """The referral service's own match keys when its secret is configured, so families of
    the history are found again by the requests sent later; else keys of a fresh secret."""
    try:
        return match_keys_of(ReferralSettings())
    except SecretMissing:
        print(
            "history: no EARLYHELP_MATCH_KEY_SECRET(_FILE): families are keyed under a fresh"
            " secret, so later requests will not match them",
            file=sys.stderr,
        )
        return referral.MatchKeys(new_secret().encode())


def reporting_store(client: MongoClient, db: Database) -> MongoReportingStore:
    """Reporting's store, built as its runtime builds it."""
    settings = ReportingSettings()
    outbox = Outbox(
        db,
        source=f"/earlyhelp/{settings.service_name}",
        topic_namespace=settings.topic_namespace,
        clock=utc_now,
    )
    return MongoReportingStore(client, db, outbox)


def bulk_fold(store: MongoReportingStore) -> Fold | None:
    """Reporting's bulk fold, or None (said why) while its store has none."""
    fold: Fold | None = getattr(store, "fold_in_bulk", None)
    if fold is None:
        print(
            "history: MongoReportingStore has no fold_in_bulk yet: reporting's history is"
            " skipped, its figures will show only what happens from now on",
            file=sys.stderr,
        )
    return fold


async def ensure_indexes(client: MongoClient, databases: Mapping[str, Database]) -> None:
    """The indexes the services make at start, made once the documents are in: building an
    index over stored documents costs less than keeping it through every insert."""
    no_outbox = Outbox(databases[REFERRAL], source="/history", topic_namespace="", clock=utc_now)
    await referral_store.MongoReferralStore(client, databases[REFERRAL], no_outbox).ensure_indexes()
    await allocation_store.MongoAllocationStore(
        client, databases[ALLOCATION], no_outbox
    ).ensure_indexes()
    await audit_store.MongoAuditStore(client, databases[AUDIT], no_outbox).ensure_indexes()


async def load_history(
    mongodb_uri: str,
    *,
    referrals: int = 200_000,
    seed: int = 7,
    now: datetime,
    database_prefix: str | None = None,
    match_keys: referral.MatchKeys | None = None,
) -> dict[str, Any]:
    """Store ``referrals`` referrals of the two years before ``now`` in each service's
    database, before the services start on them; counts per service and collection and the
    seconds each stage took. The databases must be empty: ids are the services' own."""
    started = time.perf_counter()
    client = create_mongo_client(mongodb_uri, app_name="history")
    try:
        names = databases_of(database_prefix)
        databases = {service: client[name] for service, name in names.items()}
        for service, db in databases.items():
            if await db.list_collection_names():
                raise RuntimeError(
                    f"database {names[service]} is not empty: load history into a new one"
                    " (EARLYHELP_DATABASE_PREFIX)"
                )
        reporting = reporting_store(client, databases[REPORTING])
        fold = bulk_fold(reporting)
        sink = MongoSink(databases, fold, now=now)
        try:
            lived = await live_history(
                sink,
                referrals=referrals,
                seed=seed,
                now=now,
                match_keys=match_keys or configured_match_keys(),
            )
        finally:
            await sink.close()
        written = time.perf_counter()
        await ensure_indexes(client, databases)
        if fold is not None:
            await reporting.ensure_indexes()
        indexed = time.perf_counter()
    finally:
        await client.close()
    counts: dict[str, dict[str, int]] = {}
    for (service, collection), count in sorted(sink.counts.items()):
        counts.setdefault(service, {})[collection] = count
    if fold is not None:
        counts[REPORTING] = {"events_folded": sink.folded}
    return {
        "databases": names,
        "lived": {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in asdict(lived).items()
        },
        "counts": counts,
        "reporting": "folded" if fold is not None else "skipped: no fold_in_bulk",
        "seconds": {
            "writing_by_service": {
                service: round(seconds, 1) for service, seconds in sorted(sink.seconds.items())
            },
            "lived_and_written": round(written - started, 1),
            "indexes": round(indexed - written, 1),
            "total": round(indexed - started, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.history",
        description="Store two years of history in each service's database, before they start.",
    )
    parser.add_argument("--referrals", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--mongodb-uri", required=True, help="the database server the services will use"
    )
    parser.add_argument(
        "--database-prefix",
        default=None,
        help="the services' EARLYHELP_DATABASE_PREFIX (default: as the environment sets it)",
    )
    args = parser.parse_args(argv)
    summary = asyncio.run(
        load_history(
            args.mongodb_uri,
            referrals=args.referrals,
            seed=args.seed,
            now=datetime.now(UTC),
            database_prefix=args.database_prefix,
        )
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
