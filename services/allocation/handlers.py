"""Use cases of the allocation service: load the aggregates, decide by the rules, save, and
return the events.

Each runs in one unit of work. A use case that another replica overtook (the district's
version moved, or the family's case was opened meanwhile) is run again from the start by
``retrying``, and then decides on what the other replica left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.allocation import domain
from services.allocation.domain import (
    AlreadyExists,
    Band,
    BandNeeded,
    District,
    NotFound,
    QueuePlace,
    Team,
    Worker,
)
from services.allocation.ports import AllocationUnitOfWork
from shared.events import CaseAllocated, CaseClosed, CaseOutcome, EventData, ReferralReceived
from shared.unit_of_work import retrying

NewUnitOfWork = Callable[[], AllocationUnitOfWork]


@dataclass(frozen=True)
class Placed:
    """A batch's placements, and the districts left with both a free place and a queue."""

    allocations: list[CaseAllocated]
    to_allocate: set[str]


async def place_referrals(
    uow: AllocationUnitOfWork,
    referrals: Sequence[tuple[ReferralReceived, str]],
    *,
    now: datetime,
) -> Placed:
    """Place each (referral, correlation id), in order, by the rules (``domain.place_referrals``).

    Reads only what the batch touches: the families' open cases, their districts, and a
    band of a queue only when a place falls before its newest known places.
    """
    async with uow:
        families = sorted({referral.family_id for referral, _ in referrals})
        open_cases = await uow.cases.open_cases_of(families)
        district_ids = {referral.district for referral, _ in referrals}
        district_ids |= {case.district for case in open_cases.values()}
        bands: dict[tuple[str, Band], list[QueuePlace]] = {}
        wanted: set[tuple[str, Band]] = set()
        while True:
            districts = await uow.districts.get_many(sorted(district_ids))
            wanted |= domain.bands_to_read([r for r, _ in referrals], open_cases, districts)
            for district_id, band in sorted(wanted):
                if (district_id, band) not in bands:
                    bands[district_id, band] = await uow.districts.band(district_id, band)
                districts[district_id].know_band(band, bands[district_id, band])
            try:
                placement = domain.place_referrals(referrals, open_cases, districts, now)
                break
            except BandNeeded as needed:
                # The batch's own places pushed this one early: read its band and decide
                # again on freshly loaded districts.
                wanted.add((needed.district, needed.band))
        await uow.cases.add(placement.opened)
        await uow.cases.save(list(placement.joined.values()))
        changed = placement.changed_districts
        for district_id in sorted(changed):
            await uow.districts.save(districts[district_id])
        await uow.events.stage_many(placement.events)
        await uow.commit()
    return Placed(
        placement.allocations,
        {
            district_id
            for district_id in changed
            if districts[district_id].queue_length and districts[district_id].choose_worker()
        },
    )


async def allocate_queue(
    new_uow: NewUnitOfWork, district_id: str, *, now: datetime
) -> list[CaseAllocated]:
    """Give the district's queue, in order, to whoever has spare capacity there."""

    async def attempt() -> list[CaseAllocated]:
        async with new_uow() as uow:
            district = await uow.districts.get(district_id)
            if not district.queue_length or district.choose_worker() is None:
                return []
            allocations: list[domain.Allocation] = []
            while True:
                if district.needs_head():
                    district.know_front(await uow.districts.front(district))
                step = district.allocate_queue()
                if not step:
                    break
                allocations += step
            if not allocations:
                return []
            cases = await uow.cases.get_many([allocation.case_id for allocation in allocations])
            moved = [
                domain.allocated_from_queue(cases[allocation.case_id], allocation, now)
                for allocation in allocations
            ]
            await uow.cases.save([case for case, _ in moved])
            await uow.districts.save(district)
            await uow.events.stage_many(
                [(event, case.correlation_id, case.event_id) for case, event in moved]
            )
            await uow.commit()
            return [event for _, event in moved]

    return await retrying(attempt)


