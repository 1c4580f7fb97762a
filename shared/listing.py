"""Lists read a page at a time, whatever the number of records kept.

A list that only grows (dead letters, the access log, refusals, partner keys, cases) hands
each record a position as it is written, and files it in the bucket of ``PER_BUCKET``
positions the position falls in (MongoDB's bucket pattern). A page, newest first, is then a
read of a few buckets by one field's equality, on MongoDB or on a server that scans
ranges; the cursor is the position to go on from. Positions are taken outside any
transaction, so writers never conflict over them; a write that is rolled back leaves a gap
a page steps over.

Lists in another order (the queue by band, audits by month) read their own buckets and name
their place by its fields (``join_cursor``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query, Request, Response
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

if TYPE_CHECKING:
    from shared.mongo import Database, Session

Document = dict[str, Any]

LIST_POSITIONS = "list_positions"
"""Per list, the next position to hand out (``_id`` is the list's name)."""
PER_BUCKET = 100
LISTING_CLAIM = timedelta(minutes=10)
"""How long a replica listing records holds its claim: another takes over after it dies."""
SCAN_LIMIT = 2_000
"""Records a filtered page looks through at most (and buckets, ``SCAN_LIMIT / per_bucket``)
before answering with what it found: a rare match comes a few pages at a time, each fast,
rather than one slow page."""
POSITION, BUCKET = "list_position", "list_bucket"
UNLISTED = {POSITION: 0, BUCKET: 0}
"""A projection of records without their places in a list."""


@dataclass(frozen=True)
class BucketedList:
    """One newest-first list over a collection: its positions, buckets and pages."""

    name: str
    positions: str = LIST_POSITIONS
    position_field: str = POSITION
    bucket_field: str = BUCKET
    per_bucket: int = PER_BUCKET

    def fields(self, position: int) -> Document:
        """What a record stores to be found in the list at ``position``."""
        return {
            self.position_field: position,
            self.bucket_field: f"{self.name}|{position // self.per_bucket}",
        }

    async def take(self, db: Database, count: int = 1) -> int:
        """The first of ``count`` new positions, taken at once."""
        taken = await db[self.positions].find_one_and_update(
            {"_id": self.name},
            {"$inc": {"next": count}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert taken is not None, "an upsert returns the document"
        return int(taken["next"]) - count

    async def listed(self, db: Database, document: Document) -> Document:
        """``document`` with its place at the head of the list."""
        return {**document, **self.fields(await self.take(db))}

    async def page(
        self,
        db: Database,
        collection: str,
        limit: int,
        *,
        before: int | None = None,
        keep: Callable[[Document], bool] | None = None,
        projection: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> tuple[list[Document], int | None]:
        """Up to ``limit`` records newest first, from position ``before`` down (the newest
        when None), those ``keep`` refuses skipped; and the position to go on from, or None
        at the end of the list."""
        head = await db[self.positions].find_one({"_id": self.name}, session=session)
        newest = -1 if head is None else int(head["next"]) - 1
        # A cursor past the head (one made up) starts at the head, not buckets no one filled.
        before = newest if before is None else min(before, newest)
        page: list[Document] = []
        examined = buckets = 0
        while (
            before >= 0
            and len(page) < limit
            and examined < SCAN_LIMIT
            and buckets < SCAN_LIMIT // self.per_bucket
        ):
            number = before // self.per_bucket
            buckets += 1
            found = (
                await db[collection]
                .find({self.bucket_field: f"{self.name}|{number}"}, projection, session=session)
                .to_list()
            )
            found.sort(key=lambda record: int(record[self.position_field]), reverse=True)
            for record in found:
                if record[self.position_field] > before:
                    continue
                examined += 1
                before = int(record[self.position_field]) - 1
                if keep is None or keep(record):
                    page.append(record)
                    if len(page) == limit:
                        break
            else:
                before = number * self.per_bucket - 1
        return page, (before if before >= 0 else None)

    async def list_existing(
        self, db: Database, collection: str, oldest_first: str, *, now: datetime | None = None
    ) -> int:
        """Give the records stored without a place (before the list was kept, or by a
        replica of an older version) their places, oldest first by ``oldest_first``: how
        many. Run at each start; one replica at a time lists, under a claim that lapses if
        it dies, so two starting together leave neither gaps nor a scrambled order."""
        # Equality on the missing bucket: an index look-up, so a start costs nothing once
        # every record is listed.
        unlisted = await db[collection].find({self.bucket_field: None}, {oldest_first: 1}).to_list()
        if not unlisted:
            return 0
        at = now or datetime.now(UTC)
        claim = f"{self.name}|listing"
        try:
            await db[self.positions].update_one(
                {"_id": claim, "until": {"$lt": at}},
                {"$set": {"until": at + LISTING_CLAIM}},
                upsert=True,
            )
        except DuplicateKeyError:
            return 0  # another replica is listing them
        try:
            unlisted = await (
                db[collection].find({self.bucket_field: None}, {oldest_first: 1}).to_list()
            )
            unlisted.sort(key=lambda record: (str(record.get(oldest_first)), str(record["_id"])))
            first = await self.take(db, len(unlisted)) if unlisted else 0
            updates = [
                UpdateOne({"_id": record["_id"]}, {"$set": self.fields(first + index)})
                for index, record in enumerate(unlisted)
            ]
            for start in range(0, len(updates), 1000):
                await db[collection].bulk_write(updates[start : start + 1000], ordered=False)
        finally:
            await db[self.positions].delete_one({"_id": claim})
        return len(unlisted)

    async def ensure_index(self, db: Database, collection: str) -> None:
        await db[collection].create_index(self.bucket_field)


def unlisted(record: Document, names: Sequence[str] = (POSITION, BUCKET)) -> Document:
    """A record as an answer shows it: without its place in a list."""
    return {name: value for name, value in record.items() if name not in names}


# ---------------------------------------------------------------------------------------------
# Over HTTP

PositionCursor = Annotated[
    int | None,
    Query(
        ge=0,
        le=999_999_999_999,
        description="Where the page starts, from the previous page's `Link` header.",
    ),
]
NEXT_PAGE = (
    ' A page that is not the last carries a `Link` header to the next (`rel="next"`) naming'
    " its `cursor`; a filtered page may hold fewer than `limit` and still have a next."
)
"""Said in every paginated route's description."""


def link_next(request: Request, response: Response, cursor: int | str | None) -> None:
    """Name the next page in ``Link`` (RFC 8288) by its cursor, while there is one;
    relative, so that it holds behind a proxy that adds a host or a path prefix."""
    if cursor is not None:
        following = request.url.include_query_params(cursor=str(cursor)).query
        response.headers["Link"] = f'<?{following}>; rel="next"'


CURSOR_SEPARATOR = "~"
"""Between the parts of a cursor that names a place by several fields (no id holds one)."""
ANY_PART = "[^~]{1,120}"
"""A cursor's part that is an id or a name."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cursor_query(pattern: str) -> Any:
    """A cursor naming a place by several fields, as a query parameter matching
    ``pattern``: every string it matches names a place (perhaps one no record holds), so a
    cursor is never refused for what it says, only for its shape, like any parameter."""
    return Query(
        pattern=pattern,
        max_length=400,
        description="Where the page starts, from the previous page's `Link` header.",
    )


def join_cursor(*parts: object) -> str:
    return CURSOR_SEPARATOR.join(str(part) for part in parts)


def split_cursor(cursor: str) -> list[str]:
    return cursor.split(CURSOR_SEPARATOR)


def micros(at: datetime) -> int:
    """``at`` in whole microseconds since 1970, for a cursor."""
    return (at - EPOCH) // timedelta(microseconds=1)


def from_micros(count: int) -> datetime:
    return EPOCH + timedelta(microseconds=count)
