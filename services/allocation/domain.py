"""Allocation rules: pure functions and one aggregate over typed values, no I/O and no clock.

The rules are tried in order: a family with an open case keeps it and its worker; a
step-down from Children's Social Care comes next, with priority in the queue; then a family
open to social care, co-worked; then everyone else. A new case goes to the worker with the
most spare capacity among the teams serving the family's district, or waits in that
district's queue, behind everyone already waiting.

A ``District`` is the aggregate that guards the caps and the queue: it holds its workers'
loads, the queue's order (its head, and each band's count and newest places) and a version.
The store saves it under an optimistic check of that version, so two replicas deciding
on one district at once cannot both win.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.events import (
    AllocationKind,
    AllocationStatus,
    CaseAllocated,
    CaseClosed,
    CaseOutcome,
    LevelOfNeed,
    ReferralReceived,
    ScreeningDecision,
    TeamCapacityChanged,
)

DEFAULT_CAP_PER_FTE = 18
"""Families a full-time lead practitioner holds, unless their team or they are set otherwise."""

HEAD_SIZE = 64
"""Queued places a district keeps at hand in order: the next cases to allocate."""

BAND_WINDOW = 64
"""Newest places a district keeps of each band: a referral that arrives a little out of order
(another partition, a later batch) still finds its exact place without reading the band."""


class AllocationError(Exception):
    """A request the allocation rules refuse, with a message for the person who made it."""


class NotFound(AllocationError, LookupError):
    pass


class AlreadyExists(AllocationError):
    pass


class CaseNotOpen(AllocationError):
    pass


def is_for_allocation(referral: ReferralReceived) -> bool:
    """Only Early Help referrals get a case: signposting and step-ups leave the service."""
    return referral.decision is ScreeningDecision.EARLY_HELP


def new_case_kind(referral: ReferralReceived) -> AllocationKind:
    """The rule that places a family without an open case (rule 1 is ``place_referrals``)."""
    if referral.is_step_down:
        return AllocationKind.STEP_DOWN
    if referral.open_to_social_care:
        return AllocationKind.CO_WORKING
    return AllocationKind.STANDARD


def case_id_for(referral_id: str) -> str:
    """Deterministic, so a redelivered referral cannot open a second case."""
    return "case-" + hashlib.sha256(referral_id.encode()).hexdigest()[:20]


def caseload_cap(fte: float, cap_per_fte: int, cap_override: int | None = None) -> int:
    """Families a worker may hold: their own cap when set, else their FTE share of the team's.

    Rounded down, so a part-timer is never given more than their share.
    """
    if cap_override is not None:
        return cap_override
    return math.floor(fte * cap_per_fte + 1e-9)


def seconds_between(start: datetime, end: datetime) -> float:
    """Time to allocation, never negative when clocks disagree slightly."""
    return max(0.0, (end - start).total_seconds())


def to_millisecond(at: datetime) -> datetime:
    """``at`` as the database keeps it, so places compare alike before and after a save."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


# ---------------------------------------------------------------------------------------------
# The queue's order, defined here once


Band = tuple[int, int]
"""(priority, need rank): every place in a band goes before every place in a later band."""


@dataclass(frozen=True, order=True)
class QueuePlace:
    """Where a queued case stands: step-downs first, then higher need, then the oldest.

    Ordering the dataclass orders the queue; the case id makes the order total, so every
    replica drains the same queue in the same order.
    """

    priority: int
    need_rank: int
    referral_received_at: datetime
    case_id: str

    @property
    def band(self) -> Band:
        return (self.priority, self.need_rank)


def queue_priority(kind: AllocationKind) -> int:
    """0 for a step-down (allocated with priority), 1 for every other case."""
    return 0 if kind is AllocationKind.STEP_DOWN else 1


def place_of(case: Case) -> QueuePlace:
    return QueuePlace(
        queue_priority(case.kind),
        -int(case.level_of_need),
        to_millisecond(case.referral_received_at),
        case.id,
    )


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """A family's case: who holds it, or that it waits, and every referral it carries."""

    id: str
    family_id: str
    district: str
    kind: AllocationKind
    level_of_need: LevelOfNeed
    referral_received_at: datetime
    opening_referral_id: str
    referral_ids: tuple[str, ...]
    correlation_id: str
    opened_at: datetime
    social_care_case_reference: str | None = None
    team_id: str | None = None
    worker_id: str | None = None
    allocation: AllocationStatus = AllocationStatus.QUEUED
    allocated_at: datetime | None = None
    open: bool = True
    outcome: CaseOutcome | None = None
    closed_at: datetime | None = None
    version: int = 0
    """Moves with each change, so each of the case's events has its own stable id."""

    @property
    def event_id(self) -> str:
        return f"{self.id}.{self.version}"


