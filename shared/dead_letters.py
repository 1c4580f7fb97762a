"""Records a consumer gave up on, kept so that nothing is lost and nothing leaks.

A dead letter's original bytes are a partner's submission or an event, so they hold a
family's details. They are kept sealed (AES-GCM, ``shared.sealing``) with what went wrong in
full; in the clear are only what operators need to list, replay and purge letters: where the
record came from, its size and SHA-256, the kind of error and the fields it named (never
their values), and the family, when it can be known, so that erasure can find its letters.
The notice on ``<topic>.dlq`` carries the same, and a reference to the stored letter.

Letters are kept for a set time (``dead_letter_retention_days``) and then purged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import Binary
from pydantic import BaseModel, Field

from shared.events import RawEvent, UndecodableEvent
from shared.listing import BucketedList, unlisted
from shared.mongo import Database, MongoClient, Session, in_transaction
from shared.outbox import Outbox, OutgoingMessage
from shared.sealing import Sealer
from shared.secrets import read_secret
from shared.settings import ServiceSettings
from shared.topics import dead_letter_topic

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
SEALED_PURPOSE = "earlyhelp dead letters"
"""The key of sealed letters is derived from the secret for this purpose alone."""
LETTERS = BucketedList(DEAD_LETTERS)
"""The letters, newest first, a page at a time."""
HANDLER_FAILED = "handler_failed"
"""The error code of a record that was read but whose handling kept failing."""


def dead_letter_sealer(settings: ServiceSettings) -> Sealer:
    """The sealer of dead letters; a service without its secret does not start."""
    secret = read_secret(
        settings.dead_letter_key,
        settings.dead_letter_key_file,
        variable="EARLYHELP_DEAD_LETTER_KEY",
    )
    return Sealer(secret, purpose=SEALED_PURPOSE)


class UnknownDeadLetter(LookupError):
    """No dead letter has that id (never was, purged or erased)."""


class DeadLetterNotice(BaseModel):
    """A record a consumer gave up on: where it came from and why, never what it said.

    Published on ``<topic>.dlq``; the letter itself, sealed, stays in the consumer's
    service, to be replayed, purged, or read with a reason by those who may.
    """

    dead_letter_id: str = Field(description="The stored letter, in the consumer's service.")
    service: str = Field(description="The consumer group that gave up on the record.")
    topic: str = Field(description="Where the record was read.")
    partition: int = Field(description="The record's partition of that topic.")
    offset: int = Field(description="The record's offset in that partition.")
    error_type: str = Field(description="The kind of exception, e.g. UndecodableEvent.")
    error_code: str = Field(
        description="What was wrong, as a stable code (``handler_failed`` when the record was"
        " read but its handling kept failing)."
    )
    fields: list[str] = Field(
        default_factory=list, description="Dotted paths of the fields at fault; no values."
    )
    attempts: int = Field(description="Tries before giving up.")
    failed_at: datetime = Field(description="When the consumer gave up on it.")
    size: int = Field(description="Bytes of the original record.")
    sha256: str = Field(description="SHA-256 of the original record, hex.")
    event_type: str | None = Field(default=None, description="When the envelope was readable.")
    event_id: str | None = Field(default=None, description="When the envelope was readable.")
    family_id: str | None = Field(
        default=None, description="The family the record was about, when it could be known."
    )


class DeadLetterView(DeadLetterNotice):
    """A stored letter as administrators see it: its notice, and when it was replayed."""

    replayed_at: list[datetime] = Field(default_factory=list)


class OriginalView(BaseModel):
    """A letter's original record, for a caseworker who stated why (the look is recorded)."""

    dead_letter_id: str
    topic: str
    key: str | None = Field(description="The record's key, as text.")
    headers: dict[str, str]
    value_base64: str = Field(description="The record's bytes, exactly as they came.")
    value_text: str | None = Field(description="The bytes as text, when they are UTF-8.")
    error: str = Field(description="The error in full, as the consumer saw it.")


@dataclass(frozen=True)
class Original:
    """A dead letter's original record, opened."""

    topic: str
    key: bytes | None
    headers: dict[str, str]
    value: bytes
    error: str
    traceback: str


