"""The record of every look at a family's data, in the service that holds it.

Reading a family's data is for casework roles, needs a stated reason, and is recorded
before the data leaves: who, when, which family, what and why. The referral service keeps
its families' records; every service keeps its dead letters, whose originals are read the
same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request
from pymongo import DESCENDING

from shared.auth import current_principal
from shared.listing import POSITION, BucketedList

if TYPE_CHECKING:
    from shared.mongo import Database, Session

ACCESS_LOG = "access_log"
LOOKS = BucketedList(ACCESS_LOG)
"""The log, newest first, a page at a time."""
REASON_MIN, REASON_MAX = 5, 500
"""Characters of the reason a caseworker must state to read a family's data."""


@dataclass(frozen=True)
class Reader:
    """Who is looking, and why, as they stated it."""

    sub: str
    role: str
    reason: str


@dataclass(frozen=True)
class AccessEntry:
    """One look at (or change to) a family's data: who, when, what and why."""

    at: datetime
    sub: str
    role: str
    action: str
    family_id: str | None
    resource: str
    reason: str

    @classmethod
    def of(
        cls, reader: Reader, action: str, family_id: str | None, resource: str, now: datetime
    ) -> AccessEntry:
        return cls(now, reader.sub, reader.role, action, family_id, resource, reader.reason)


ENTRY_FIELDS = tuple(field.name for field in fields(AccessEntry))


def stated_reader(
    request: Request,
    reason: Annotated[
        str | None,
        Query(
            min_length=REASON_MIN,
            max_length=REASON_MAX,
            description="Why you need this family's data (recorded).",
        ),
    ] = None,
    x_access_reason: Annotated[
        str | None,
        Header(
            min_length=REASON_MIN,
            max_length=REASON_MAX,
            description="Why, when not given as ?reason= (recorded).",
        ),
    ] = None,
) -> Reader:
    """The caller and their stated reason (``reason`` or ``X-Access-Reason``)."""
    principal = current_principal(request)
    stated = (reason or x_access_reason or "").strip()
    if not REASON_MIN <= len(stated) <= REASON_MAX:
        raise HTTPException(
            400,
            "say why you need this family's data: ?reason= or X-Access-Reason, "
            f"{REASON_MIN}-{REASON_MAX} characters; it is recorded",
        )
    return Reader(principal.sub, principal.role.value, stated)


PersonalData = Annotated[Reader, Depends(stated_reader)]


async def record_access(
    db: Database, entry: AccessEntry, *, session: Session | None = None
) -> None:
    await db[ACCESS_LOG].insert_one(await LOOKS.listed(db, asdict(entry)), session=session)


async def access_page(
    db: Database,
    *,
    family_id: str | None,
    sub: str | None,
    limit: int,
    before: int | None,
    session: Session | None = None,
) -> tuple[list[AccessEntry], int | None]:
    """A page of the log, newest first, of one family or member of staff when given; and the
    cursor of the next page, None after the last. A family's are read by its id (MongoDB
    walks the ``family_pages`` index from the cursor down)."""
    if family_id is None:
        page, following = await LOOKS.page(
            db,
            ACCESS_LOG,
            limit,
            before=before,
            keep=None if sub is None else (lambda entry: entry.get("sub") == sub),
            session=session,
        )
    else:
        query: dict[str, Any] = {"family_id": family_id}
        if sub is not None:
            query["sub"] = sub
        if before is not None:
            query[POSITION] = {"$lte": before}
        found = (
            await db[ACCESS_LOG]
            .find(query, session=session)
            .sort([(POSITION, DESCENDING), ("at", DESCENDING)])
            .limit(limit + 1)
            .to_list()
        )
        page = found[:limit]
        more = len(found) > limit and POSITION in page[-1]
        following = int(page[-1][POSITION]) - 1 if more else None
    return [_entry(entry) for entry in page], following


def _entry(document: dict[str, Any]) -> AccessEntry:
    return AccessEntry(**{name: document[name] for name in ENTRY_FIELDS})


async def prepare_access_log(db: Database) -> None:
    """Index the log, and list the entries stored before it was kept as a list."""
    await db[ACCESS_LOG].create_index("family_id")
    await db[ACCESS_LOG].create_index([("family_id", 1), (POSITION, -1)], name="family_pages")
    await LOOKS.ensure_index(db, ACCESS_LOG)
    await LOOKS.list_existing(db, ACCESS_LOG, "at")