def _opened(
    referral: ReferralReceived, kind: AllocationKind, correlation_id: str, now: datetime
) -> Case:
    return Case(
        id=case_id_for(referral.referral_id),
        family_id=referral.family_id,
        district=referral.district,
        kind=kind,
        level_of_need=referral.level_of_need,
        referral_received_at=referral.received_at,
        opening_referral_id=referral.referral_id,
        referral_ids=(referral.referral_id,),
        correlation_id=correlation_id,
        opened_at=now,
        social_care_case_reference=referral.social_care_case_reference,
    )


def case_allocated(
    case: Case,
    *,
    referral_id: str,
    kind: AllocationKind,
    now: datetime,
    queue_position: int | None = None,
    reallocated_from_worker_id: str | None = None,
) -> CaseAllocated:
    """What ``case-allocated`` says of the case as it now stands."""
    allocated = case.allocation is AllocationStatus.ALLOCATED
    return CaseAllocated(
        case_id=case.id,
        family_id=case.family_id,
        referral_id=referral_id,
        district=case.district,
        team_id=case.team_id,
        worker_id=case.worker_id,
        status=case.allocation,
        kind=kind,
        level_of_need=case.level_of_need,
        social_care_case_reference=case.social_care_case_reference,
        referral_received_at=case.referral_received_at,
        allocated_at=now,
        queue_position=queue_position,
        time_to_allocation_seconds=(
            seconds_between(case.referral_received_at, now) if allocated else None
        ),
        reallocated_from_worker_id=reallocated_from_worker_id,
    )


def close_case(case: Case, outcome: CaseOutcome, now: datetime) -> tuple[Case, CaseClosed]:
    """The case closed with its outcome, and ``case-closed``; refused when already closed."""
    if not case.open:
        raise CaseNotOpen(f"case {case.id} is already closed")
    closed = replace(case, open=False, outcome=outcome, closed_at=now)
    return closed, CaseClosed(
        case_id=case.id,
        family_id=case.family_id,
        district=case.district,
        team_id=case.team_id,
        worker_id=case.worker_id,
        outcome=outcome,
        closed_at=now,
    )


# ---------------------------------------------------------------------------------------------
# Teams and workers


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    district: str
    cap_per_fte: int
    capacity_version: int = 0
    """Moves with each capacity change, so each ``team-capacity-changed`` has its own id."""


@dataclass(frozen=True)
class Worker:
    """A lead practitioner's record; their load lives in their district's aggregate."""

    id: str
    name: str
    team_id: str
    district: str
    fte: float
    cap_override: int | None
    active: bool
    joined_at: datetime
    left_at: datetime | None = None


def cap_of(worker: Worker, team: Team) -> int:
    """The worker's cap in their team: their own, or their FTE share of the team's figure."""
    return caseload_cap(worker.fte, team.cap_per_fte, worker.cap_override)


def team_capacity(
    team: Team, members: Sequence[Worker], district: District, now: datetime
) -> TeamCapacityChanged:
    """What ``team-capacity-changed`` says: the team's current workers, FTE and caps."""
    current = [worker for worker in members if worker.active and worker.team_id == team.id]
    loads = district.workers
    return TeamCapacityChanged(
        team_id=team.id,
        team_name=team.name,
        district=team.district,
        workers=len(current),
        fte=round(sum(worker.fte for worker in current), 2),
        capacity=sum(loads[worker.id].cap for worker in current if worker.id in loads),
        changed_at=now,
    )


# ---------------------------------------------------------------------------------------------
# The district aggregate


@dataclass
class WorkerLoad:
    """A worker as allocation sees them: their team, cap and the families they hold."""

    id: str
    team_id: str
    cap: int
    open_cases: int = 0
    active: bool = True

    @property
    def spare(self) -> int:
        """Places left; below zero after a cap cut under the caseload, until cases close."""
        return self.cap - self.open_cases if self.active else 0


@dataclass
class BandState:
    """A band's length and its newest places, in order (all of them when it is short)."""

    count: int = 0
    newest: list[QueuePlace] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.newest) == self.count


