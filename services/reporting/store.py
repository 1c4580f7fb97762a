"""MongoDB adapters of the reporting read models: the only module that touches the driver.

One fact per thing that happened, keyed by the thing's own id, and the figures as
aggregates addressed by id (see ``domain.py``): ``monthly_figures`` by ``month|district``,
``standing_figures`` by district. A batch reads the facts it changes by id, and writes the
changed facts and the net increments of the aggregates in the consumer's transaction, so a
report is a read of a few aggregates by id whatever the history, and no query here needs an
index other than ``_id``'s. A changed fact is written only over the revision it was read at,
so two transactions changing one fact cannot both count what it contributed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import InsertOne, ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.reporting import domain
from services.reporting.domain import (
    ALL_DISTRICTS,
    Fact,
    FactKey,
    Increment,
    MonthKey,
    MonthTotals,
)
from services.reporting.ports import DueSnapshot
from shared.events import EventData
from shared.idempotency import PROCESSED_EVENTS
from shared.mongo import BulkWrites, Database, Document, MongoClient, MongoUnitOfWork, Session
from shared.outbox import Outbox
from shared.unit_of_work import ConcurrentUpdate

REFERRALS = "referral_facts"
REJECTIONS = "rejection_facts"
ALLOCATIONS = "allocation_facts"
CASES = "case_facts"
CAPACITY = "capacity_facts"
AUDITS = "audit_facts"
FACTS = {
    domain.REFERRAL: REFERRALS,
    domain.REJECTION: REJECTIONS,
    domain.ALLOCATION: ALLOCATIONS,
    domain.CASE: CASES,
    domain.CAPACITY: CAPACITY,
    domain.AUDIT: AUDITS,
}
MONTHLY_FIGURES = "monthly_figures"
STANDING_FIGURES = "standing_figures"
AGGREGATES = {domain.MONTHLY: MONTHLY_FIGURES, domain.STANDING: STANDING_FIGURES}
SNAPSHOT_MARKS = "snapshot_marks"
"""Per month and district, how many projections changed its figures; written by projection only."""
SNAPSHOTS_PUBLISHED = "snapshots_published"
"""Per month and district, the last snapshot's version and the changes it covered; written by
the snapshots only. Two writers never share a document, so neither can undo the other's write."""
FAMILY_ID_FIELDS: dict[str, str] = {}
"""Reporting's facts name no family: its figures need none."""
FAMILY_KEYED: tuple[str, ...] = ()
READ_MODELS = (
    *FACTS.values(),
    *AGGREGATES.values(),
    SNAPSHOT_MARKS,
    SNAPSHOTS_PUBLISHED,
)
LOAD_CHUNK = 1_000
"""Facts a rebuild inserts a command."""
REVISION = "rev"
"""A fact's revision: a write over it names the one it read."""


