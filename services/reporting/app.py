"""Reporting service: projects the streams into the monthly measures and serves them.

Consumes every business event; publishes ``performance-snapshot``. Never reads another
service's database: what it knows, it learnt from the events, so it can be rebuilt from them
(``python -m services.reporting.rebuild``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from functools import partial
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Response
from pymongo.errors import DuplicateKeyError

from services.reporting import domain
from services.reporting.access import POLICY
from services.reporting.dashboard import add_dashboard
from services.reporting.settings import ReportingSettings
from services.reporting.store import ReportingStore
from shared import topics
from shared.auth import protect
from shared.consumer import BatchHandler, Handler, IncomingMessage
from shared.events import (
    AuditAssigned,
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    PerformanceSnapshot,
    RawEvent,
    ReferralReceived,
    ReferralRejected,
    TeamCapacityChanged,
    decode,
)
from shared.mongo import Document, Session, in_transaction
from shared.runtime import Runtime, build_runtime, service_app

log = logging.getLogger(__name__)

PROJECTED: tuple[type[EventData], ...] = (
    ReferralReceived,
    ReferralRejected,
    CaseAllocated,
    CaseClosed,
    TeamCapacityChanged,
    AuditAssigned,
    AuditCompleted,
)

Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]


class Reporting:
    """The projection and the figures, shared by the service and the rebuild command."""

    def __init__(self, runtime: Runtime, settings: ReportingSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.store = ReportingStore(runtime.db, runtime.clock)

    async def project(self, event: RawEvent, data: EventData) -> bool:
        """Apply one event once; False when it was applied before."""

        async def apply(session: Session) -> dict[str, Any]:
            await self.store.project([data], session=session)
            return {"projected": True}

        return await self.runtime.processed.process_once(event, apply)

    async def project_many(self, batch: list[tuple[RawEvent, EventData]]) -> int:
        """Apply a batch in one transaction, skipping events applied before; how many were new."""

        async def apply(session: Session, fresh: list[int]) -> list[dict[str, Any]]:
            await self.store.project([batch[index][1] for index in fresh], session=session)
            return [{"projected": True} for _ in fresh]

        return await self.runtime.processed.process_many([event for event, _ in batch], apply)

    async def monthly(self, month: str, district: str | None) -> dict[str, Any]:
        now = self.runtime.clock()
        return domain.monthly_report(await self.store.month_facts(month, district, now))

    async def publish_due_snapshots(self) -> int:
        """Stage a ``performance-snapshot`` for each changed month/district that is due."""
        published = 0
        for mark in await self.store.due_snapshots(self.settings.snapshot_interval_s):
            stage = partial(self._stage_snapshot, mark)
            with contextlib.suppress(DuplicateKeyError):  # another replica took it first
                published += await in_transaction(self.runtime.client, stage)
        return published

    async def _stage_snapshot(self, mark: Document, session: Session) -> bool:
        # The changes were counted before the figures are computed: an event projected
        # meanwhile counts one more, so it is in this snapshot or the next, never lost.
        version = await self.store.claim_snapshot(mark, session=session)
        if version is None:
            return False
        district = None if mark["district"] == domain.ALL_DISTRICTS else mark["district"]
        figures = await self.monthly(mark["month"], district)
        snapshot = PerformanceSnapshot(
            month=mark["month"],
            district=mark["district"],
            version=version,
            figures=figures,
            generated_at=self.runtime.clock(),
        )
        key = mark["_id"]
        await self.runtime.outbox.stage_event(
            snapshot,
            session=session,
            correlation_id=f"snapshot-{key}",
            event_id=f"{key}.{version}",
        )
        return True


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()
    runtime = build_runtime(settings, produces=(topics.PERFORMANCE_SNAPSHOT,))
    reporting = Reporting(runtime, settings)
    runtime.on_start.append(lambda _: reporting.store.ensure_indexes())

    def projector(model: type[EventData]) -> tuple[Handler, BatchHandler]:
        async def project(message: IncomingMessage) -> None:
            event, data = decode(message.value, model)
            await reporting.project(event, data)

        async def project_many(messages: list[IncomingMessage]) -> int:
            return await reporting.project_many([decode(m.value, model) for m in messages])

        return project, project_many

    for model in PROJECTED:
        one, many = projector(model)
        runtime.subscribe(model.event_type, one, many=many)

    async def snapshots() -> None:
        await reporting.publish_due_snapshots()

    runtime.every(min(1.0, settings.snapshot_interval_s), "performance-snapshots", snapshots)

    app = service_app(
        runtime,
        title="Early Help reporting service",
        description="The monthly performance measures, district figures and funding split,"
        " projected live from the event streams. A month is that of each event's own time.",
    )
    app.state.reporting = reporting
    protect(
        app,
        settings,
        runtime.db,
        POLICY,
        clock=runtime.clock,
        known_districts=reporting.store.districts,
    )
    add_dashboard(app)

    @app.get("/reports/months", tags=["reports"], summary="Months that have figures")
    async def months() -> list[str]:
        return await reporting.store.months()

    @app.get("/reports/monthly", tags=["reports"], summary="The monthly measures")
    async def monthly(month: Month, district: str | None = None) -> dict[str, Any]:
        return await reporting.monthly(month, district)

    @app.get(
        "/reports/monthly.csv",
        tags=["reports"],
        summary="The monthly measures as CSV (measure,value)",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def monthly_csv(month: Month, district: str | None = None) -> Response:
        report = await reporting.monthly(month, district)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["measure", "value"])
        writer.writerows(domain.flatten(report))
        name = f"early-help-{month}{'-' + district if district else ''}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/reports/districts", tags=["reports"], summary="Each district's monthly measures")
    async def districts(month: Month) -> dict[str, Any]:
        return {
            "month": month,
            "districts": [
                await reporting.monthly(month, district)
                for district in await reporting.store.districts()
            ],
        }

    @app.get("/reports/trend", tags=["reports"], summary="Monthly measures over recent months")
    async def trend(
        month: Month,
        months: Annotated[int, Query(ge=1, le=36)] = 12,
        district: str | None = None,
    ) -> list[dict[str, Any]]:
        return [
            await reporting.monthly(each, district) for each in domain.months_ending(month, months)
        ]

    @app.get("/reports/funding", tags=["reports"], summary="Split an amount across districts")
    async def funding(
        month: Month,
        amount: Annotated[
            float | None, Query(ge=0, le=1e10, description="Pounds; the configured amount if unset")
        ] = None,
        weights: Annotated[
            str | None,
            Query(description="input:weight,...; e.g. schools_requests:0.5,open_caseload:0.5"),
        ] = None,
    ) -> dict[str, Any]:
        try:
            chosen = domain.parse_weights(weights) if weights else dict(settings.funding_weights)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        amount_pence = round((settings.funding_amount if amount is None else amount) * 100)
        inputs = {}
        for district in await reporting.store.districts():
            report = await reporting.monthly(month, district)
            inputs[district] = {
                "schools_requests": report["requests"]["schools"],
                "accepted_referrals": report["outcomes"]["accepted_for_early_help"],
                "open_caseload": report["caseload"]["open_at_month_end"],
            }
        split = domain.split_funding(amount_pence, inputs, chosen)
        return {
            "month": month,
            "amount_pence": split.amount_pence,
            "weights": split.weights,
            "formula": "share = sum(weight x district's share of input) / sum(weights of inputs"
            " that are not zero everywhere); pence by largest remainder",
            "districts": [
                {
                    "district": share.district,
                    "inputs": share.inputs,
                    "input_shares": share.input_shares,
                    "share": share.share,
                    "amount_pence": share.amount_pence,
                    "amount": f"£{share.amount_pence / 100:,.2f}",
                }
                for share in split.districts
            ],
            "total_pence": sum(share.amount_pence for share in split.districts),
        }

    return app
