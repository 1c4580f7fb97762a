"""Family ids that a migration replaced, and the ids they became.

Family ids were once derived from a child's details, so anyone who knew them could
recompute one. The migration (``python -m services.family_ids``) gives every such family a
random id and rewrites each service's records; each service keeps the old -> new table in
its own ``family_aliases``. Events already on the topics are durable and keep the old ids,
so a service reads every event through the table: a replay or a rebuild after the
migration finds the family under its new id, and no old id is written again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from pymongo import DeleteOne, ReplaceOne, UpdateMany, UpdateOne

from shared.mongo import Database

FAMILY_ALIASES = "family_aliases"
RENAME_BATCH = 500
"""Families renamed per bulk write of each collection."""


class FamilyAliases:
    """A service's table of old family ids; empty (and never read) unless it migrated."""

    def __init__(self, db: Database) -> None:
        self._collection = db[FAMILY_ALIASES]
        self._active = False

    async def load(self) -> None:
        """Look once, at start, whether there is anything to map."""
        self._active = await self._collection.estimated_document_count() > 0

    async def current(self, family_ids: Collection[str]) -> dict[str, str]:
        """The new id of each of ``family_ids`` that has one."""
        if not self._active or not family_ids:
            return {}
        found = self._collection.find({"_id": {"$in": sorted(family_ids)}})
        return {alias["_id"]: alias["family_id"] async for alias in found}

    async def record(self, renames: Mapping[str, str], *, at: datetime) -> None:
        """Keep ``renames`` (old -> new); recording one again changes nothing."""
        for batch in _batches(sorted(renames.items())):
            await self._collection.bulk_write(
                [
                    UpdateOne(
                        {"_id": old},
                        {"$setOnInsert": {"family_id": new, "renamed_at": at}},
                        upsert=True,
                    )
                    for old, new in batch
                ],
                ordered=False,
            )
        self._active = self._active or bool(renames)


async def rename_families(
    db: Database,
    renames: Mapping[str, str],
    *,
    fields: Mapping[str, str],
    keyed: Sequence[str] = (),
) -> None:
    """Rewrite old family ids as new ones in ``db``: in each collection's field of
    ``fields``, and as the ``_id`` of each collection in ``keyed``. Run again, it finds
    nothing left to change."""
    for batch in _batches(sorted(renames.items())):
        for collection, field in fields.items():
            await db[collection].bulk_write(
                [UpdateMany({field: old}, {"$set": {field: new}}) for old, new in batch],
                ordered=False,
            )
        for collection in keyed:
            found = db[collection].find({"_id": {"$in": [old for old, _ in batch]}})
            moves: list[ReplaceOne[dict[str, object]] | DeleteOne] = []
            new_of = dict(batch)
            async for document in found:
                new = new_of[document["_id"]]
                moves.append(ReplaceOne({"_id": new}, {**document, "_id": new}, upsert=True))
                moves.append(DeleteOne({"_id": document["_id"]}))
            if moves:
                await db[collection].bulk_write(moves, ordered=True)


def _batches(items: Sequence[tuple[str, str]]) -> list[Sequence[tuple[str, str]]]:
    return [items[start : start + RENAME_BATCH] for start in range(0, len(items), RENAME_BATCH)]
