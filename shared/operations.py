"""Operators' commands: list and replay dead letters, republish the outboxes.

    python -m shared.operations dead-letters [--service allocation] [--limit 20]
    python -m shared.operations replay <dead letter id>... [--service allocation]
    python -m shared.operations purge <dead letter id>... [--service allocation]
    python -m shared.operations republish [--service referral] [--since 2026-11-20T00:00Z]

They read the same environment as the services (``MONGODB_URI``, ``KAFKA_BOOTSTRAP_SERVERS``,
``EARLYHELP_DATABASE_PREFIX``, ``EARLYHELP_TOPIC_NAMESPACE``, and the dead-letter secret
``EARLYHELP_DEAD_LETTER_KEY`` or ``EARLYHELP_DEAD_LETTER_KEY_FILE``). None of them shows what
a dead letter said: reading that is for caseworkers, with a reason, over HTTP.

- A dead letter is replayed by publishing its original bytes, key and headers to the topic
  it came from once the cause is fixed. Every consumer group of that topic sees it again;
  those that processed it before recognise its id and change nothing.
- ``republish`` marks the outboxes' sent records (kept for seven days) unsent, so each
  service's relay publishes them again, in their original order. It is for disaster
  recovery: consumers catch up after a broker lost its data (a cluster rebuilt without
  its disks, topics deleted by mistake); their processed-event records keep the repeats
  from taking effect. An ordinary broker restart needs nothing: topics are durable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.clock import utc_now
from shared.dead_letters import DeadLetters, UnknownDeadLetter, dead_letter_sealer, replay_headers
from shared.kafka_security import KafkaSecurity
from shared.mongo import MongoClient, create_mongo_client
from shared.outbox import OUTBOX, Outbox
from shared.settings import ServiceSettings

SERVICES = ("referral", "allocation", "audit", "reporting")


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: str
    service: str
    topic: str


class Operations:
    def __init__(self, settings: ServiceSettings, client: MongoClient) -> None:
        self._settings = settings
        self._client = client
        self._sealer = dead_letter_sealer(settings)

    def _db(self, service: str) -> Any:
        return self._client[f"{self._settings.database_prefix}{service}"]

    def _letters(self, service: str) -> DeadLetters:
        db = self._db(service)
        return DeadLetters(
            self._client,
            db,
            Outbox(db, source="/earlyhelp/operations", topic_namespace="", clock=utc_now),
            consumer_group=service,
            clock=utc_now,
            sealer=self._sealer,
            retention=timedelta(days=self._settings.dead_letter_retention_days),
        )

    async def dead_letters(self, services: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """The newest dead letters of each service, newest first overall."""
        found: list[dict[str, Any]] = []
        for service in services:
            letters, _ = await self._letters(service).recent(limit)
            found.extend({"service": service, **letter} for letter in letters)
        found.sort(key=lambda letter: str(letter["failed_at"]), reverse=True)
        return found[:limit]

    async def _find(self, dead_letter_id: str, services: Sequence[str]) -> tuple[str, DeadLetters]:
        for service in services:
            letters = self._letters(service)
            try:
                await letters.get(dead_letter_id)
            except UnknownDeadLetter:
                continue
            return service, letters
        raise UnknownDeadLetter(f"no dead letter {dead_letter_id!r} in {', '.join(services)}")

    async def replay(self, ids: Sequence[str], services: Sequence[str]) -> list[Replayed]:
        """Publish each dead letter's original record again, and note when it was replayed."""
        found = [
            (dead_letter_id, *await self._find(dead_letter_id, services)) for dead_letter_id in ids
        ]
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **KafkaSecurity().aiokafka_options(),
        )
        await producer.start()
        replayed = []
        try:
            for dead_letter_id, service, letters in found:
                _, original = await letters.original(dead_letter_id)
                await producer.send_and_wait(
                    original.topic,
                    original.value,
                    key=original.key,
                    headers=replay_headers(original, dead_letter_id),
                )
                await letters.mark_replayed(dead_letter_id, utc_now())
                replayed.append(Replayed(dead_letter_id, service, original.topic))
        finally:
            await producer.stop()
        return replayed

    async def purge(self, ids: Sequence[str], services: Sequence[str]) -> int:
        """Purge dead letters that are no longer wanted; how many went."""
        purged = 0
        for dead_letter_id in ids:
            _, letters = await self._find(dead_letter_id, services)
            purged += await letters.purge([dead_letter_id])
        return purged

    async def republish(self, services: Sequence[str], since: datetime | None) -> dict[str, int]:
        """Mark sent outbox records unsent again; how many per service."""
        query: dict[str, Any] = {"sent_at": {"$ne": None}}
        if since is not None:
            query["staged_at"] = {"$gte": since}
        counts = {}
        for service in services:
            result = await self._db(service)[OUTBOX].update_many(query, {"$set": {"sent_at": None}})
            counts[service] = result.modified_count
        return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.operations", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("dead-letters", help="list the newest dead letters")
    listing.add_argument("--limit", type=int, default=20)
    replay = commands.add_parser("replay", help="publish dead letters again after a fix")
    replay.add_argument("ids", nargs="+", metavar="ID")
    purge = commands.add_parser("purge", help="purge dead letters no longer wanted")
    purge.add_argument("ids", nargs="+", metavar="ID")
    republish = commands.add_parser("republish", help="publish the outboxes again")
    republish.add_argument(
        "--since", type=datetime.fromisoformat, help="only records staged since (ISO 8601)"
    )
    for command in (listing, replay, purge, republish):
        command.add_argument("--service", choices=SERVICES, action="append")
    arguments = parser.parse_args(argv)
    services = arguments.service or list(SERVICES)
    return asyncio.run(_run(arguments, services))


async def _run(arguments: argparse.Namespace, services: list[str]) -> int:
    settings = ServiceSettings()
    client = create_mongo_client(settings.mongodb_uri, app_name="operations")
    operations = Operations(settings, client)
    try:
        if arguments.command == "dead-letters":
            for letter in await operations.dead_letters(services, arguments.limit):
                print(
                    f"{letter['failed_at']}  {letter['service']:<10} {letter['dead_letter_id']}\n"
                    f"    {letter['error_type']}: {letter['error_code']}"
                    f" {' '.join(letter['fields'])}".rstrip()
                )
        elif arguments.command == "replay":
            try:
                for done in await operations.replay(arguments.ids, services):
                    print(f"replayed {done.dead_letter_id} to {done.topic}")
            except UnknownDeadLetter as error:
                print(error, file=sys.stderr)
                return 1
        elif arguments.command == "purge":
            try:
                print(f"purged {await operations.purge(arguments.ids, services)} dead letter(s)")
            except UnknownDeadLetter as error:
                print(error, file=sys.stderr)
                return 1
        else:
            counts = await operations.republish(services, arguments.since)
            for service, count in counts.items():
                print(f"{service}: {count} records to publish again")
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
