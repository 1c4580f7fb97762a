"""Use cases of the reporting service: project the events, publish due snapshots, answer
the reports, and rebuild the read models from the retained events.

Each takes its ports and the time; none touches Kafka, Mongo or the clock itself, so the
edges (``app.py``, ``rebuild.py``) decide where events come from and what time it is.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol

from services.reporting import domain
from services.reporting.ports import (
    DueSnapshot,
    ReadModels,
    ReadModelStore,
    ReportingUnitOfWork,
    Snapshots,
)
from shared.events import (
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    MonthlyReport,
    PerformanceSnapshot,
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
)
from shared.months import EARLIEST, months_ending
from shared.unit_of_work import retrying

PROJECTED: tuple[type[EventData], ...] = (
    ReferralReceived,
    ReferralRejected,
    CaseAllocated,
    CaseClosed,
    TeamCapacityChanged,
    AuditAssigned,
    AuditCompleted,
)
"""The events the read models are projected from: the service consumes these topics."""

Decoded = tuple[RawEvent, EventData]
"""An event as delivered (for its id) and its validated data."""


# ---------------------------------------------------------------------------------------------
# Projection


async def project_events(
    events: Sequence[EventData], *, uow: ReportingUnitOfWork, now: datetime
) -> int:
    """Record the facts the events state and count the changes for the snapshots, together;
    how many of the events changed a fact."""
    async with uow:
        changed = await uow.projections.project(events, now=now)
        await uow.commit()
    return changed


async def project_new_events(
    batch: Sequence[Decoded], *, unit_of_work: Callable[[], ReportingUnitOfWork], now: datetime
) -> int:
    """Apply ``batch`` in one transaction, tried again when another changed one of its facts
    first; how many of its events were new. An event applied before changes no fact, so it
    counts for nothing and adds nothing."""
    events = [data for _, data in batch]
    return await retrying(lambda: project_events(events, uow=unit_of_work(), now=now))


# ---------------------------------------------------------------------------------------------
# Performance snapshots


async def publish_due_snapshots(
    *,
    snapshots: Snapshots,
    read_models: ReadModels,
    unit_of_work: Callable[[], ReportingUnitOfWork],
    interval_s: float,
    now: datetime,
) -> int:
    """Stage a ``performance-snapshot`` for each changed month/district that is due; how many.

    The changes are counted (in ``due``) before the figures are computed: an event projected
    meanwhile counts one more, so it is in this snapshot or the next, never lost. Each
    snapshot is claimed and staged in its own transaction, so replicas racing for one publish
    it once.
    """
    published = 0
    for due in await snapshots.due(interval_s, now=now):
        stage = partial(_publish_snapshot, due, read_models=read_models, uow=unit_of_work, now=now)
        published += await retrying(stage)
    return published


async def _publish_snapshot(
    due: DueSnapshot,
    *,
    read_models: ReadModels,
    uow: Callable[[], ReportingUnitOfWork],
    now: datetime,
) -> int:
    async with uow() as work:
        version = await work.snapshots.claim(due, now=now)
        if version is None:
            return 0
        district = None if due.district == domain.ALL_DISTRICTS else due.district
        snapshot = PerformanceSnapshot(
            month=due.month,
            district=due.district,
            version=version,
            figures=await monthly_figures(due.month, district, read_models=read_models, now=now),
            generated_at=now,
        )
        await work.events.stage(
            snapshot, correlation_id=f"snapshot-{due.key}", event_id=f"{due.key}.{version}"
        )
        await work.commit()
    return 1


# ---------------------------------------------------------------------------------------------
# Reports


async def reports(
    wanted: Sequence[tuple[str, str | None]], *, read_models: ReadModels, now: datetime
) -> list[MonthlyReport]:
    """The measures of each (month, district) wanted (None for the county), in that order."""
    return [domain.monthly_report(totals) for totals in await read_models.totals(wanted, now=now)]


async def monthly_figures(
    month: str, district: str | None, *, read_models: ReadModels, now: datetime
) -> MonthlyReport:
    """Every measure of ``month``, for one district or (None) the county."""
    [report] = await reports([(month, district)], read_models=read_models, now=now)
    return report


async def district_figures(
    month: str, *, read_models: ReadModels, now: datetime
) -> list[MonthlyReport]:
    """Each district's measures of ``month``, by district name."""
    districts = await read_models.districts()
    return await reports(
        [(month, district) for district in districts], read_models=read_models, now=now
    )