@dataclass(frozen=True)
class Failure:
    """What the consumer knows of a record it gives up on."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    error: BaseException
    attempts: int
    envelope: RawEvent | None = None
    family_id: str | None = None

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def dead_letter_id_for(consumer_group: str, failure: Failure) -> str:
    """One letter per consumer group and record, and an id that fits in a URL's path."""
    return f"{consumer_group}:{failure.topic}:{failure.partition}:{failure.offset}"


def error_code(error: BaseException) -> str:
    return error.code if isinstance(error, UndecodableEvent) else HANDLER_FAILED


def fields_at_fault(error: BaseException) -> list[str]:
    """The fields a validation error names, without the values it quotes."""
    validation = error.validation if isinstance(error, UndecodableEvent) else None
    if validation is None:
        return []
    return sorted({".".join(map(str, problem["loc"])) for problem in validation.errors()})


def family_of(envelope: RawEvent | None) -> str | None:
    """The family an envelope's data names, if it names one."""
    if envelope is None:
        return None
    family_id = envelope.data.get("family_id") if isinstance(envelope.data, dict) else None
    return family_id if isinstance(family_id, str) and family_id else None


class DeadLetters:
    """A service's dead letters: recorded with their notice, listed, opened, purged."""

    def __init__(
        self,
        client: MongoClient,
        db: Database,
        outbox: Outbox,
        *,
        consumer_group: str,
        clock: Callable[[], datetime],
        sealer: Sealer,
        retention: timedelta,
    ) -> None:
        self._client = client
        self._db = db
        self._collection = db[DEAD_LETTERS]
        self._outbox = outbox
        self._group = consumer_group
        self._clock = clock
        self._sealer = sealer
        self.retention = retention

    async def ensure_indexes(self) -> None:
        await self._collection.create_index("failed_at")
        await self._collection.create_index("family_id")
        await LETTERS.ensure_index(self._db, DEAD_LETTERS)

    async def list_existing(self) -> int:
        """Give letters stored before they were listed their places, oldest first."""
        return await LETTERS.list_existing(self._db, DEAD_LETTERS, "failed_at")

    async def seal_legacy(self) -> int:
        """Seal letters stored before letters were sealed (their bytes and error were kept
        in the clear), so an upgraded service holds none; how many were sealed."""
        sealed = 0
        async for old in self._collection.find({"sealed": {"$exists": False}}):
            opened = {
                "key": base64.b64encode(old["key"].encode()).decode() if old.get("key") else None,
                "headers": old.get("headers") or {},
                "value": old.get("original_base64", ""),
                "error": old.get("error", ""),
                "traceback": old.get("traceback", ""),
            }
            failed_at = old.get("failed_at")
            if isinstance(failed_at, str):
                failed_at = datetime.fromisoformat(failed_at)
            await self._collection.replace_one(
                {"_id": old["_id"], "sealed": {"$exists": False}},
                {
                    "service": old.get("consumer_group", self._group),
                    "topic": old["topic"],
                    "partition": old["partition"],
                    "offset": old["offset"],
                    "error_type": old.get("error_type", "unknown"),
                    "error_code": "unreadable" if old.get("undecodable") else HANDLER_FAILED,
                    "fields": [],
                    "attempts": old.get("attempts", 0),
                    "failed_at": failed_at or self._clock(),
                    "size": old.get("original_size", 0),
                    "sha256": old.get("original_sha256", ""),
                    "sealed": Binary(
                        self._sealer.seal(json.dumps(opened).encode(), context=old["_id"])
                    ),
                },
            )
            sealed += 1
        if sealed:
            log.info("sealed %d dead letter(s) stored in the clear", sealed)
        return sealed

    async def record(self, failure: Failure) -> str:
        """Store the sealed letter and stage its notice; the same record twice gives one."""
        dead_letter_id = dead_letter_id_for(self._group, failure)
        notice = DeadLetterNotice(
            dead_letter_id=dead_letter_id,
            service=self._group,
            topic=failure.topic,
            partition=failure.partition,
            offset=failure.offset,
            error_type=type(failure.error).__name__,
            error_code=error_code(failure.error),
            fields=fields_at_fault(failure.error),
            attempts=failure.attempts,
            failed_at=self._clock(),
            size=len(failure.value),
            sha256=hashlib.sha256(failure.value).hexdigest(),
            event_type=failure.envelope.type if failure.envelope else None,
            event_id=failure.envelope.id if failure.envelope else None,
            family_id=failure.family_id or family_of(failure.envelope),
        )
        sealed = self._sealer.seal(
            json.dumps(
                {
                    "key": base64.b64encode(failure.key).decode() if failure.key else None,
                    "headers": failure.headers,
                    "value": base64.b64encode(failure.value).decode(),
                    "error": f"{type(failure.error).__name__}: {failure.error}",
                    "traceback": "".join(traceback.format_exception(failure.error))[-4000:],
                }
            ).encode(),
            context=dead_letter_id,
        )
        document = await LETTERS.listed(
            self._db, {**notice.model_dump(exclude={"dead_letter_id"}), "sealed": Binary(sealed)}
        )

        async def store(session: Session) -> None:
            await self._collection.update_one(
                {"_id": dead_letter_id}, {"$setOnInsert": document}, upsert=True, session=session
            )
            await self._outbox.stage(
                OutgoingMessage(
                    id=f"dlq|{dead_letter_id}",
                    topic=dead_letter_topic(failure.topic),
                    key=failure.key,
                    value=notice.model_dump_json().encode(),
                    headers={
                        "content-type": "application/json",
                        "x-dead-letter-error": notice.error_code,
                    },
                ),
                session=session,
            )

        await in_transaction(self._client, store)
        log.warning(
            "dead-lettered %s after %d attempt(s): %s (%s)",
            failure.position,
            failure.attempts,
            notice.error_type,
            notice.error_code,
        )
        return dead_letter_id

    async def recent(
        self, limit: int, *, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of letters, newest first, as operators see them (nothing of what they
        said); and the cursor of the next page, None after the last."""
        page, following = await LETTERS.page(
            self._db, DEAD_LETTERS, limit, before=before, projection={"sealed": 0}
        )
        return [_listed(document) for document in page], following

    async def get(self, dead_letter_id: str) -> dict[str, Any]:
        found = await self._collection.find_one({"_id": dead_letter_id}, {"sealed": 0})
        if found is None:
            raise UnknownDeadLetter(f"no dead letter {dead_letter_id!r}")
        return _listed(found)

    async def original(self, dead_letter_id: str) -> tuple[dict[str, Any], Original]:
        """The letter and its original record, opened (for replay, or for a reader whose
        look is recorded by the caller first)."""
        found = await self._collection.find_one({"_id": dead_letter_id})
        if found is None:
            raise UnknownDeadLetter(f"no dead letter {dead_letter_id!r}")
        opened = json.loads(self._sealer.open(bytes(found.pop("sealed")), context=dead_letter_id))
        return _listed(found), Original(
            topic=found["topic"],
            key=base64.b64decode(opened["key"]) if opened["key"] else None,
            headers=opened["headers"],
            value=base64.b64decode(opened["value"]),
            error=opened["error"],
            traceback=opened["traceback"],
        )

    async def mark_replayed(self, dead_letter_id: str, at: datetime) -> None:
        await self._collection.update_one({"_id": dead_letter_id}, {"$push": {"replayed_at": at}})

    async def purge(self, dead_letter_ids: Sequence[str]) -> int:
        result = await self._collection.delete_many({"_id": {"$in": list(dead_letter_ids)}})
        return result.deleted_count

    async def purge_expired(self) -> int:
        """Purge the letters older than the retention period; how many went."""
        cutoff = self._clock() - self.retention
        result = await self._collection.delete_many({"failed_at": {"$lt": cutoff}})
        if result.deleted_count:
            log.info("purged %d dead letter(s) older than %s", result.deleted_count, cutoff)
        return result.deleted_count

    async def erase_families(
        self, family_ids: Collection[str], *, session: Session | None = None
    ) -> int:
        """Erase these families' letters, as their other records are erased, in one write."""
        result = await self._collection.delete_many(
            {"family_id": {"$in": sorted(family_ids)}}, session=session
        )
        return result.deleted_count


def replay_headers(original: Original, dead_letter_id: str) -> list[tuple[str, bytes]]:
    """The original's headers, and which letter it is a replay of."""
    headers = {**original.headers, "x-replay-of": dead_letter_id}
    return [(name, value.encode()) for name, value in headers.items()]


def _listed(document: dict[str, Any]) -> dict[str, Any]:
    document = unlisted(document)
    document.pop("sealed", None)
    return {"dead_letter_id": document.pop("_id"), **document}
