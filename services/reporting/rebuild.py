"""``python -m services.reporting.rebuild``: drop the read models and replay the retained events.

The figures are a function of the events alone, so replaying every retained event from the
start of each topic gives the same figures again: after a projection bug is fixed, or when
a new measure needs history. The running service may stay up: an event applied by both
changes the facts once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from services.reporting import handlers
from services.reporting.handlers import PROJECTED, Decoded
from services.reporting.settings import ReportingSettings
from services.reporting.store import MongoReportingStore
from shared.consumer import Delivered, read_record, record_of
from shared.events import EventData, EventRegistry
from shared.kafka import topic_partitions
from shared.kafka_security import KafkaSecurity
from shared.runtime import build_runtime
from shared.topics import topic_name

log = logging.getLogger(__name__)

BATCH = 5_000
"""Events applied in one transaction: a replay's cost is set by the writes, and a batch of
thousands writes each case, month and district once for all its events."""


@dataclass(frozen=True)
class Rebuilt:
    read: int
    applied: int
    undecodable: int
    seconds: float
    by_topic: dict[str, int]


class RetainedEvents:
    """Every event retained on the projected topics, from each partition's start to the end
    it had when the reading began, decoded in batches; counts what it read."""

    def __init__(
        self, settings: ReportingSettings, *, batch_size: int, registry: EventRegistry
    ) -> None:
        self._settings = settings
        self._batch_size = batch_size
        self._registry = registry
        self._models: dict[str, type[EventData]] = {
            topic_name(model.event_type, settings.topic_namespace): model for model in PROJECTED
        }
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            **KafkaSecurity().aiokafka_options(),
        )
        self.read = self.undecodable = 0
        self.by_topic: Counter[str] = Counter()

    async def batches(self) -> AsyncIterator[list[Decoded]]:
        consumer = self._consumer
        await consumer.start()
        partitions = await topic_partitions(self._settings.kafka_bootstrap_servers, self._models)
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        batch: list[Decoded] = []
        while remaining:
            records = await consumer.getmany(
                *remaining, timeout_ms=1000, max_records=self._batch_size - len(batch)
            )
            for tp, messages in records.items():
                model = self._models[tp.topic]
                for message in messages:
                    self.read += 1
                    item = read_record(record_of(message), model, self._registry)
                    if isinstance(item, Delivered):
                        batch.append((item.envelope, item.event))
                        self.by_topic[tp.topic.removeprefix(self._settings.topic_namespace)] += 1
                    else:
                        self.undecodable += 1  # the live consumer dead-lettered it already
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if len(batch) >= self._batch_size or not remaining:
                yield batch
                batch = []

    async def stop(self) -> None:
        await self._consumer.stop()


async def rebuild(settings: ReportingSettings, *, batch_size: int = BATCH) -> Rebuilt:
    started = time.perf_counter()
    runtime = build_runtime(settings)
    retained = RetainedEvents(settings, batch_size=batch_size, registry=runtime.registry)
    store = MongoReportingStore(runtime.client, runtime.db, runtime.outbox)
    try:
        applied = await handlers.rebuild(
            retained.batches(),
            read_model_store=store,
            unit_of_work=store.unit_of_work,
            clock=runtime.clock,
        )
    finally:
        await retained.stop()
        await runtime.client.close()
    return Rebuilt(
        retained.read,
        applied,
        retained.undecodable,
        time.perf_counter() - started,
        dict(retained.by_topic),
    )


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    settings = ReportingSettings()
    result = asyncio.run(rebuild(settings))
    print(
        f"replayed {result.read} events ({result.applied} applied,"
        f" {result.undecodable} undecodable) in {result.seconds:.1f}s"
        f" = {result.read / max(result.seconds, 1e-9):,.0f} events/s"
    )
    for topic, count in sorted(result.by_topic.items()):
        print(f"  {topic}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
