"""Reporting service: projects the streams into the monthly measures and serves them.

Consumes every business event; publishes ``performance-snapshot``. Never reads another
service's database: what it knows, it learnt from the events, so it can be rebuilt from them
(``python -m services.reporting.rebuild``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Response
from pydantic import BaseModel

from services.reporting import domain, handlers
from services.reporting.access import POLICY
from services.reporting.dashboard import add_dashboard
from services.reporting.handlers import PROJECTED, FundingPolicy
from services.reporting.settings import ReportingSettings
from services.reporting.store import MongoReportingStore
from shared import topics
from shared.auth import protect
from shared.consumer import Delivered
from shared.events import EventData, MonthlyReport
from shared.months import Month
from shared.problems import answer_with
from shared.runtime import build_runtime, service_app

log = logging.getLogger(__name__)


class DistrictFigures(BaseModel):
    """Each district's monthly measures, by district name."""

    month: Month
    districts: list[MonthlyReport]


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()
    runtime = build_runtime(settings, produces=(topics.PERFORMANCE_SNAPSHOT,))
    runtime.erase_families_on_request()
    clock = runtime.clock
    store = MongoReportingStore(runtime.client, runtime.db, runtime.outbox)
    read_models = store.read_models
    funding_policy = FundingPolicy(settings.funding_amount, dict(settings.funding_weights))
    runtime.on_start.append(lambda _: store.ensure_indexes())

    async def on_projected_event(batch: Sequence[Delivered[EventData]]) -> int:
        """Any projected event type: the facts it states, once each."""
        decoded = [(item.envelope, item.event) for item in batch]
        return await handlers.project_new_events(
            decoded, unit_of_work=store.unit_of_work, now=clock()
        )

    for model in PROJECTED:
        runtime.subscribe(model, on_projected_event)

    async def snapshots() -> None:
        await handlers.publish_due_snapshots(
            snapshots=store.snapshots,
            read_models=read_models,
            unit_of_work=store.unit_of_work,
            interval_s=settings.snapshot_interval_s,
            now=clock(),
        )

    runtime.every(min(1.0, settings.snapshot_interval_s), "performance-snapshots", snapshots)

    app = service_app(
        runtime,
        title="Early Help reporting service",
        description="The monthly performance measures, district figures and funding split,"
        " projected live from the event streams. A month is that of each event's own time.",
    )
    protect(
        app,
        settings,
        runtime.db,
        POLICY,
        on_start=runtime.on_start,
        clock=clock,
        known_districts=read_models.districts,
    )
    add_dashboard(app)

    app.add_exception_handler(domain.InvalidWeights, answer_with(422))

    @app.get("/reports/months", tags=["reports"], summary="Months that have figures")
    async def months() -> list[str]:
        return await read_models.months()

    @app.get("/reports/monthly", tags=["reports"], summary="The monthly measures")
    async def monthly(month: Month, district: str | None = None) -> MonthlyReport:
        return await handlers.monthly_figures(month, district, read_models=read_models, now=clock())

    @app.get(
        "/reports/monthly.csv",
        tags=["reports"],
        summary="The monthly measures as CSV (measure,value,meaning)",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def monthly_csv(month: Month, district: str | None = None) -> Response:
        report = await handlers.monthly_figures(
            month, district, read_models=read_models, now=clock()
        )
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["measure", "value", "meaning"])
        writer.writerows(domain.flatten(report))
        name = f"early-help-{month}{'-' + district if district else ''}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": _attachment(name)},
        )

    @app.get("/reports/districts", tags=["reports"], summary="Each district's monthly measures")
    async def districts(month: Month) -> DistrictFigures:
        figures = await handlers.district_figures(month, read_models=read_models, now=clock())
        return DistrictFigures(month=month, districts=figures)

    @app.get("/reports/trend", tags=["reports"], summary="Monthly measures over recent months")
    async def trend(
        month: Month,
        months: Annotated[int, Query(ge=1, le=36)] = 12,
        district: str | None = None,
    ) -> list[MonthlyReport]:
        return await handlers.trend(month, months, district, read_models=read_models, now=clock())

    @app.get("/reports/funding", tags=["reports"], summary="Split an amount across districts")
    async def funding(
        month: Month,
        amount: Annotated[
            float | None, Query(ge=0, le=1e10, description="Pounds; the configured amount if unset")
        ] = None,
        weights: Annotated[
            str | None,
            Query(
                pattern=domain.WEIGHTS_PATTERN,
                description="input:weight,...; e.g. schools_requests:0.5,open_caseload:0.5",
            ),
        ] = None,
    ) -> dict[str, Any]:
        split = await handlers.split_funding(
            month,
            amount_pounds=amount,
            weights=weights,
            policy=funding_policy,
            read_models=read_models,
            now=clock(),
        )
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


def _attachment(name: str) -> str:
    """A download's Content-Disposition (RFC 6266): an ASCII name, and the name as given
    for clients that read ``filename*``, since a district may be named in any script."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
