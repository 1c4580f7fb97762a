"""What every service runs on: database, broker, outbox relay, reliable subscribers, HTTP.

``build_runtime`` only wires objects together; nothing connects until ``start()``, which a
service's FastAPI lifespan calls. So ``create_app()`` is cheap and import has no effects.

Every service gets the same operations endpoints from ``service_app``: ``/health`` (the
process answers; no I/O, for a liveness probe), ``/ready`` (broker and database reachable,
consumer in its group; 503 with reasons otherwise), ``/metrics`` (Prometheus) and
``/dead-letters``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.access_log import AccessEntry, PersonalData, prepare_access_log, record_access
from shared.clock import utc_now
from shared.consumer import (
    Answer,
    Consumption,
    Delivered,
    EventT,
    Handle,
    Record,
    Subscription,
    subscribe,
)
from shared.contracts.asyncapi import asyncapi_document
from shared.db_metrics import DatabaseWrites
from shared.dead_letters import (
    DeadLetters,
    DeadLetterView,
    OriginalView,
    UnknownDeadLetter,
    dead_letter_sealer,
)
from shared.events import PLATFORM_EVENTS, EventData, EventRegistry, FamilyErased
from shared.family_aliases import FamilyAliases
from shared.http_security import (
    WRITES,
    SecurityHeaders,
    TokenBuckets,
    WriteRateLimit,
    page_policy,
)
from shared.idempotency import ProcessedEvents
from shared.kafka import KafkaPublisher, create_broker, ensure_topics
from shared.listing import NEXT_PAGE, PositionCursor, link_next
from shared.logs import correlated
from shared.metrics import Metrics
from shared.mongo import Database, MongoClient, Session, create_mongo_client
from shared.outbox import Outbox, OutboxRelay
from shared.problems import answer_with, document_problems, install_problem_handlers
from shared.requests import one_value_each
from shared.settings import ServiceSettings
from shared.strict_json import MAX_RECORD_BYTES
from shared.topics import REFERRAL_SUBMITTED, dead_letter_topic, topic_name

log = logging.getLogger(__name__)

Startup = Callable[["Runtime"], Awaitable[None]]

CORRELATION_HEADER = "x-correlation-id"
DEAD_LETTER_SWEEP_S = 3600.0
"""How often dead letters past their retention are purged."""
SWAGGER_UI_ORIGIN = "https://cdn.jsdelivr.net"
"""Where FastAPI's OpenAPI page loads Swagger UI from."""
FAVICON_ORIGIN = "https://fastapi.tiangolo.com"