class MongoProjections:
    """The facts, the aggregates and the snapshot marks, written in the caller's session
    (a transaction), or (without one) in bulk by a loader that is the only writer."""

    def __init__(self, db: Database, session: Session | None) -> None:
        self._db = db
        self._session = session

    async def project(self, events: Sequence[EventData], *, now: datetime) -> int:
        """Record the facts the events state, in order, add what they moved to the
        aggregates, and mark the figures they moved; how many events changed a fact."""
        keys = {key for data in events for key in domain.fact_keys(data)}
        known, revisions = await self._facts(keys)
        projection = domain.project(events, known)
        await self._write_facts(projection.facts, revisions)
        await self.add_up(projection.increments, projection.touched, now=now)
        return projection.changed_by

    async def add_up(
        self,
        increments: Mapping[Increment, int],
        touched: Iterable[MonthKey],
        *,
        now: datetime,
        as_new: bool = False,
    ) -> None:
        """The increments on the aggregates, and a change counted on each figure moved.
        ``as_new`` (a rebuild's, after the drop) inserts each aggregate whole, which costs
        far less than an increment of each of its counters, where none is stored yet."""
        grouped = _by_aggregate(increments)
        if as_new:
            for kind, collection in AGGREGATES.items():
                whole = [
                    {"_id": aggregate_id, **_nested(paths)}
                    for (of_kind, aggregate_id), paths in grouped.items()
                    if of_kind == kind
                ]
                stored = await self._insert_new(collection, whole)
                grouped = {
                    key: paths
                    for key, paths in grouped.items()
                    if key[0] != kind or key[1] in stored
                }
        writes = BulkWrites()
        for (kind, aggregate_id), paths in grouped.items():
            writes.update_one(AGGREGATES[kind], {"_id": aggregate_id}, {"$inc": paths}, upsert=True)
        for month, district in sorted(domain.marked(touched, now=now)):
            # Counted with $inc: the snapshots never write the mark, so a snapshot's commit
            # cannot undo the count.
            writes.update_one(
                SNAPSHOT_MARKS,
                {"_id": domain.month_id(month, district)},
                {"$set": {"month": month, "district": district}, "$inc": {"changes": 1}},
                upsert=True,
            )
        await writes.send(self._db, session=self._session)

    async def load(self, facts: Mapping[FactKey, Fact]) -> set[FactKey]:
        """``facts`` inserted as new (revision 1), a kind at a time; those already stored
        (by the live projection, meanwhile) are left and returned."""
        by_kind: dict[str, list[Document]] = defaultdict(list)
        for (kind, fact_id), fact in facts.items():
            by_kind[kind].append({"_id": fact_id, REVISION: 1, **fact})
        stored: set[FactKey] = set()
        for kind, documents in by_kind.items():
            stored |= {
                (kind, fact_id) for fact_id in await self._insert_new(FACTS[kind], documents)
            }
        return stored

    async def _insert_new(self, collection: str, documents: Sequence[Document]) -> set[str]:
        """``documents`` inserted a chunk at a time, unordered; the ids of those that were
        stored already, left as they are."""
        stored: set[str] = set()
        for start in range(0, len(documents), LOAD_CHUNK):
            chunk = documents[start : start + LOAD_CHUNK]
            try:
                await self._db[collection].insert_many(chunk, ordered=False, session=self._session)
            except BulkWriteError as error:
                errors = error.details.get("writeErrors", [])
                if any(each.get("code") != 11000 for each in errors):
                    raise
                stored |= {chunk[each["index"]]["_id"] for each in errors}
        return stored

    async def _facts(
        self, keys: Iterable[FactKey]
    ) -> tuple[dict[FactKey, Fact], dict[FactKey, int]]:
        """The stored facts among ``keys``, one query per kind, and each one's revision."""
        wanted: dict[str, list[str]] = defaultdict(list)
        for kind, fact_id in keys:
            wanted[kind].append(fact_id)
        facts: dict[FactKey, Fact] = {}
        revisions: dict[FactKey, int] = {}
        for kind, ids in wanted.items():
            found = self._db[FACTS[kind]].find({"_id": {"$in": ids}}, session=self._session)
            async for document in found:
                key = (kind, document.pop("_id"))
                revisions[key] = document.pop(REVISION, 0)
                facts[key] = document
        return facts, revisions

    async def _write_facts(self, facts: dict[FactKey, Fact], revisions: dict[FactKey, int]) -> None:
        """Each changed fact: inserted when new, else replaced over the revision it was
        read at. Another writer first leaves as ``ConcurrentUpdate``, to be tried again."""
        writes: dict[str, list[InsertOne[Document] | ReplaceOne[Document]]] = defaultdict(list)
        replaced: dict[str, int] = defaultdict(int)
        for key, fact in facts.items():
            kind, fact_id = key
            collection = FACTS[kind]
            if key not in revisions:
                writes[collection].append(InsertOne({"_id": fact_id, REVISION: 1, **fact}))
            else:
                revision = revisions[key]
                over = {"_id": fact_id, REVISION: revision} if revision else {"_id": fact_id}
                writes[collection].append(ReplaceOne(over, {REVISION: revision + 1, **fact}))
                replaced[collection] += 1
        for collection, operations in writes.items():
            try:
                result = await self._db[collection].bulk_write(
                    operations, ordered=False, session=self._session
                )
            except BulkWriteError as error:
                if all(each.get("code") == 11000 for each in error.details.get("writeErrors", [])):
                    raise ConcurrentUpdate(f"{collection}: a fact was added meanwhile") from error
                raise
            if result.matched_count != replaced[collection]:
                raise ConcurrentUpdate(f"{collection}: a fact changed meanwhile")


class MongoReadModels:
    """The aggregates as the reports read them, outside any transaction: by id only."""

    def __init__(self, db: Database) -> None:
        self._monthly = db[MONTHLY_FIGURES]
        self._standing = db[STANDING_FIGURES]

    async def ensure_indexes(self) -> None:
        """Nothing but ``_id``: every read here is by id."""

    async def totals(
        self, wanted: Sequence[tuple[str, str | None]], *, now: datetime
    ) -> list[MonthTotals]:
        month_ids = [
            domain.month_id(month, district or ALL_DISTRICTS) for month, district in wanted
        ]
        standing_ids = sorted({district or ALL_DISTRICTS for _, district in wanted})
        counters = await _by_id(self._monthly, month_ids)
        standing = await _by_id(self._standing, standing_ids)
        return [
            MonthTotals(
                month=month,
                district=district,
                now=now,
                counters=counters.get(month_id, {}),
                standing=standing.get(district or ALL_DISTRICTS, {}),
            )
            for (month, district), month_id in zip(wanted, month_ids, strict=True)
        ]

    async def months(self) -> list[str]:
        """Every month with a fact, ascending, for the dashboard's picker."""
        return await self._listed("months")

    async def districts(self) -> list[str]:
        return await self._listed("districts")

    async def _listed(self, name: str) -> list[str]:
        county = await self._standing.find_one({"_id": ALL_DISTRICTS}, {name: 1}) or {}
        return domain.listed(county.get(name))


async def _by_id(collection: Any, ids: Sequence[str]) -> dict[str, Document]:
    if not ids:
        return {}
    if len(ids) == 1:
        found = await collection.find_one({"_id": ids[0]})
        return {} if found is None else {found["_id"]: found}
    return {
        document["_id"]: document async for document in collection.find({"_id": {"$in": list(ids)}})
    }


