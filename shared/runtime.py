"""What every service runs on: database, broker, outbox relay, reliable subscribers, HTTP.

``build_runtime`` only wires objects together; nothing connects until ``start()``, which a
service's FastAPI lifespan calls. So ``create_app()`` is cheap and import has no effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Query
from faststream.kafka import KafkaBroker

from shared.clock import utc_now
from shared.consumer import DeadLetters, Handler, subscribe
from shared.contracts.asyncapi import asyncapi_document
from shared.idempotency import ProcessedEvents
from shared.kafka import KafkaPublisher, create_broker, ensure_topics
from shared.mongo import Database, MongoClient, create_mongo_client
from shared.outbox import Outbox, OutboxRelay
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic, topic_name

log = logging.getLogger(__name__)

Startup = Callable[["Runtime"], Awaitable[None]]


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
    produces: set[str] = field(default_factory=set)
    handlers: dict[str, Handler] = field(default_factory=dict)
    on_start: list[Startup] = field(default_factory=list)
    periodic: list[tuple[str, float, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

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

    def subscribe(self, event_type: str, handler: Handler) -> None:
        """Consume ``event_type`` as this service's consumer group, reliably."""
        self.handlers[self.topic(event_type)] = handler

    async def start(self) -> None:
        topics = {self.topic(event_type) for event_type in self.produces}
        topics |= set(self.handlers) | {dead_letter_topic(topic) for topic in self.handlers}
        await ensure_topics(
            self.settings.kafka_bootstrap_servers,
            topics,
            partitions=self.settings.kafka_partitions,
        )
        await self.outbox.ensure_indexes()
        for step in self.on_start:
            await step(self)
        await self.publisher.start()
        self.relay.start()
        if self.handlers:
            subscribe(
                self.broker,
                self.handlers,
                group_id=self.settings.consumer_group,
                dead_letters=self.dead_letters,
                max_attempts=self.settings.consumer_max_attempts,
                retry_backoff_s=self.settings.consumer_retry_backoff_s,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            )
        await self.broker.start()
        self._tasks = [
            asyncio.create_task(self._repeat(name, interval_s, work), name=name)
            for name, interval_s, work in self.periodic
        ]
        log.info("%s started", self.settings.service_name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        await self.relay.stop()
        await self.publisher.stop()
        await self.client.close()

    async def health(self) -> dict[str, Any]:
        """Readiness: the database answers; how much is waiting in the outbox."""
        await self.db.command("ping")
        return {
            "status": "ok",
            "service": self.settings.service_name,
            "outbox_pending": await self.relay.pending_count(),
        }


def build_runtime(
    settings: ServiceSettings,
    *,
    produces: Iterable[str] = (),
    clock: Callable[[], datetime] = utc_now,
) -> Runtime:
    client = create_mongo_client(settings.mongodb_uri, app_name=settings.service_name)
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
        ),
        dead_letters=DeadLetters(
            client, db, outbox, consumer_group=settings.consumer_group, clock=clock
        ),
        processed=ProcessedEvents(client, db, consumer=settings.consumer_group, clock=clock),
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

    app = FastAPI(title=title, description=description, lifespan=lifespan)
    app.state.runtime = runtime

    @app.get("/health", tags=["operations"], summary="Readiness of this service")
    async def health() -> dict[str, Any]:
        return await runtime.health()

    @app.get("/dead-letters", tags=["operations"], summary="Messages this service gave up on")
    async def dead_letters(limit: int = Query(default=50, ge=1, le=500)) -> list[dict[str, Any]]:
        return await runtime.dead_letters.recent(limit)

    @app.get(
        "/asyncapi.json", tags=["operations"], summary="AsyncAPI document of this service's topics"
    )
    async def asyncapi() -> dict[str, Any]:
        namespace = runtime.settings.topic_namespace
        return asyncapi_document(
            title=title,
            description=description,
            sends=runtime.produces,
            receives={topic.removeprefix(namespace) for topic in runtime.handlers},
        )

    return app
