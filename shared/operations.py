"""Operators' commands: list and replay dead letters, republish the outboxes.

    python -m shared.operations dead-letters [--service allocation] [--limit 20]
    python -m shared.operations replay <dead letter id>... [--service allocation]
    python -m shared.operations republish [--service referral] [--since 2026-11-20T00:00Z]

They read the same environment as the services (``MONGODB_URI``, ``KAFKA_BOOTSTRAP_SERVERS``,
``EARLYHELP_DATABASE_PREFIX``, ``EARLYHELP_TOPIC_NAMESPACE``).

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
import base64
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.consumer import DEAD_LETTERS
from shared.kafka_security import KafkaSecurity
from shared.mongo import MongoClient, create_mongo_client
from shared.outbox import OUTBOX
from shared.settings import ServiceSettings

SERVICES = ("referral", "allocation", "audit", "reporting")


class UnknownDeadLetter(LookupError):
    pass


class NotReplayable(ValueError):
    """Only the head of an oversized message was kept: replaying it would publish a fragment."""


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: str
    service: str
    topic: str


class Operations:
    def __init__(self, settings: ServiceSettings, client: MongoClient) -> None:
        self._settings = settings
        self._client = client

    def _db(self, service: str) -> Any:
        return self._client[f"{self._settings.database_prefix}{service}"]

    async def dead_letters(self, services: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """The newest dead letters of each service, newest first overall."""
        found: list[dict[str, Any]] = []
        for service in services:
            cursor = (
                self._db(service)[DEAD_LETTERS]
                .find({}, {"traceback": 0, "original_base64": 0})
                .sort("failed_at", -1)
                .limit(limit)
            )
            found.extend(
                [{"service": service, "id": doc.pop("_id"), **doc} async for doc in cursor]
            )
        found.sort(key=lambda letter: str(letter["failed_at"]), reverse=True)
        return found[:limit]

    async def replay(self, ids: Sequence[str], services: Sequence[str]) -> list[Replayed]:
        """Publish each dead letter's original record again, and note when it was replayed."""
        letters = []
        for dead_letter_id in ids:
            for service in services:
                letter = await self._db(service)[DEAD_LETTERS].find_one({"_id": dead_letter_id})
                if letter is not None:
                    letters.append((service, letter))
                    break
            else:
                raise UnknownDeadLetter(
                    f"no dead letter {dead_letter_id!r} in {', '.join(services)}"
                )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **KafkaSecurity().aiokafka_options(),
        )
        await producer.start()
        replayed = []
        try:
            for service, letter in letters:
                headers = {**letter.get("headers", {}), "x-replay-of": letter["_id"]}
                await producer.send_and_wait(
                    letter["topic"],
                    base64.b64decode(letter["original_base64"]),
                    key=letter["key"].encode() if letter.get("key") else None,
                    headers=[(name, str(value).encode()) for name, value in headers.items()],
                )
                await self._db(service)[DEAD_LETTERS].update_one(
                    {"_id": letter["_id"]},
                    {"$push": {"replayed_at": datetime.now().astimezone().isoformat()}},
                )
                replayed.append(Replayed(letter["_id"], service, letter["topic"]))
        finally:
            await producer.stop()
        return replayed

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
    republish = commands.add_parser("republish", help="publish the outboxes again")
    republish.add_argument(
        "--since", type=datetime.fromisoformat, help="only records staged since (ISO 8601)"
    )
    for command in (listing, replay, republish):
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
                    f"{letter['failed_at']}  {letter['service']:<10} {letter['id']}\n"
                    f"    {letter['error']}"
                )
        elif arguments.command == "replay":
            try:
                for done in await operations.replay(arguments.ids, services):
                    print(f"replayed {done.dead_letter_id} to {done.topic}")
            except (UnknownDeadLetter, NotReplayable) as error:
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