@dataclass
class Runtime:
    """A service's connections and delivery plumbing, started and stopped together."""

    settings: ServiceSettings
    clock: Callable[[], datetime]
    client: MongoClient
    db: Database
    broker: KafkaBroker
    publisher: KafkaPublisher
    outbox: Outbox
    relay: OutboxRelay
    dead_letters: DeadLetters
    processed: ProcessedEvents
    aliases: FamilyAliases
    metrics: Metrics
    registry: EventRegistry = PLATFORM_EVENTS
    produces: set[str] = field(default_factory=set)
    subscriptions: dict[str, Subscription[Any]] = field(default_factory=dict)
    on_start: list[Startup] = field(default_factory=list)
    periodic: list[tuple[str, float, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    reference_checks: dict[str, Callable[[], Awaitable[str]]] = field(default_factory=dict)
    """Extra ``/ready`` checks of the data a service works from (teams, auditors, postcode
    table): "ok" with what is there, or "ok: empty" with how to add it, as an empty
    deployment is still ready for its administrators to fill."""
    family_erasers: list[Callable[[str, Session], Awaitable[None]]] = field(default_factory=list)
    """What else a service erases of a family on ``family-erased`` (its personal data)."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    consumption: Consumption | None = None
    stopping: bool = False

    def topic(self, event_type: str) -> str:
        return topic_name(event_type, self.settings.topic_namespace)

    def every(self, interval_s: float, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` every ``interval_s`` while the service runs; a failure is logged and
        tried again next time, so an outage cannot end the loop."""
        self.periodic.append((name, interval_s, work))

    async def _repeat(
        self, name: str, interval_s: float, work: Callable[[], Awaitable[None]]
    ) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s failed; trying again in %ss", name, interval_s)
            await asyncio.sleep(interval_s)

    def subscribe(
        self,
        model: type[EventT],
        handle: Handle[EventT],
        *,
        answer_refused: Answer | None = None,
        max_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        """Consume ``model``'s topic as this service's consumer group, reliably: ``handle``
        takes each poll's events of that type, decoded, as one batch (or one at a time
        after a batch failed). Records that are not that event are dead-lettered, unless
        ``answer_refused`` answers them."""
        topic = self.topic(model.event_type)
        self.subscriptions[topic] = Subscription(
            topic,
            model,
            self._with_current_family_ids(handle),
            answer_refused=answer_refused,
            max_bytes=max_bytes,
        )

    def _with_current_family_ids(self, handle: Handle[EventT]) -> Handle[EventT]:
        """``handle``, given each event under its family's current id (``family_aliases``):
        events from before a migration of family ids carry the old ones."""

        async def handle_current(batch: Sequence[Delivered[EventT]]) -> int:
            old = {family for item in batch if isinstance(family := _family_of(item.event), str)}
            renamed = await self.aliases.current(old)
            if renamed:
                batch = [_renamed(item, renamed) for item in batch]
            return await handle(batch)

        return handle_current

    def erase_families_on_request(self) -> None:
        """Act on ``family-erased``: this service's dead letters of the family go, and what
        each of ``family_erasers`` erases, in one transaction with the processed record."""

        async def on_family_erased(batch: Sequence[Delivered[FamilyErased]]) -> int:
            async def erase(session: Session, fresh: list[int]) -> None:
                families = {batch[index].event.family_id for index in fresh}
                erased = await self.dead_letters.erase_families(families, session=session)
                for family_id in sorted(families):
                    for eraser in self.family_erasers:
                        await eraser(family_id, session)
                log.info("erased %d families here (%d dead letters)", len(families), erased)

            return await self.processed.process_many([item.envelope for item in batch], erase)

        self.subscribe(FamilyErased, on_family_erased)

    async def start(self) -> None:
        topics = {self.topic(event_type) for event_type in self.produces}
        topics |= set(self.subscriptions)
        dead_letter_topics = {dead_letter_topic(topic) for topic in self.subscriptions}
        topics |= dead_letter_topics
        # Partners' submissions hold families' details in the clear: the broker keeps them
        # only as long as it must. Dead-letter topics hold no personal data, but are kept no
        # longer either, as their letters are.
        personal = (dead_letter_topics | {self.topic(REFERRAL_SUBMITTED)}) & topics
        kept_ms = int(timedelta(days=self.settings.personal_topic_retention_days).total_seconds())
        await ensure_topics(
            self.settings.kafka_bootstrap_servers,
            topics,
            partitions=self.settings.kafka_partitions,
            retention_ms={topic: kept_ms * 1000 for topic in sorted(personal)},
        )
        await self.outbox.ensure_indexes()
        await self.dead_letters.ensure_indexes()
        await self.dead_letters.seal_legacy()
        await self.dead_letters.list_existing()
        await prepare_access_log(self.db)
        await self.aliases.load()
        for step in self.on_start:
            await step(self)
        await self.publisher.start()
        self.relay.start()
        if self.subscriptions and self.consumption is None:
            self.consumption = subscribe(
                self.broker,
                list(self.subscriptions.values()),
                registry=self.registry,
                group_id=self.settings.consumer_group,
                dead_letters=self.dead_letters,
                batch_size=self.settings.consumer_batch_size,
                batch_wait_ms=self.settings.consumer_batch_wait_ms,
                max_attempts=self.settings.consumer_max_attempts,
                retry_backoff_s=self.settings.consumer_retry_backoff_s,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                metrics=self.metrics,
            )
        await self.broker.start()
        self._tasks = [
            asyncio.create_task(self._repeat(name, interval_s, work), name=name)
            for name, interval_s, work in self.periodic
        ]
        log.info("%s started", self.settings.service_name)

    async def stop(self) -> None:
        """Drain, in order: stop the periodic work, finish and commit the messages being
        handled (the broker waits up to ``shutdown_timeout_s``), publish what they staged,
        then disconnect."""
        self.stopping = True
        started = time.monotonic()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        await self.relay.stop(self.settings.shutdown_timeout_s)
        await self.publisher.stop()
        await self.client.close()
        log.info("%s stopped in %.1fs", self.settings.service_name, time.monotonic() - started)

    async def readiness(self) -> dict[str, str]:
        """Each check's answer, "ok" or what is wrong, checked at the same time."""
        timeout = self.settings.readiness_timeout_s

        async def database() -> str:
            try:
                await asyncio.wait_for(self.db.command("ping"), timeout)
            except Exception as error:
                return f"unreachable: {type(error).__name__}: {error}"[:300]
            return "ok"

        async def broker() -> str:
            try:
                reachable = await self.broker.ping(timeout)
            except Exception as error:
                return f"unreachable: {type(error).__name__}: {error}"[:300]
            return "ok" if reachable else f"unreachable within {timeout}s"

        database_answer, broker_answer = await asyncio.gather(database(), broker())
        checks = {"database": database_answer, "broker": broker_answer}
        if self.subscriptions:
            membership = self.consumption.membership if self.consumption else None
            checks["consumer"] = (
                f"ok: {len(membership.partitions)} partition(s)"
                if membership is not None and membership.joined
                else f"not yet assigned partitions in group {self.settings.consumer_group}"
            )
        for name, check in self.reference_checks.items():
            try:
                checks[name] = await asyncio.wait_for(check(), timeout)
            except Exception as error:
                checks[name] = f"unreadable: {type(error).__name__}: {error}"[:300]
        if self.stopping:
            checks["service"] = "shutting down"
        return checks

    async def refresh_gauges(self) -> None:
        """Bring the gauges that need I/O up to date, just before a scrape reads them."""
        try:
            backlog = await asyncio.wait_for(
                self.relay.pending_count(), self.settings.readiness_timeout_s
            )
        except Exception:
            self.metrics.errors.labels("metrics").inc()
        else:
            self.metrics.outbox_backlog.set(backlog)
        if self.consumption is not None:
            try:
                lags = await asyncio.wait_for(
                    self.consumption.lag(), self.settings.readiness_timeout_s
                )
            except Exception:  # e.g. a rebalance took a partition away mid-way
                self.metrics.errors.labels("metrics").inc()
                return
            self.metrics.consumer_lag.clear()  # partitions this replica no longer owns go
            for (topic, partition), lag in lags.items():
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)


def build_runtime(
    settings: ServiceSettings,
    *,
    produces: Iterable[str] = (),
    clock: Callable[[], datetime] = utc_now,
    registry: EventRegistry = PLATFORM_EVENTS,
) -> Runtime:
    metrics = Metrics()
    client = create_mongo_client(
        settings.mongodb_uri,
        app_name=settings.service_name,
        event_listeners=[
            DatabaseWrites(metrics.database_documents_written, metrics.database_transactions)
        ],
    )
    db = client[settings.database_name]
    outbox = Outbox(
        db,
        source=f"/earlyhelp/{settings.service_name}",
        topic_namespace=settings.topic_namespace,
        clock=clock,
    )
    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id=settings.service_name)
    return Runtime(
        settings=settings,
        clock=clock,
        client=client,
        db=db,
        broker=create_broker(settings),
        publisher=publisher,
        outbox=outbox,
        relay=OutboxRelay(
            db,
            publisher,
            wake_up=outbox.staged,
            clock=clock,
            poll_interval_s=settings.outbox_poll_interval_s,
            metrics=metrics,
        ),
        dead_letters=DeadLetters(
            client,
            db,
            outbox,
            consumer_group=settings.consumer_group,
            clock=clock,
            sealer=dead_letter_sealer(settings),
            retention=timedelta(days=settings.dead_letter_retention_days),
        ),
        processed=ProcessedEvents(client, db, consumer=settings.consumer_group, clock=clock),
        aliases=FamilyAliases(db),
        metrics=metrics,
        registry=registry,
        produces=set(produces),
    )


def service_app(runtime: Runtime, *, title: str, description: str) -> FastAPI:
    """A FastAPI app whose lifespan starts and stops the runtime, with operations endpoints."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title,
        description=description,
        lifespan=lifespan,
        dependencies=[Depends(one_value_each)],
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    document_problems(app, lambda method, _: (429,) if method in WRITES else ())
    buckets = TokenBuckets(runtime.settings.write_rate_per_s, runtime.settings.write_burst)
    app.add_middleware(WriteRateLimit, buckets=buckets)
    app.add_middleware(ObservedRequests, metrics=runtime.metrics)
    build_stack = app.build_middleware_stack

    def with_security_headers() -> ASGIApp:
        # Outside every middleware a service adds later (its access control) and outside
        # Starlette's own error handling, so refusals and 500s carry the headers too.
        return SecurityHeaders(build_stack())

    app.build_middleware_stack = with_security_headers  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        """The OpenAPI page, under a policy that lets it load Swagger UI and nothing else."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=app.title)
        html = bytes(page.body).decode()
        policy = page_policy(
            html,
            sources={
                "script-src": SWAGGER_UI_ORIGIN,
                "style-src": SWAGGER_UI_ORIGIN,
                "img-src": FAVICON_ORIGIN,
            },
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @app.get("/health", tags=["operations"], summary="Liveness: the process answers (no I/O)")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": runtime.settings.service_name}

    @app.get(
        "/ready",
        tags=["operations"],
        summary="Readiness: broker and database reachable, consumer in its group",
        responses={503: {"description": "Not ready; `reasons` says why"}},
    )
    async def ready() -> JSONResponse:
        checks = await runtime.readiness()
        reasons = [
            f"{name}: {answer}" for name, answer in checks.items() if not answer.startswith("ok")
        ]
        body: dict[str, Any] = {
            "status": "not ready" if reasons else "ready",
            "service": runtime.settings.service_name,
            "checks": checks,
        }
        if reasons:
            body["reasons"] = reasons
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics of this replica",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def metrics() -> Response:
        await runtime.refresh_gauges()
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_dead_letter_routes(app, runtime)

    @app.get(
        "/asyncapi.json", tags=["operations"], summary="AsyncAPI document of this service's topics"
    )
    async def asyncapi() -> dict[str, Any]:
        namespace = runtime.settings.topic_namespace
        return asyncapi_document(
            title=title,
            description=description,
            sends=runtime.produces,
            receives={topic.removeprefix(namespace) for topic in runtime.subscriptions},
        )

    return app


class NotConsuming(RuntimeError):
    """This replica has no consumer to hand a record to."""


class ReplayView(BaseModel):
    dead_letter_id: str
    handled: bool = Field(
        description="True: handled this time, and the letter purged. False: it failed again"
        " and stays, marked replayed."
    )


UNKNOWN_LETTER: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such dead letter: never was, purged, or erased"}
}


def add_dead_letter_routes(app: FastAPI, runtime: Runtime) -> None:
    """Administrators list, replay and purge dead letters without seeing what they said; a
    caseworker reads one's original with a stated reason, and the look is recorded."""
    letters = runtime.dead_letters

    @app.get(
        "/dead-letters",
        tags=["operations"],
        summary="Messages this service gave up on, newest first, a page at a time",
        description="Newest first." + NEXT_PAGE,
    )
    async def dead_letters(
        request: Request,
        response: Response,
        cursor: PositionCursor = None,
        limit: int = Query(default=50, ge=1, le=500),
    ) -> list[DeadLetterView]:
        page, following = await letters.recent(limit, before=cursor)
        link_next(request, response, following)
        return [DeadLetterView.model_validate(letter) for letter in page]

    @app.get(
        "/dead-letters/{dead_letter_id}",
        tags=["operations"],
        summary="One dead letter: where it came from and why",
        responses=UNKNOWN_LETTER,
    )
    async def dead_letter(dead_letter_id: str) -> DeadLetterView:
        return DeadLetterView.model_validate(await letters.get(dead_letter_id))

    @app.get(
        "/dead-letters/{dead_letter_id}/original",
        tags=["operations"],
        summary="A dead letter's original record, for a caseworker with a reason (recorded)",
        responses={**UNKNOWN_LETTER, 400: {"description": "No reason given"}},
    )
    async def dead_letter_original(dead_letter_id: str, reader: PersonalData) -> OriginalView:
        listed, original = await letters.original(dead_letter_id)
        await record_access(
            runtime.db,
            AccessEntry.of(
                reader, "read_dead_letter", listed.get("family_id"), dead_letter_id, runtime.clock()
            ),
        )
        try:
            text: str | None = original.value.decode()
        except UnicodeDecodeError:
            text = None
        return OriginalView(
            dead_letter_id=dead_letter_id,
            topic=original.topic,
            key=original.key.decode(errors="replace") if original.key else None,
            headers=original.headers,
            value_base64=base64.b64encode(original.value).decode(),
            value_text=text,
            error=original.error,
        )

    @app.post(
        "/dead-letters/{dead_letter_id}/replay",
        tags=["operations"],
        summary="Hand a dead letter to this service's consumer again, once its cause is fixed",
        responses={**UNKNOWN_LETTER, 409: {"description": "This replica is not consuming"}},
    )
    async def replay_dead_letter(dead_letter_id: str) -> ReplayView:
        """Only this service reads it again (no other consumer group sees a replay), by the
        path a poll takes; handled, the letter is purged, else it stays, marked replayed."""
        if runtime.consumption is None:
            raise NotConsuming("this replica is not consuming: replay on a started one")
        listed, original = await letters.original(dead_letter_id)
        record = Record(
            original.topic,
            listed["partition"],
            listed["offset"],
            original.key,
            original.value,
            original.headers,
        )
        handled = await runtime.consumption.redeliver(record)
        if handled:
            await letters.purge([dead_letter_id])
        else:
            await letters.mark_replayed(dead_letter_id, runtime.clock())
        return ReplayView(dead_letter_id=dead_letter_id, handled=handled)

    @app.delete(
        "/dead-letters/{dead_letter_id}",
        tags=["operations"],
        summary="Purge a dead letter that is no longer wanted",
        status_code=204,
        responses=UNKNOWN_LETTER,
    )
    async def purge_dead_letter(dead_letter_id: str) -> Response:
        if not await letters.purge([dead_letter_id]):
            raise UnknownDeadLetter(f"no dead letter {dead_letter_id!r}")
        return Response(status_code=204)

    async def purge_expired() -> None:
        await letters.purge_expired()

    runtime.every(DEAD_LETTER_SWEEP_S, "dead-letter-expiry", purge_expired)
    app.add_exception_handler(UnknownDeadLetter, answer_with(404))
    app.add_exception_handler(NotConsuming, answer_with(409))


class ObservedRequests:
    """Counts and times every HTTP request by route template, and logs it correlated.

    A request's ``X-Correlation-Id`` header becomes the correlation id of every line logged
    while it is answered, and is echoed on the response.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        correlation = headers.get(CORRELATION_HEADER.encode())
        status = 500
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if correlation is not None:
                    message["headers"] = [
                        *message.get("headers", []),
                        (CORRELATION_HEADER.encode(), correlation),
                    ]
            await send(message)

        with correlated(correlation.decode(errors="replace") if correlation else None):
            try:
                await self._app(scope, receive, send_observed)
            except Exception:
                self._metrics.errors.labels("http").inc()
                raise
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                method = scope["method"]
                self._metrics.http_requests.labels(method, template, str(status)).inc()
                self._metrics.http_seconds.labels(method, template).observe(
                    time.perf_counter() - started
                )


def _family_of(event: EventData) -> str | None:
    family_id = getattr(event, "family_id", None)
    return family_id if isinstance(family_id, str) else None


def _renamed(item: Delivered[EventT], renamed: Mapping[str, str]) -> Delivered[EventT]:
    family_id = _family_of(item.event)
    if family_id is None or family_id not in renamed:
        return item
    return replace(item, event=item.event.model_copy(update={"family_id": renamed[family_id]}))