async def allocate_all_queues(new_uow: NewUnitOfWork, *, now: datetime) -> int:
    """Every district's queue given any free capacity; how many cases moved.

    A replica stopped between committing a closure and allocating leaves a place free beside
    a queue; this, run at start and now and then, gives that place away.
    """
    async with new_uow() as uow:
        districts = await uow.districts.with_queue()
    moved = 0
    for district_id in sorted(districts):
        moved += len(await allocate_queue(new_uow, district_id, now=now))
    return moved


# ---------------------------------------------------------------------------------------------
# Teams and workers


async def seed(
    new_uow: NewUnitOfWork, teams: Sequence[Team], workers: Sequence[Worker], *, now: datetime
) -> bool:
    """Load a county's teams and workers into an empty service; False when it has teams
    (another replica, starting at the same moment, may have loaded them first)."""

    async def attempt() -> bool:
        async with new_uow() as uow:
            if await uow.teams.any():
                return False
            districts = await uow.districts.get_many(sorted({team.district for team in teams}))
            by_id = {team.id: team for team in teams}
            for team in teams:
                await uow.teams.add(team)
            for worker in workers:
                team = by_id[worker.team_id]
                await uow.workers.add(worker)
                districts[team.district].join(
                    worker.id,
                    team.id,
                    domain.cap_of(worker, team),
                )
            for district in districts.values():
                await uow.districts.save(district)
            for team in teams:
                members = [worker for worker in workers if worker.team_id == team.id]
                await _stage_capacity(uow, team, members, districts[team.district], now, "seed")
            await uow.commit()
            return True

    try:
        return await retrying(attempt)
    except AlreadyExists:
        return False


async def create_team(
    new_uow: NewUnitOfWork, team: Team, *, now: datetime, correlation_id: str
) -> Team:
    async def attempt() -> Team:
        async with new_uow() as uow:
            await uow.teams.add(team)
            district = await uow.districts.get(team.district)
            saved = await _stage_capacity(uow, team, [], district, now, correlation_id)
            await uow.commit()
            return saved

    return await retrying(attempt)


async def change_team(
    new_uow: NewUnitOfWork,
    team_id: str,
    *,
    name: str | None,
    cap_per_fte: int | None,
    now: datetime,
    correlation_id: str,
) -> Team:
    """Rename a team or change its cap per FTE; its workers' caps follow the new figure."""

    async def attempt() -> Team:
        async with new_uow() as uow:
            team = await _team(uow, team_id)
            team = replace(
                team,
                name=name if name is not None else team.name,
                cap_per_fte=cap_per_fte if cap_per_fte is not None else team.cap_per_fte,
            )
            district = await uow.districts.get(team.district)
            members = await uow.workers.of_team(team_id)
            for worker in members:
                if worker.active:
                    district.change_cap(
                        worker.id,
                        domain.cap_of(worker, team),
                    )
            await uow.districts.save(district)
            team = await _stage_capacity(uow, team, members, district, now, correlation_id)
            await uow.commit()
            return team

    team = await retrying(attempt)
    await allocate_queue(new_uow, team.district, now=now)
    return team


async def add_worker(
    new_uow: NewUnitOfWork, worker: Worker, *, now: datetime, correlation_id: str
) -> Worker:
    """A worker joins a team; the district's queue is then allocated to their capacity."""

    async def attempt() -> Worker:
        async with new_uow() as uow:
            team = await _team(uow, worker.team_id)
            joining = replace(worker, district=team.district)
            await uow.workers.add(joining)
            district = await uow.districts.get(team.district)
            district.join(
                worker.id,
                team.id,
                domain.cap_of(worker, team),
            )
            await uow.districts.save(district)
            members = await uow.workers.of_team(team.id)
            await _stage_capacity(uow, team, members, district, now, correlation_id)
            await uow.commit()
            return joining

    joined = await retrying(attempt)
    await allocate_queue(new_uow, joined.district, now=now)
    return joined


