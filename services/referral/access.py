"""Who may use the front door's API, and the record of every look at a family's data.

Personal data (names, dates of birth, identifiers, addresses) lives only in this service.
Reading it is for casework roles, needs a stated reason, and leaves a record: who, when,
which family, what and why. Administrators run the service (keys, erasure, retention) but
do not read families' details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from shared.auth import (
    ADMIN_ONLY,
    CASEWORK,
    EVERY_ROLE,
    PARTNER,
    Policy,
    Principal,
    Rule,
    current_principal,
)
from shared.mongo import Database

CATALOGUE = Rule(EVERY_ROLE)
PERSONAL_DATA = Rule(CASEWORK)

POLICY: Policy = {
    ("POST", "/referrals"): PARTNER,
    ("GET", "/referrals/{referral_id}"): PERSONAL_DATA,
    ("GET", "/rejections/{rejection_id}"): PERSONAL_DATA,
    ("GET", "/routes"): CATALOGUE,
    ("GET", "/districts"): CATALOGUE,
    ("GET", "/directory/services"): CATALOGUE,
    ("GET", "/partner-keys"): ADMIN_ONLY,
    ("POST", "/partner-keys"): ADMIN_ONLY,
    ("DELETE", "/partner-keys/{key_id}"): ADMIN_ONLY,
    ("GET", "/access-log"): ADMIN_ONLY,
    ("POST", "/families/{family_id}/erasure"): ADMIN_ONLY,
    ("GET", "/retention/review"): ADMIN_ONLY,
    ("GET", "/refusals"): ADMIN_ONLY,
    ("GET", "/dead-letters"): ADMIN_ONLY,
}

REASON_MIN, REASON_MAX = 5, 500


class AccessRecord(BaseModel):
    at: datetime = Field(description="When.")
    sub: str = Field(description="Who: the token's subject.")
    role: str = Field(description="Their role.")
    action: str = Field(description="What, e.g. read_referral, erase_family.")
    family_id: str | None = Field(description="Which family (none for an unmatched rejection).")
    resource: str = Field(description="The record looked at or changed.")
    reason: str = Field(description="Why, as the caller stated it.")


class AccessLog:
    """The ``access_log`` collection: written before personal data leaves the service."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._log = db["access_log"]
        self._clock = clock

    async def ensure_indexes(self) -> None:
        await self._log.create_index([("family_id", 1), ("at", -1)])

    async def record(
        self,
        principal: Principal | str,
        *,
        action: str,
        family_id: str | None,
        resource: str,
        reason: str,
        role: str | None = None,
    ) -> None:
        sub = principal.sub if isinstance(principal, Principal) else principal
        await self._log.insert_one(
            {
                "at": self._clock(),
                "sub": sub,
                "role": principal.role.value if isinstance(principal, Principal) else role,
                "action": action,
                "family_id": family_id,
                "resource": resource,
                "reason": reason,
            }
        )

    async def find(self, family_id: str | None, sub: str | None, limit: int) -> list[AccessRecord]:
        filters = {name: value for name, value in (("family_id", family_id), ("sub", sub)) if value}
        found = await self._log.find(filters, {"_id": 0}).sort("at", -1).to_list(limit)
        return [AccessRecord.model_validate(document) for document in found]


@dataclass(frozen=True)
class Access:
    """A caseworker's look at a family's data, and why: recorded before the data is sent."""

    principal: Principal
    reason: str
    log: AccessLog

    async def record(self, action: str, *, family_id: str | None, resource: str) -> None:
        await self.log.record(
            self.principal,
            action=action,
            family_id=family_id,
            resource=resource,
            reason=self.reason,
        )


def add_access_log(app: FastAPI, db: Database, clock: Callable[[], datetime]) -> AccessLog:
    """``GET /access-log`` for administrators, and the log ``PersonalData`` records in."""
    log = AccessLog(db, clock)
    app.state.access_log = log

    @app.get("/access-log", tags=["access"], summary="Who looked at a family's data, and why")
    async def access_log(
        family_id: Annotated[str | None, Query(description="Only this family.")] = None,
        sub: Annotated[str | None, Query(description="Only this member of staff.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[AccessRecord]:
        return await log.find(family_id, sub, limit)

    return log


def personal_data_access(
    request: Request,
    reason: Annotated[
        str | None, Query(description="Why you need this family's data (recorded).")
    ] = None,
    x_access_reason: Annotated[
        str | None, Header(description="Why, when not given as ?reason= (recorded).")
    ] = None,
) -> Access:
    """The caller and their stated reason (``reason`` or ``X-Access-Reason``)."""
    principal = current_principal(request)
    stated = (reason or x_access_reason or "").strip()
    if not REASON_MIN <= len(stated) <= REASON_MAX:
        raise HTTPException(
            400,
            "say why you need this family's data: ?reason= or X-Access-Reason, "
            f"{REASON_MIN}-{REASON_MAX} characters; it is recorded",
        )
    log: AccessLog = request.app.state.access_log
    return Access(principal, stated, log)


PersonalData = Annotated[Access, Depends(personal_data_access)]
