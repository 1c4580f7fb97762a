"""The record of every look at a family's data, in the service that holds it.

Reading a family's data is for casework roles, needs a stated reason, and is recorded
before the data leaves: who, when, which family, what and why. The referral service keeps
its families' records; every service keeps its dead letters, whose originals are read the
same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, HTTPException, Query, Request

from shared.auth import current_principal

if TYPE_CHECKING:
    from shared.mongo import Database, Session

ACCESS_LOG = "access_log"
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
    await db[ACCESS_LOG].insert_one(asdict(entry), session=session)


async def ensure_access_log_indexes(db: Database) -> None:
    await db[ACCESS_LOG].create_index([("family_id", 1), ("at", -1)])