async def trend(
    month: str, count: int, district: str | None, *, read_models: ReadModels, now: datetime
) -> list[MonthlyReport]:
    """The measures of the ``count`` months ending with ``month``, oldest first (none
    before ``shared.months.EARLIEST``)."""
    months = [each for each in months_ending(month, count) if each >= EARLIEST]
    return await reports([(each, district) for each in months], read_models=read_models, now=now)


@dataclass(frozen=True)
class FundingPolicy:
    """The council's configured funding: the amount and formula used when a request has none."""

    amount_pounds: float
    weights: Mapping[str, float]


async def split_funding(
    month: str,
    *,
    amount_pounds: float | None,
    weights: str | None,
    policy: FundingPolicy,
    read_models: ReadModels,
    now: datetime,
) -> domain.FundingSplit:
    """Share an amount across the districts by their figures of ``month``.

    ``weights`` is the formula as ``input:weight,...``; raises ``domain.InvalidWeights``
    before reading anything when it cannot be used.
    """
    chosen = domain.parse_weights(weights) if weights else dict(policy.weights)
    amount_pence = round((policy.amount_pounds if amount_pounds is None else amount_pounds) * 100)
    inputs = {
        report.district or domain.ALL_DISTRICTS: {
            "schools_requests": report.requests.schools,
            "accepted_referrals": report.outcomes.accepted_for_early_help,
            "open_caseload": report.caseload.open_at_month_end,
        }
        for report in await district_figures(month, read_models=read_models, now=now)
    }
    return domain.split_funding(amount_pence, inputs, chosen)


# ---------------------------------------------------------------------------------------------
# Rebuild


EVENTS_A_FOLD = 100_000
"""Events a rebuild folds in memory at once: a longer log is read once for each share of
its facts, so a rebuild's memory stays bounded however long the history."""


class RetainedLog(Protocol):
    """The retained events of the projected topics, as far as the log reached when first read."""

    async def count(self) -> int:
        """How many events there are to read."""

    def batches(self) -> AsyncIterator[Sequence[Decoded]]:
        """Every event, from the start, a batch at a time; read again at each call."""


async def rebuild(
    retained: RetainedLog,
    *,
    read_model_store: ReadModelStore,
    unit_of_work: Callable[[], ReportingUnitOfWork],
    clock: Callable[[], datetime],
    events_a_fold: int = EVENTS_A_FOLD,
) -> int:
    """Drop the read models, then fold every retained event again; how many changed the
    fact they are about.

    The figures are a function of the events alone, so the replay gives the same figures.
    The log is read only after the drop, so no event is forgotten. The facts are folded in
    memory and inserted once, in bulk, so a rebuild costs a write a fact rather than a read
    and a write an event. A running service may go on projecting meanwhile: a fact it
    stored first is left as it stored it, and the rebuild's events for it are applied over
    it as the live projection applies them (an event applied by both changes it once).
    """
    await read_model_store.drop_all()
    await read_model_store.ensure_indexes()
    shares = max(1, math.ceil(await retained.count() / events_a_fold))
    changed, stored_meanwhile = 0, set[domain.FactKey]()
    for share in range(shares):
        fold = domain.Fold(None if shares == 1 else partial(_in_share, shares, share))
        async for batch in retained.batches():
            for _, data in batch:
                fold.add(data)
        stored = await read_model_store.load(fold.facts)
        await read_model_store.add_up(
            fold.increments(leaving_out=stored), fold.touched, now=clock()
        )
        changed += fold.changed_by
        stored_meanwhile |= stored
    if stored_meanwhile:
        async for batch in retained.batches():
            over = [
                each for each in batch if stored_meanwhile.intersection(domain.fact_keys(each[1]))
            ]
            if over:
                await project_new_events(over, unit_of_work=unit_of_work, now=clock())
    return changed


def _in_share(shares: int, share: int, key: domain.FactKey) -> bool:
    return domain.share_of(key, shares) == share