class BandNeeded(Exception):
    """The place falls before the band's newest known places: the band must be read whole.

    Raised before the aggregate changes anything, so the caller reads the band, hands it to
    ``District.know_band`` and asks again.
    """

    def __init__(self, district: str, band: Band) -> None:
        super().__init__(f"{district} band {band}")
        self.district = district
        self.band = band


@dataclass(frozen=True)
class Allocation:
    """A queued case given to a worker by ``District.allocate_queue``."""

    case_id: str
    worker_id: str
    team_id: str


@dataclass
class District:
    """One district's workers and queue: the unit whose rules hold together.

    The queue is kept without holding it whole: ``head`` is its first places in order
    (the whole queue while it is short), and each band keeps its count and its newest
    places, so a new place's position is found from the counts. ``added`` and ``removed``
    are the queue's entries to save; the rest is saved with the version.
    """

    id: str
    workers: dict[str, WorkerLoad] = field(default_factory=dict)
    bands: dict[Band, BandState] = field(default_factory=dict)
    head: list[QueuePlace] = field(default_factory=list)
    version: int = 0
    added: dict[str, QueuePlace] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    _whole_bands: dict[Band, list[QueuePlace]] = field(default_factory=dict)

    @property
    def queue_length(self) -> int:
        return sum(band.count for band in self.bands.values())

    @property
    def head_is_whole_queue(self) -> bool:
        return len(self.head) == self.queue_length

    def needs_head(self) -> bool:
        """Whether a worker has a place but the known head is empty while cases wait."""
        return not self.head and self.queue_length > 0 and self.choose_worker() is not None

    # -- workers

    def choose_worker(self) -> WorkerLoad | None:
        """The worker with the most spare capacity, then the lowest id; None when all full."""
        best: WorkerLoad | None = None
        for worker in self.workers.values():
            if worker.spare > 0 and (
                best is None or (-worker.spare, worker.id) < (-best.spare, best.id)
            ):
                best = worker
        return best

    def join(self, worker_id: str, team_id: str, cap: int) -> None:
        if worker_id in self.workers:
            raise AlreadyExists(f"worker {worker_id} already exists")
        self.workers[worker_id] = WorkerLoad(worker_id, team_id, cap)

    def change_cap(self, worker_id: str, cap: int) -> None:
        """A new cap keeps the places taken: a cut below the caseload just takes no new case."""
        self._worker(worker_id).cap = cap

    def _worker(self, worker_id: str) -> WorkerLoad:
        worker = self.workers.get(worker_id)
        if worker is None or not worker.active:
            raise NotFound(f"no current worker {worker_id}")
        return worker

    def take_place(self, worker: WorkerLoad) -> None:
        worker.open_cases += 1

    def free_place(self, worker_id: str) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.open_cases = max(0, worker.open_cases - 1)

    # -- the queue

    def know_band(self, band: Band, places: Iterable[QueuePlace]) -> None:
        """The band as read whole from the store (with what this unit of work changed)."""
        stored = (
            p for p in places if p.case_id not in self.removed and p.case_id not in self.added
        )
        whole = sorted({*stored, *(p for p in self.added.values() if p.band == band)})
        self._whole_bands[band] = whole
        state = self.bands.setdefault(band, BandState())
        state.count, state.newest = len(whole), whole[-BAND_WINDOW:]
        if not whole:
            del self.bands[band]

    def know_front(self, places: Iterable[QueuePlace]) -> None:
        """The queue's first places as read from the store, to refill an emptied head."""
        self.head = sorted(p for p in places if p.case_id not in self.removed)[:HEAD_SIZE]

    def position_of(self, place: QueuePlace) -> int:
        """A place's position, 1 for next, whether or not it is queued yet.

        Told by the head when the place is within it, else by the counts of the bands
        ahead and the band's newest places; raises ``BandNeeded`` when the place is older
        than those and the band has not been read whole.
        """
        if self.head_is_whole_queue or (self.head and place <= self.head[-1]):
            return bisect_left(self.head, place) + 1
        ahead = sum(state.count for band, state in self.bands.items() if band < place.band)
        state = self.bands.get(place.band, BandState())
        whole = self._whole_bands.get(place.band)
        if whole is not None:
            return ahead + bisect_left(whole, place) + 1
        if state.complete or (state.newest and place >= state.newest[0]):
            newer = len(state.newest) - bisect_left(state.newest, place)
            return ahead + state.count - newer + 1
        raise BandNeeded(self.id, place.band)

    def enqueue(self, place: QueuePlace) -> int:
        """Queue a case in its place; its position, 1 for next. Raises ``BandNeeded``, having
        changed nothing, when the position cannot be told from what is known."""
        position = self.position_of(place)
        state = self.bands.setdefault(place.band, BandState())
        if state.complete or (state.newest and place > state.newest[0]):
            insort(state.newest, place)
            del state.newest[: max(0, len(state.newest) - BAND_WINDOW)]
        state.count += 1
        whole = self._whole_bands.get(place.band)
        if whole is not None:
            insort(whole, place)
        if position <= len(self.head) + 1:
            # The head is the queue's first places: one at the head's end or before it
            # belongs there, and the head stays its first HEAD_SIZE.
            self.head.insert(position - 1, place)
            del self.head[HEAD_SIZE:]
        # A case taken out and queued again in one unit of work (its place moved) stays in
        # ``removed`` too, so the store replaces its entry rather than adding a second.
        self.added[place.case_id] = place
        return position

    def dequeue(self, place: QueuePlace) -> None:
        """Take a case out of the queue (allocated, closed or moved)."""
        state = self.bands.get(place.band)
        if state is None or state.count == 0:
            return
        state.count -= 1
        if place in state.newest:
            state.newest.remove(place)
        if place in self.head:
            self.head.remove(place)
        whole = self._whole_bands.get(place.band)
        if whole is not None and place in whole:
            whole.remove(place)
        if state.count == 0:
            del self.bands[place.band]
        if self.added.pop(place.case_id, None) is None:
            self.removed.add(place.case_id)

    def allocate_queue(self) -> list[Allocation]:
        """Give the head of the queue, in order, to whoever has spare capacity.

        Stops when nobody has a place or the known head runs out (``needs_head`` then says
        whether the store should read the next places and ask again).
        """
        allocations: list[Allocation] = []
        while self.head:
            worker = self.choose_worker()
            if worker is None:
                break
            place = self.head[0]
            self.dequeue(place)
            self.take_place(worker)
            allocations.append(Allocation(place.case_id, worker.id, worker.team_id))
        return allocations