def _by_aggregate(
    increments: Mapping[domain.Increment, int],
) -> dict[tuple[str, str], dict[str, int]]:
    grouped: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (kind, aggregate_id, path), count in sorted(increments.items()):
        grouped[(kind, aggregate_id)][path] = count
    return grouped


def _nested(paths: Mapping[str, int]) -> Document:
    """Counters by dotted path as the document ``$inc`` of them would make from nothing."""
    document: Document = {}
    for path, count in paths.items():
        *parents, name = path.split(".")
        level = document
        for parent in parents:
            level = level.setdefault(parent, {})
        level[name] = count
    return document


class MongoSnapshots:
    """Which figures changed since their last ``performance-snapshot``: the marks the
    projection counts, against the record of what each published snapshot covered."""

    def __init__(self, db: Database, session: Session | None) -> None:
        self._marks = db[SNAPSHOT_MARKS]
        self._published = db[SNAPSHOTS_PUBLISHED]
        self._session = session

    async def due(self, interval_s: float, *, now: datetime) -> list[DueSnapshot]:
        """Marks with changes no snapshot has covered, whose last snapshot is ``interval_s``
        old: each with ``changes`` as read now, before the figures are computed, so a
        change committed later is left for the next snapshot."""
        quiet_since = now - timedelta(seconds=interval_s)
        marks = await self._marks.find(session=self._session).to_list()
        published = {
            document["_id"]: document
            async for document in self._published.find(
                {"_id": {"$in": [m["_id"] for m in marks]}}, session=self._session
            )
        }
        due = []
        for mark in marks:
            last = published.get(mark["_id"])
            if last is None:
                # Marks written before the two were kept apart carry the last version.
                due.append(_due(mark, first=True, version=mark.get("version", 0)))
            elif mark.get("changes", 0) > last["changes"] and last["published_at"] <= quiet_since:
                due.append(_due(mark, first=False, version=last["version"]))
        return due

    async def claim(self, due: DueSnapshot, *, now: datetime) -> int | None:
        """Take a due snapshot (from ``due``) for publication: its version, or None when
        another replica took it first, the version it read having moved on.

        A first snapshot is an insert, so two replicas racing for it meet a
        ``DuplicateKeyError``, which ends the loser's transaction: it is left uncommitted.
        """
        version = due.version + 1
        claimed = {"version": version, "changes": due.changes, "published_at": now}
        if due.first:
            try:
                await self._published.insert_one({"_id": due.key, **claimed}, session=self._session)
            except DuplicateKeyError:
                return None
            return version
        taken = await self._published.find_one_and_update(
            {"_id": due.key, "version": due.version},
            {"$set": claimed},
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return None if taken is None else version


class MongoReportingUnitOfWork(MongoUnitOfWork):
    """The projection's, the snapshots' and the outbox's writes in one transaction: its own,
    or (given ``session``) the one that records the applied events."""

    projections: MongoProjections
    snapshots: MongoSnapshots

    def opened(self) -> None:
        self.projections = MongoProjections(self.db, self.session)
        self.snapshots = MongoSnapshots(self.db, self.session)


class MongoReportingStore:
    """Everything the reporting service keeps in its database, built once by the
    composition root: the read side outside any transaction, and units of work for the
    writes. It keeps no record of the events applied: applying one again changes nothing
    (see ``domain.project``)."""

    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox
        self.read_models = MongoReadModels(db)
        self.snapshots = MongoSnapshots(db, None)

    def unit_of_work(self, session: Session | None = None) -> MongoReportingUnitOfWork:
        """A unit of work of its own transaction, or (given ``session``) joined to that one."""
        return MongoReportingUnitOfWork(self._client, self._db, self._outbox, session=session)

    async def ensure_indexes(self) -> None:
        await self.read_models.ensure_indexes()

    async def fold_in_bulk(
        self, events: Sequence[EventData], *, now: datetime, chunk: int = 5_000
    ) -> None:
        """Project ``events`` outside any transaction and without recording them as applied,
        ``chunk`` at a time: for loading history that no consumer will deliver, while
        nothing else writes the read models."""
        projections = MongoProjections(self._db, None)
        for start in range(0, len(events), chunk):
            await projections.project(events[start : start + chunk], now=now)

    async def drop_all(self) -> None:
        for name in (*READ_MODELS, PROCESSED_EVENTS):  # the last kept by earlier versions
            await self._db.drop_collection(name)

    async def load(self, facts: Mapping[FactKey, Fact]) -> set[FactKey]:
        return await MongoProjections(self._db, None).load(facts)

    async def add_up(
        self, increments: Mapping[Increment, int], touched: Iterable[MonthKey], *, now: datetime
    ) -> None:
        await MongoProjections(self._db, None).add_up(increments, touched, now=now, as_new=True)


def _due(mark: Document, *, first: bool, version: int) -> DueSnapshot:
    return DueSnapshot(
        key=mark["_id"],
        month=mark["month"],
        district=mark["district"],
        changes=mark.get("changes", 0),
        version=version,
        first=first,
    )
