"""The ceilings: how fast the broker and the database go on this machine with nothing on top.

The platform can go no faster than its broker and database, so its figures mean something
only beside theirs. Each ceiling is measured on fresh embedded servers with records and
documents the size of a real referral. Usage: ``python -m benchmarks.ceilings``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient, UpdateOne

from shared.embedded import (
    embedded_kafka,
    embedded_mongodb,
    free_port,
    mongodb_uri,
)
from shared.settings import DEFAULT_FETCH_MAX_WAIT_MS

ROOT = Path(__file__).resolve().parents[1]
REFERRAL: dict[str, Any] = json.loads((ROOT / "tests" / "fixtures" / "referral.json").read_text())


@dataclass(frozen=True)
class Ceilings:
    """Operations a second; latency in seconds."""

    record_bytes: int
    produce_per_s: float
    consume_per_s: float
    round_trip_s: float
    """Median of ``ROUND_TRIPS`` publish-to-consume round trips."""
    round_trip_p99_s: float
    insert_one_per_s: float
    insert_many_per_s: float
    bulk_upsert_per_s: float
    transaction_per_s: float

    def lines(self) -> list[str]:
        return [
            f"broker produce (acks=all, {self.record_bytes} B records)"
            f"  {self.produce_per_s:>9,.0f} records/s",
            f"broker consume                              {self.consume_per_s:>9,.0f} records/s",
            f"broker round trip, publish to consume       {self.round_trip_s * 1000:>9.1f} ms"
            f" median, {self.round_trip_p99_s * 1000:.1f} ms 99th percentile",
            f"database insert_one                         {self.insert_one_per_s:>9,.0f} docs/s",
            f"database insert_many (500 a batch)          {self.insert_many_per_s:>9,.0f} docs/s",
            f"database bulk upserts (500 a batch)         {self.bulk_upsert_per_s:>9,.0f} docs/s",
            f"database transaction of two inserts         {self.transaction_per_s:>9,.0f} /s",
        ]

    def database_bound(self, inserted: float, updated: float, transactions: float) -> float:
        """Submissions a second the database could take at most, were each to cost it
        ``inserted`` documents, ``updated`` documents (updates, upserts and deletes) and
        ``transactions``, each at its bare rate here and nothing else on the way."""
        seconds = (
            inserted / self.insert_many_per_s
            + updated / self.bulk_upsert_per_s
            + transactions / self.transaction_per_s
        )
        return 1 / seconds if seconds > 0 else float("inf")


def referral_record(number: int) -> bytes:
    """A ``referral-submitted`` event the size partners send."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/partners/ceiling",
            "type": "referral-submitted",
            "correlationid": f"ceiling-{number}",
            "schemaversion": 1,
            "data": {**REFERRAL, "submission_id": f"ceiling-{number}"},
        }
    ).encode()


async def _rate(count: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return count / (time.perf_counter() - started)


ROUND_TRIPS = 500


async def broker_ceilings(bootstrap: str, records: int) -> tuple[int, float, float, float, float]:
    """Produce and consume rates, and the median and 99th percentile round trip, with the
    producer and consumer settings the services use."""
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    values = [referral_record(number) for number in range(records)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")

        async def produce() -> None:
            sent = [await producer.send(topic, value) for value in values]
            await asyncio.gather(*sent)

        produce_rate = await _rate(records, produce)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=DEFAULT_FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        try:

            async def consume() -> None:
                seen = 0
                while seen < records + 1:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                    seen += sum(len(batch) for batch in batches.values())

            consume_rate = await _rate(records, consume)
            round_trips: list[float] = []
            for _ in range(ROUND_TRIPS):
                sent_at = time.perf_counter()
                await producer.send_and_wait(topic, b"ping")
                while not any((await consumer.getmany(timeout_ms=1000)).values()):
                    pass
                round_trips.append(time.perf_counter() - sent_at)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    round_trips.sort()
    median, p99 = round_trips[len(round_trips) // 2], round_trips[int(len(round_trips) * 0.99)]
    return len(values[0]), produce_rate, consume_rate, median, p99


async def database_ceilings(uri: str, documents: int) -> tuple[float, float, float, float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client["ceilings"]
        document = {**REFERRAL, "received_at": time.time()}
        singles = max(500, documents // 10)

        async def insert_one() -> None:
            for number in range(singles):
                await db["one"].insert_one({**document, "_id": number})

        async def insert_many() -> None:
            for start in range(0, documents, 500):
                await db["many"].insert_many(
                    [{**document, "_id": n} for n in range(start, min(documents, start + 500))]
                )

        async def bulk_upsert() -> None:
            for start in range(0, documents, 500):
                await db["upserts"].bulk_write(
                    [
                        UpdateOne({"_id": n}, {"$set": document}, upsert=True)
                        for n in range(start, min(documents, start + 500))
                    ]
                )

        transactions = max(200, documents // 40)

        async def transaction() -> None:
            for number in range(transactions):
                async with client.start_session() as session, await session.start_transaction():
                    await db["a"].insert_one({**document, "_id": number}, session=session)
                    await db["b"].insert_one({**document, "_id": number}, session=session)

        await db["warm-up"].insert_one({"_id": 0})
        return (
            await _rate(singles, insert_one),
            await _rate(documents, insert_many),
            await _rate(documents, bulk_upsert),
            await _rate(transactions, transaction),
        )
    finally:
        await client.close()


@contextmanager
def embedded_servers() -> Iterator[tuple[str, str]]:
    """A throwaway broker and database, as ``make run`` starts them."""
    with tempfile.TemporaryDirectory() as run_dir:
        kafka = embedded_kafka(free_port(), Path(run_dir))
        mongodb = embedded_mongodb(free_port(), Path(run_dir), Path(run_dir) / "mongodb")
        try:
            kafka.start()
            mongodb.start()
            yield kafka.bootstrap_servers, mongodb_uri(mongodb.port)
        finally:
            mongodb.stop()
            kafka.stop()


def measure(records: int = 20_000, documents: int = 20_000) -> Ceilings:
    with embedded_servers() as (bootstrap, uri):
        size, produce, consume, trip, trip_p99 = asyncio.run(broker_ceilings(bootstrap, records))
        one, many, upserts, transactions = asyncio.run(database_ceilings(uri, documents))
    return Ceilings(size, produce, consume, trip, trip_p99, one, many, upserts, transactions)


def main() -> None:
    ceilings = measure()
    print("\n".join(ceilings.lines()))
    print(json.dumps(asdict(ceilings)))


if __name__ == "__main__":
    main()
