"""Reporting service: projects the streams into figures and serves them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

from services.reporting import domain
from services.reporting.settings import ReportingSettings
from services.reporting.store import MongoFiguresStore
from shared.consumer import Handler, IncomingMessage
from shared.events import (
    AuditCompleted,
    CaseAllocated,
    CaseClosed,
    EventData,
    ReferralReceived,
    ReferralRejected,
    decode,
)
from shared.mongo import Session
from shared.runtime import build_runtime, service_app

PROJECTED: tuple[type[EventData], ...] = (
    ReferralReceived,
    ReferralRejected,
    CaseAllocated,
    CaseClosed,
    AuditCompleted,
)


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()
    runtime = build_runtime(settings)
    store = MongoFiguresStore(runtime.db)

    runtime.on_start.append(lambda _: store.ensure_indexes())

    def projector(model: type[EventData]) -> Handler:
        async def project(message: IncomingMessage) -> None:
            event, data = decode(message.value, model)
            change = domain.figures_for(data)

            async def apply(session: Session) -> dict[str, Any]:
                await store.apply(change, session=session)
                return {"month": change.month, "district": change.district}

            await runtime.processed.process_once(event, apply)

        return project

    for model in PROJECTED:
        runtime.subscribe(model.event_type, projector(model))

    app = service_app(
        runtime,
        title="Early Help reporting service",
        description="The monthly performance measures, projected live from the event streams.",
    )

    @app.get("/reports/summary", tags=["reports"], summary="Totals and figures by month/district")
    async def summary(
        month: str | None = Query(default=None, pattern=r"^\d{4}-\d{2}$"),
        district: str | None = None,
    ) -> dict[str, Any]:
        filters = {
            name: value for name, value in (("month", month), ("district", district)) if value
        }
        figures = await store.all_figures(filters)
        totals: domain.Counts = {}
        for row in figures:
            domain.add_counts(totals, row.get("counts", {}))
        return {"totals": dict(sorted(totals.items())), "by_month_and_district": figures}

    return app