async def change_worker(
    new_uow: NewUnitOfWork,
    worker_id: str,
    *,
    fte: float | None,
    caseload_cap: int | None,
    now: datetime,
    correlation_id: str,
) -> Worker:
    """Change a worker's FTE or own cap; more capacity allocates the district's queue."""

    async def attempt() -> Worker:
        async with new_uow() as uow:
            worker = await uow.workers.get(worker_id)
            if worker is None or not worker.active:
                raise NotFound(f"no current worker {worker_id}")
            team = await _team(uow, worker.team_id)
            worker = replace(
                worker,
                fte=fte if fte is not None else worker.fte,
                cap_override=caseload_cap if caseload_cap is not None else worker.cap_override,
            )
            district = await uow.districts.get(team.district)
            district.change_cap(worker.id, domain.cap_of(worker, team))
            await uow.workers.save(worker)
            await uow.districts.save(district)
            members = await uow.workers.of_team(team.id)
            await _stage_capacity(uow, team, members, district, now, correlation_id)
            await uow.commit()
            return worker

    changed = await retrying(attempt)
    await allocate_queue(new_uow, changed.district, now=now)
    return changed


async def worker_leaves(
    new_uow: NewUnitOfWork, worker_id: str, *, now: datetime, correlation_id: str
) -> list[CaseAllocated]:
    """A worker leaves: their open cases are reallocated by the usual rules, or queued.

    Safe to repeat: asking again for a leaver moves whatever they still hold.
    """

    async def attempt() -> tuple[Worker, list[CaseAllocated]]:
        async with new_uow() as uow:
            worker = await uow.workers.get(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id}")
            district = await uow.districts.get(worker.district)
            cases = await uow.cases.open_cases_held_by(worker_id)
            moved = domain.worker_leaves(district, worker_id, cases, now)
            if worker.active:
                worker = replace(worker, active=False, left_at=now)
                await uow.workers.save(worker)
                team = await _team(uow, worker.team_id)
                members = await uow.workers.of_team(team.id)
                await _stage_capacity(uow, team, members, district, now, correlation_id)
            await uow.cases.save([case for case, _ in moved])
            await uow.districts.save(district)
            await uow.events.stage_many(
                [(event, case.correlation_id, case.event_id) for case, event in moved]
            )
            await uow.commit()
            return worker, [event for _, event in moved]

    worker, events = await retrying(attempt)
    await allocate_queue(new_uow, worker.district, now=now)
    return events


# ---------------------------------------------------------------------------------------------
# Cases


async def close_case(
    new_uow: NewUnitOfWork, case_id: str, outcome: CaseOutcome, *, now: datetime
) -> CaseClosed:
    """Close an open case with its outcome; the place it frees goes to the queue."""

    async def attempt() -> CaseClosed:
        async with new_uow() as uow:
            case = await uow.cases.get(case_id)
            if case is None:
                raise NotFound(f"no case {case_id}")
            closed, event = domain.close_case(case, outcome, now)
            district = await uow.districts.get(case.district)
            domain.release(district, case)
            await uow.cases.save([closed])
            await uow.districts.save(district)
            await uow.events.stage(
                event, correlation_id=case.correlation_id, event_id=f"{case_id}.closed"
            )
            await uow.commit()
            return event

    closed = await retrying(attempt)
    await allocate_queue(new_uow, closed.district, now=now)
    return closed


async def _team(uow: AllocationUnitOfWork, team_id: str) -> Team:
    team = await uow.teams.get(team_id)
    if team is None:
        raise NotFound(f"no team {team_id}")
    return team


async def _stage_capacity(
    uow: AllocationUnitOfWork,
    team: Team,
    members: Sequence[Worker],
    district: District,
    now: datetime,
    correlation_id: str,
) -> Team:
    """Stage ``team-capacity-changed`` under the team's next capacity version."""
    team = replace(team, capacity_version=team.capacity_version + 1)
    await uow.teams.save(team)
    event: EventData = domain.team_capacity(team, members, district, now)
    await uow.events.stage(
        event,
        correlation_id=correlation_id,
        event_id=f"{team.id}.capacity.{team.capacity_version}",
    )
    return team