# ---------------------------------------------------------------------------------------------
# Placing referrals


@dataclass
class Placement:
    """What placing a batch of referrals decided: cases opened, cases joined, events."""

    opened: list[Case] = field(default_factory=list)
    joined: dict[str, Case] = field(default_factory=dict)
    events: list[tuple[CaseAllocated, str, str]] = field(default_factory=list)
    """(event, correlation id, event id) in the order they were decided."""
    changed_districts: set[str] = field(default_factory=set)
    """Districts whose workers or queue changed: those to save."""

    @property
    def allocations(self) -> list[CaseAllocated]:
        return [event for event, _, _ in self.events]


def bands_to_read(
    referrals: Sequence[ReferralReceived],
    open_cases: Mapping[str, Case],
    districts: Mapping[str, District],
) -> set[tuple[str, Band]]:
    """Bands a batch may need whole: where a new place falls before the newest known ones.

    Reading them before deciding keeps the decision in one pass; a place that only becomes
    early once the batch's own places are counted still raises ``BandNeeded``.
    """
    needed: set[tuple[str, Band]] = set()
    for referral in referrals:
        case = open_cases.get(referral.family_id)
        if case is None:
            place = QueuePlace(
                queue_priority(new_case_kind(referral)),
                -int(referral.level_of_need),
                to_millisecond(referral.received_at),
                case_id_for(referral.referral_id),
            )
            district = districts[referral.district]
        elif case.allocation is AllocationStatus.QUEUED:
            place, district = place_of(with_need_of(case, referral)), districts[case.district]
        else:
            continue
        state = district.bands.get(place.band)
        if state is not None and not state.complete and state.newest and place < state.newest[0]:
            needed.add((district.id, place.band))
    return needed


def with_need_of(case: Case, referral: ReferralReceived) -> Case:
    """A case's level of need is the highest its referrals gave.

    A referral showing more need than the case was opened with raises it (and moves a
    waiting case up the queue); one showing less lowers nothing. So the level does not
    depend on which of a family's referrals happened to arrive first.
    """
    if referral.level_of_need > case.level_of_need:
        return replace(case, level_of_need=referral.level_of_need)
    return case


