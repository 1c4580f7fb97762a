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

from aiokafka import AIOKafkaConsumer, TopicPartition

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
"""Events decoded at a time: the fold holds the facts, not the events."""


@dataclass(frozen=True)
class Rebuilt:
    read: int
    applied: int
    undecodable: int
    seconds: float
    by_topic: dict[str, int]


class RetainedEvents:
    """Every event retained on the projected topics, from each partition's start to the end
    it had when first asked, decoded in batches, as often as asked; counts what the first
    reading read."""

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
            # An assigned partition's first position is reset in the background; to the
            # start, so it cannot land at the end after the seek and read nothing.
            auto_offset_reset="earliest",
            **KafkaSecurity().aiokafka_options(),
        )
        self._ends: dict[TopicPartition, int] | None = None
        self._starts: dict[TopicPartition, int] = {}
        self._readings = 0
        self.read = self.undecodable = 0
        self.by_topic: Counter[str] = Counter()

    async def _log(self) -> dict[TopicPartition, int]:
        """Each partition's end, fixed when first asked: later events are the live
        projection's."""
        if self._ends is None:
            await self._consumer.start()
            bootstrap = self._settings.kafka_bootstrap_servers
            partitions = await topic_partitions(bootstrap, self._models)
            if not partitions:
                self._ends = {}
                return self._ends
            # Assigned first, so the consumer's metadata knows the partitions' leaders:
            # asked before, the offsets wait out a refresh (0.7 s here).
            self._consumer.assign(partitions)
            self._ends = await self._consumer.end_offsets(partitions)
            self._starts = await self._consumer.beginning_offsets(partitions)
        return self._ends

    async def count(self) -> int:
        ends = await self._log()
        return sum(end - self._starts.get(tp, 0) for tp, end in ends.items())

    async def batches(self) -> AsyncIterator[list[Decoded]]:
        ends = await self._log()
        self._readings += 1
        first = self._readings == 1
        consumer = self._consumer
        remaining = {tp for tp, end in ends.items() if end > self._starts.get(tp, 0)}
        if remaining:
            await consumer.seek_to_beginning(*remaining)
        batch: list[Decoded] = []
        while remaining:
            records = await consumer.getmany(
                *remaining, timeout_ms=1000, max_records=self._batch_size - len(batch)
            )
            for tp, messages in records.items():
                model = self._models[tp.topic]
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue  # after the end the log had: the live projection's
                    item = read_record(record_of(message), model, self._registry)
                    if isinstance(item, Delivered):
                        batch.append((item.envelope, item.event))
                    if first:
                        self._counted(tp.topic, item)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if len(batch) >= self._batch_size or not remaining:
                yield batch
                batch = []

    def _counted(self, topic: str, item: object) -> None:
        self.read += 1
        if isinstance(item, Delivered):
            self.by_topic[topic.removeprefix(self._settings.topic_namespace)] += 1
        else:
            self.undecodable += 1  # the live consumer dead-lettered it already

    async def stop(self) -> None:
        await self._consumer.stop()


async def rebuild(settings: ReportingSettings, *, batch_size: int = BATCH) -> Rebuilt:
    started = time.perf_counter()
    runtime = build_runtime(settings)
    retained = RetainedEvents(settings, batch_size=batch_size, registry=runtime.registry)
    store = MongoReportingStore(runtime.client, runtime.db, runtime.outbox)
    try:
        applied = await handlers.rebuild(
            retained,
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
