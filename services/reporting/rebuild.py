"""``python -m services.reporting.rebuild``: drop the read models and replay the retained events.

The figures are a function of the events alone, so replaying every retained event from the
start of each topic gives the same figures again: after a projection bug is fixed, or when
a new measure needs history. The running service may stay up: every event is applied once,
whichever of the two gets to it first.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from services.reporting.app import PROJECTED, Reporting
from services.reporting.settings import ReportingSettings
from shared.events import EventData, RawEvent, UndecodableEvent, decode
from shared.idempotency import PROCESSED_EVENTS
from shared.kafka import topic_partitions
from shared.kafka_security import KafkaSecurity
from shared.runtime import build_runtime

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class Rebuilt:
    read: int
    applied: int
    undecodable: int
    seconds: float
    by_topic: dict[str, int]


async def rebuild(settings: ReportingSettings, *, batch_size: int = BATCH) -> Rebuilt:
    started = time.perf_counter()
    runtime = build_runtime(settings)
    reporting = Reporting(runtime, settings)
    models = {runtime.topic(model.event_type): model for model in PROJECTED}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        **KafkaSecurity().aiokafka_options(),
    )
    read = applied = undecodable = 0
    by_topic: Counter[str] = Counter()
    try:
        await reporting.store.drop_read_models()
        await runtime.db.drop_collection(PROCESSED_EVENTS)
        await reporting.store.ensure_indexes()
        await consumer.start()
        partitions = await topic_partitions(settings.kafka_bootstrap_servers, models)
        if partitions:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            remaining = {tp for tp in partitions if ends[tp] > 0}
            while remaining:
                records = await consumer.getmany(
                    *remaining, timeout_ms=1000, max_records=batch_size
                )
                batch: list[tuple[RawEvent, EventData]] = []
                for tp, messages in records.items():
                    for message in messages:
                        read += 1
                        try:
                            batch.append(decode(message.value, models[tp.topic]))
                            by_topic[tp.topic.removeprefix(settings.topic_namespace)] += 1
                        except UndecodableEvent:
                            undecodable += 1  # the live consumer dead-lettered it already
                if batch:
                    applied += await reporting.project_many(batch)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
        await runtime.client.close()
    return Rebuilt(read, applied, undecodable, time.perf_counter() - started, dict(by_topic))


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
