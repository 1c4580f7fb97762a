"""Use cases of the audit service: keep the register of auditors and the case population,
draw a month's audits, complete one, report compliance.

Each one opens the unit of work it is given, loads, decides with the rules of ``domain``,
saves and commits; it raises the domain's refusals, which the HTTP edge maps to statuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.audit import domain
from services.audit.domain import (
    AlreadyCompleted,
    AuditNotFound,
    Auditor,
    AuditorExists,
    AuditorNotFound,
    AuditStatus,
    CaseState,
    DrawPolicy,
    DrawRecord,
    DrawRound,
    Submission,
)
from services.audit.ports import AuditNotOpen, AuditPlace, AuditUnitOfWork
from shared.events import CaseAllocated, CaseClosed
from shared.months import month_end
from shared.unit_of_work import retrying

# ---------------------------------------------------------------------------------------------
# The case population


async def project_case_events(
    events: Sequence[CaseAllocated | CaseClosed], *, uow: AuditUnitOfWork
) -> list[CaseState]:
    """Apply allocations and closures, in order, with one read and one write of the cases;
    the state each event left its case in.

    A consumer hands in a unit of work joined to its own transaction, which also records
    the events as processed, so a redelivered event changes nothing.
    """
    async with uow:
        cases = await uow.cases.get_many({event.case_id for event in events})
        after = []
        for event in events:
            cases[event.case_id] = domain.apply_case_event(cases.get(event.case_id), event)
            after.append(cases[event.case_id])
        await uow.cases.save_many([cases[case_id] for case_id in sorted(cases)])
        await uow.commit()
    return after


# ---------------------------------------------------------------------------------------------
# The register of auditors


async def list_auditors(
    *, uow: AuditUnitOfWork, active: bool | None = None, district: str | None = None
) -> list[Auditor]:
    async with uow:
        return [
            auditor
            for auditor in await uow.auditors.all()
            if (active is None or auditor.active == active)
            and (district is None or auditor.district == district)
        ]


async def get_auditor(auditor_id: str, *, uow: AuditUnitOfWork) -> Auditor:
    async with uow:
        return await _known_auditor(uow, auditor_id)


async def count_auditors(*, uow: AuditUnitOfWork) -> int:
    async with uow:
        return await uow.auditors.count()


async def add_auditor(auditor: Auditor, *, uow: AuditUnitOfWork, now: datetime) -> Auditor:
    domain.check_auditor(auditor)
    async with uow:
        if not await uow.auditors.add(auditor, now=now):
            raise AuditorExists(auditor.id)
        await uow.commit()
    return auditor


async def change_auditor(
    auditor_id: str, given: Mapping[str, Any], *, uow: AuditUnitOfWork, now: datetime
) -> Auditor:
    """Change only the ``given`` fields; the auditor must still be a valid one after."""
    async with uow:
        changed = domain.change_auditor(await _known_auditor(uow, auditor_id), given)
        await uow.auditors.save(changed, now=now)
        await uow.commit()
    return changed


async def deactivate_auditor(auditor_id: str, *, uow: AuditUnitOfWork, now: datetime) -> Auditor:
    """The record and their audits are kept; they are drawn no new audits."""
    async with uow:
        auditor = replace(await _known_auditor(uow, auditor_id), active=False)
        await uow.auditors.save(auditor, now=now)
        await uow.commit()
    return auditor


async def seed_auditors(auditors: Sequence[Auditor], *, uow: AuditUnitOfWork, now: datetime) -> int:
    """Add ``auditors`` only to an empty register, so edits survive a restart; how many."""

    async def attempt() -> int:
        async with uow:
            if await uow.auditors.count():
                return 0
            added = 0
            for auditor in auditors:
                added += await uow.auditors.add(auditor, now=now)
            await uow.commit()
        return added

    return await retrying(attempt)


async def _known_auditor(uow: AuditUnitOfWork, auditor_id: str) -> Auditor:
    found = await uow.auditors.get(auditor_id)
    if found is None:
        raise AuditorNotFound(auditor_id)
    return found


# ---------------------------------------------------------------------------------------------
# Draws


async def draw_month(
    month: str,
    *,
    uow: AuditUnitOfWork,
    now: datetime,
    policy: DrawPolicy,
    requested_seed: int | None,
    fresh_seed: int,
) -> DrawRecord:
    """Assign every active auditor what they still owe for ``month``.

    Reading the inputs, storing the new audits with their ``audit-assigned`` events and
    recording the round commit together. Two draws of one month at once both write the
    month's record, so one of them fails to commit and is run again on what the other
    assigned: they can never both assign.
    """

    async def attempt() -> DrawRecord:
        async with uow:
            recorded = await uow.draws.get(month)
            auditors = await uow.auditors.all()
            population = await uow.cases.allocated_before(month_end(month))
            seed = domain.draw_seed(
                requested_seed, None if recorded is None else recorded.seed, fresh_seed
            )
            outcome = domain.draw_audits(
                month=month,
                seed=seed,
                owed=domain.still_owed(
                    auditors,
                    await uow.audits.assigned_per_auditor(month),
                    policy.audits_per_month,
                ),
                population=population,
                recently_drawn=await uow.audits.cases_drawn(domain.no_repeat_window(month)),
                closed_within_months=policy.closed_within_months,
            )
            by_id = {auditor.id: auditor for auditor in auditors}
            cases = {case.case_id: case for case in population}
            assigned = [
                domain.assign_audit(
                    by_id[assignment.auditor_id],
                    cases[assignment.case_id],
                    month=month,
                    seed=seed,
                    now=now,
                )
                for assignment in outcome.assignments
            ]
            await uow.audits.add([audit for audit, _ in assigned])
            for audit, event in assigned:
                await uow.events.stage(
                    event, correlation_id=f"draw-{month}", event_id=f"{audit.id}.assigned"
                )
            drawn = await uow.draws.add_round(
                month,
                DrawRound(seed=seed, at=now, assigned=len(assigned), unfilled=outcome.unfilled),
            )
            await uow.commit()
        return replace(
            drawn,
            new_audit_ids=[audit.id for audit, _ in assigned],
            first_round=recorded is None,
        )

    return await retrying(attempt)


async def draw_current_month_if_due(
    *, uow: AuditUnitOfWork, now: datetime, policy: DrawPolicy, fresh_seed: int
) -> DrawRecord | None:
    """At the start of a month (or of the service), draw the month unless it was drawn."""
    month = domain.audit_month(now)
    async with uow:
        drawn = await uow.draws.get(month)
    if drawn is not None:
        return None
    return await draw_month(
        month, uow=uow, now=now, policy=policy, requested_seed=None, fresh_seed=fresh_seed
    )


async def list_draws(*, uow: AuditUnitOfWork) -> list[DrawRecord]:
    async with uow:
        return await uow.draws.newest_first()


# ---------------------------------------------------------------------------------------------
# Audits


async def find_audits(
    *,
    uow: AuditUnitOfWork,
    now: datetime,
    month: str | None,
    auditor_id: str | None,
    status: AuditStatus | None,
    limit: int,
    after: AuditPlace | None = None,
) -> tuple[list[domain.AuditAsOf], AuditPlace | None]:
    """A page of audits as they stand at ``now``, and where the next page starts."""
    async with uow:
        found, following = await uow.audits.find(
            month=month, auditor_id=auditor_id, status=status, now=now, limit=limit, after=after
        )
    return [domain.as_of(audit, now) for audit in found], following


async def get_audit(audit_id: str, *, uow: AuditUnitOfWork, now: datetime) -> domain.AuditAsOf:
    async with uow:
        found = await uow.audits.get(audit_id)
    if found is None:
        raise AuditNotFound(audit_id)
    return domain.as_of(found, now)


async def submit_audit(
    audit_id: str,
    submission: Submission,
    *,
    claimed_auditor_id: str | None,
    auditor_id: str | None,
    uow: AuditUnitOfWork,
    now: datetime,
    correlation_id: str,
) -> domain.AuditAsOf:
    """Complete an assigned audit: only its auditor (``auditor_id``, who is signed in, and
    ``claimed_auditor_id`` when the submission names one), only once, every standard graded.

    Storing the grades and staging ``audit-completed`` commit together, and the event's id
    is derived from the audit, so it can never be published for it twice.
    """
    domain.check_claimed_auditor(claimed_auditor_id, auditor_id)

    async def attempt() -> domain.AuditAsOf:
        async with uow:
            audit = await uow.audits.get(audit_id)
            if audit is None:
                raise AuditNotFound(audit_id)
            completed, event = domain.complete_audit(
                audit, submission, auditor_id=auditor_id, now=now
            )
            try:
                await uow.audits.complete(completed)
            except AuditNotOpen:
                raise AlreadyCompleted(audit_id) from None
            await uow.events.stage(
                event, correlation_id=correlation_id, event_id=f"{audit_id}.completed"
            )
            # Read back as stored (to the millisecond), so the answer is what a GET shows.
            stored = await uow.audits.get(audit_id)
            assert stored is not None
            await uow.commit()
        return domain.as_of(stored, now)

    return await retrying(attempt)


@dataclass(frozen=True)
class MonthCompliance:
    """A month's compliance figures, at a time, with the auditors its rows name."""

    as_of: datetime
    figures: domain.Compliance
    auditors: dict[str, Auditor]


async def month_compliance(
    month: str, *, uow: AuditUnitOfWork, now: datetime, policy: DrawPolicy
) -> MonthCompliance:
    async with uow:
        audits = await uow.audits.of_month(month)
        auditors = await uow.auditors.all()
    figures = domain.compliance(
        month,
        auditors,
        [audit.record for audit in audits],
        now=now,
        default_per_month=policy.audits_per_month,
    )
    return MonthCompliance(
        as_of=now, figures=figures, auditors={auditor.id: auditor for auditor in auditors}
    )