def place_referrals(
    referrals: Sequence[tuple[ReferralReceived, str]],
    open_cases: Mapping[str, Case],
    districts: Mapping[str, District],
    now: datetime,
) -> Placement:
    """Each (referral, correlation id) placed in order, as if one at a time.

    Rule 1: a family with an open case keeps it (and its worker, or its place in the queue,
    raised when the referral shows more need: ``with_need_of``). Otherwise a new case goes
    to the district's worker with the most spare capacity, unless cases wait there already:
    nobody jumps the queue. A later referral sees what an earlier
    one did. ``districts`` holds every district named by a referral or an open case.
    Raises ``BandNeeded`` (see ``bands_to_read``) before deciding anything it cannot tell.
    """
    cases = dict(open_cases)
    opened: set[str] = set()
    moved: set[str] = set()
    touched: dict[str, Case] = {}
    events: list[tuple[CaseAllocated, str, str]] = []
    for referral, correlation_id in referrals:
        case = cases.get(referral.family_id)
        position: int | None = None
        if case is not None:
            kind = AllocationKind.EXISTING_CASE
            if referral.referral_id not in case.referral_ids:
                case = replace(case, referral_ids=(*case.referral_ids, referral.referral_id))
            joined = replace(with_need_of(case, referral), version=case.version + 1)
            if case.allocation is AllocationStatus.QUEUED:
                district = districts[case.district]
                position = district.position_of(place_of(joined))
                if place_of(joined) != place_of(case):
                    district.dequeue(place_of(case))
                    position = district.enqueue(place_of(joined))
                    moved.add(case.district)
            case = joined
        else:
            kind = new_case_kind(referral)
            district = districts[referral.district]
            case = _opened(referral, kind, correlation_id, now)
            worker = None if district.queue_length else district.choose_worker()
            if worker is None:
                position = district.enqueue(place_of(case))
            else:
                district.take_place(worker)
                case = replace(
                    case,
                    allocation=AllocationStatus.ALLOCATED,
                    worker_id=worker.id,
                    team_id=worker.team_id,
                    allocated_at=now,
                )
            opened.add(case.id)
        cases[referral.family_id] = touched[case.id] = case
        event = case_allocated(
            case, referral_id=referral.referral_id, kind=kind, now=now, queue_position=position
        )
        events.append((event, correlation_id, case.event_id))
    opened_cases = [case for case_id, case in touched.items() if case_id in opened]
    return Placement(
        opened=opened_cases,
        joined={case_id: case for case_id, case in touched.items() if case_id not in opened},
        events=events,
        changed_districts=moved | {case.district for case in opened_cases},
    )


def allocated_from_queue(
    case: Case, allocation: Allocation, now: datetime
) -> tuple[Case, CaseAllocated]:
    """A queued case given its worker, and the event that says so."""
    case = replace(
        case,
        allocation=AllocationStatus.ALLOCATED,
        worker_id=allocation.worker_id,
        team_id=allocation.team_id,
        allocated_at=now,
        version=case.version + 1,
    )
    return case, case_allocated(case, referral_id=case.opening_referral_id, kind=case.kind, now=now)


def release(district: District, case: Case) -> None:
    """An open case stops taking its place: its worker's place frees, or it leaves the queue."""
    if case.allocation is AllocationStatus.QUEUED:
        district.dequeue(place_of(case))
    elif case.worker_id is not None:
        district.free_place(case.worker_id)


def worker_leaves(
    district: District, worker_id: str, cases: Sequence[Case], now: datetime
) -> list[tuple[Case, CaseAllocated]]:
    """A worker leaves: each of their open cases goes to the worker with the most spare
    capacity, or back to the queue in its place. Safe to repeat: a leaver holds no cases."""
    leaver = district.workers.get(worker_id)
    if leaver is None:
        raise NotFound(f"no worker {worker_id}")
    leaver.active = False
    moved: list[tuple[Case, CaseAllocated]] = []
    for case in sorted(cases, key=lambda case: case.id):
        if not case.open or case.worker_id != worker_id:
            continue
        district.free_place(worker_id)
        worker = district.choose_worker()
        if worker is None:
            case = replace(
                case,
                allocation=AllocationStatus.QUEUED,
                worker_id=None,
                team_id=None,
                version=case.version + 1,
            )
            position: int | None = district.enqueue(place_of(case))
        else:
            district.take_place(worker)
            case = replace(
                case,
                worker_id=worker.id,
                team_id=worker.team_id,
                allocated_at=now,
                version=case.version + 1,
            )
            position = None
        event = case_allocated(
            case,
            referral_id=case.opening_referral_id,
            kind=case.kind,
            now=now,
            queue_position=position,
            reallocated_from_worker_id=worker_id,
        )
        moved.append((case, event))
    leaver.open_cases = 0
    return moved
