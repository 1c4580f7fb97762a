"""The districts' queues, kept so that every read and write is by ``_id``.

A queue is ordered by ``QueuePlace``: priority, then need, then the oldest referral, then
the case id. It is split into bands of one priority and need, each band's cases in one
document of ``queue_bands`` (oldest first), and each district has a summary in ``queues``
with every band's size and newest place. A new case is almost always the newest of its
band, so it is placed from the summary alone and appended to its band: its place is the
sizes of the bands ahead plus its band's. Only an older case (out of order, or a leaver's
case queued again) reads its band to find its place.

This is what keeps a referral's cost flat however long the queues grow, on a server that
answers only look-ups by id from an index (SecantusDB) as well as on MongoDB.

A ``QueueBook`` holds what one transaction read and changed; ``save`` writes it back in the
same transaction, one bulk write per collection.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from datetime import datetime
from typing import Any

from services.allocation.domain import QueuePlace
from shared.mongo import BulkWrites, Database, Document, Session

QUEUES = "queues"
QUEUE_BANDS = "queue_bands"

Band = tuple[int, int]
"""(priority, need rank): the part of a place that decides a case's band."""


class QueueBook:
    def __init__(self, db: Database, session: Session) -> None:
        self._db = db
        self._session = session
        self._sizes: dict[str, dict[Band, int]] = {}
        self._newest: dict[str, dict[Band, QueuePlace]] = {}
        self._loaded: dict[tuple[str, Band], list[QueuePlace]] = {}
        self._appended: dict[tuple[str, Band], list[QueuePlace]] = {}
        self._changed_districts: set[str] = set()

    async def read(self, districts: set[str]) -> None:
        """Read the summaries of ``districts`` not read yet, in one query."""
        wanted = sorted(districts - set(self._sizes))
        if not wanted:
            return
        found = self._db[QUEUES].find({"_id": {"$in": wanted}}, session=self._session)
        async for summary in found:
            sizes: dict[Band, int] = {}
            newest: dict[Band, QueuePlace] = {}
            for key, band in summary["bands"].items():
                sizes[_band_of(key)] = band["size"]
                if band.get("newest") is not None:
                    newest[_band_of(key)] = _place(band["newest"])
            self._sizes[summary["_id"]] = sizes
            self._newest[summary["_id"]] = newest
        for district in wanted:
            self._sizes.setdefault(district, {})
            self._newest.setdefault(district, {})

    async def waiting(self, district: str) -> int:
        await self.read({district})
        return sum(self._sizes[district].values())

    async def place_of(self, case: Document) -> int:
        """The queued case's place in its district's queue, 1 for next."""
        district, place = case["district"], place_of(case)
        await self.read({district})
        band = _band(place)
        entries = await self._band(district, band)
        return self._ahead(district, band) + bisect_left(entries, place) + 1

    async def enqueue(self, case: Document) -> int:
        """Put a just-queued case in its place; the place, 1 for next."""
        district, place = case["district"], place_of(case)
        await self.read({district})
        band = _band(place)
        sizes, newest = self._sizes[district], self._newest[district]
        if (district, band) not in self._loaded and (band not in newest or newest[band] < place):
            index = sizes.get(band, 0)
            self._appended.setdefault((district, band), []).append(place)
        else:
            entries = await self._band(district, band)
            index = bisect_left(entries, place)
            entries.insert(index, place)
        sizes[band] = sizes.get(band, 0) + 1
        newest[band] = max(place, newest.get(band, place))
        self._changed_districts.add(district)
        return self._ahead(district, band) + index + 1

    async def head(self, district: str) -> str | None:
        """The case id next in the district's queue, if any waits."""
        await self.read({district})
        for band in sorted(band for band, size in self._sizes[district].items() if size):
            entries = await self._band(district, band)
            if entries:
                return entries[0].case_id
        return None

    async def remove(self, case: Document) -> None:
        """Take a case out of its queue (allocated, or closed while waiting)."""
        district, place = case["district"], place_of(case)
        await self.read({district})
        band = _band(place)
        entries = await self._band(district, band)
        index = bisect_left(entries, place)
        if index < len(entries) and entries[index] == place:
            del entries[index]
            self._sizes[district][band] -= 1
            self._changed_districts.add(district)

    async def save(self) -> None:
        """Write what changed, in the book's transaction."""
        writes = BulkWrites()
        for (district, band), entries in self._loaded.items():
            writes.update_one(
                QUEUE_BANDS,
                {"_id": _band_id(district, band)},
                {"$set": {"entries": [_entry(place) for place in entries]}},
                upsert=True,
            )
        for (district, band), appended in self._appended.items():
            writes.update_one(
                QUEUE_BANDS,
                {"_id": _band_id(district, band)},
                {"$push": {"entries": {"$each": [_entry(place) for place in appended]}}},
                upsert=True,
            )
        for district in sorted(self._changed_districts):
            newest = self._newest[district]
            bands = {
                _band_key(band): {
                    "size": size,
                    "newest": _entry(newest[band]) if band in newest else None,
                }
                for band, size in self._sizes[district].items()
            }
            writes.update_one(QUEUES, {"_id": district}, {"$set": {"bands": bands}}, upsert=True)
        await writes.send(self._db, session=self._session)

    def _ahead(self, district: str, band: Band) -> int:
        return sum(size for other, size in self._sizes[district].items() if other < band)

    async def _band(self, district: str, band: Band) -> list[QueuePlace]:
        """The band's places in order, read once; appends made before are folded in."""
        key = (district, band)
        if key not in self._loaded:
            found = await self._db[QUEUE_BANDS].find_one(
                {"_id": _band_id(district, band)}, session=self._session
            )
            entries = [_place(entry) for entry in (found or {}).get("entries", [])]
            for place in self._appended.pop(key, []):
                insort(entries, place)
            self._loaded[key] = entries
        return self._loaded[key]


async def districts_waiting(db: Database) -> list[str]:
    """Every district with a case in its queue."""
    found = await db[QUEUES].find({}).to_list()
    return sorted(
        summary["_id"]
        for summary in found
        if any(band["size"] for band in summary["bands"].values())
    )


async def rebuild_queues(db: Database, queued: list[Document], session: Session) -> None:
    """Write the queues of ``queued`` (every open queued case) from nothing."""
    book = QueueBook(db, session)
    await book.read({case["district"] for case in queued})
    for case in sorted(queued, key=place_of):
        await book.enqueue(case)
    await book.save()


def place_of(case: Document) -> QueuePlace:
    return QueuePlace(
        case["priority"],
        case["need_rank"],
        _stored(case["referral_received_at"]),
        case["_id"],
    )


def _band(place: QueuePlace) -> Band:
    return (place.priority, place.need_rank)


def _band_key(band: Band) -> str:
    return f"{band[0]}|{band[1]}"


def _band_of(key: str) -> Band:
    priority, need_rank = key.split("|")
    return (int(priority), int(need_rank))


def _band_id(district: str, band: Band) -> str:
    return f"{district}|{_band_key(band)}"


def _entry(place: QueuePlace) -> dict[str, Any]:
    return {
        "priority": place.priority,
        "need_rank": place.need_rank,
        "referral_received_at": place.referral_received_at,
        "case_id": place.case_id,
    }


def _place(entry: Document) -> QueuePlace:
    return QueuePlace(
        entry["priority"],
        entry["need_rank"],
        _stored(entry["referral_received_at"]),
        entry["case_id"],
    )


def _stored(at: datetime) -> datetime:
    """``at`` as the database keeps it (to the millisecond), so places compare alike."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
