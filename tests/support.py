"""Helpers for tests against the real broker and database: poll, never sleep blindly."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI

from shared.embedded import free_port
from shared.events import PLATFORM_EVENTS, EventData, envelope
from shared.kafka import topic_partitions

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
) -> T:
    """Poll ``probe`` until its value satisfies ``until``; fail with the last value seen.

    A probe that hangs (a Kafka client retries some requests forever) fails after
    ``timeout_s`` too, rather than holding the whole run.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                value = await probe()
        except TimeoutError:
            raise AssertionError(f"the probe did not answer within {timeout_s}s") from None
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(interval_s)


async def read_topic(
    bootstrap_servers: str, topic: str, *, count: int, timeout_s: float = 30.0
) -> list[Any]:
    """Read ``count`` records of ``topic`` from the beginning of every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        assigned = await eventually(
            lambda: topic_partitions(bootstrap_servers, [topic]), bool, timeout_s=timeout_s
        )
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[Any] = []
        while len(records) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{topic}: got {len(records)} of {count} records")
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for partition_records in batch.values():
                records.extend(partition_records)
        return records
    finally:
        await consumer.stop()


async def topic_sizes(bootstrap_servers: str, topics: Iterable[str]) -> dict[str, int]:
    """How many records each topic holds so far: its partitions' end offsets, summed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        sizes = dict.fromkeys(topics, 0)
        partitions = await topic_partitions(bootstrap_servers, sizes)
        for partition, end in (await consumer.end_offsets(partitions)).items():
            sizes[partition.topic] += end
        return sizes
    finally:
        await consumer.stop()


async def produce(
    bootstrap_servers: str, topic: str, values: list[bytes], *, key: bytes | None = None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def partner_submission(data: Any, *, partner_id: str, event_id: str | None = None) -> bytes:
    """A partner's ``referral-submitted`` CloudEvent, as their system would publish it."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": f"/partners/{partner_id}",
            "type": "referral-submitted",
            "time": datetime.now(UTC).isoformat(),
            "correlationid": str(uuid.uuid4()),
            "schemaversion": 1,
            "data": data,
        }
    ).encode()


class TopicReader:
    """Everything published on one topic so far, read with the service's own decoder."""

    def __init__(self, bootstrap_servers: str, topic: str, model: type[EventData]) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, enable_auto_commit=False
        )
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._model = model
        self._seen: list[Any] = []

    async def start(self) -> None:
        await self._consumer.start()
        assigned = await eventually(
            lambda: topic_partitions(self._bootstrap_servers, [self._topic]), bool, timeout_s=30
        )
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def events(self) -> list[Any]:
        batch = await self._consumer.getmany(timeout_ms=200)
        for records in batch.values():
            self._seen.extend(
                PLATFORM_EVENTS.decode(record.value, self._model)[1] for record in records
            )
        return list(self._seen)


def service_event(
    data: EventData, *, service: str, event_id: str | None = None, correlation_id: str = "c-1"
) -> bytes:
    """``data`` as one of the platform's services would publish it."""
    return envelope(
        data,
        event_id=event_id or str(uuid.uuid4()),
        source=f"/earlyhelp/{service}",
        time=datetime.now(UTC),
        correlation_id=correlation_id,
    ).to_bytes()


class Serving:
    """An app under uvicorn in a background thread, on a free port of the loopback."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"the test server did not start on port {self.port}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def followed(
    http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> list[list[dict[str, Any]]]:
    """Every page of ``path``, each from the previous page's ``Link``."""
    pages, url = [], path
    while True:
        answer = await http.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        link = answer.headers.get("link")
        if link is None:
            return pages
        target, relation = link.split(";")
        assert relation.strip() == 'rel="next"'
        url = path.split("?")[0] + target.strip()[1:-1]
