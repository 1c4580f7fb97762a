"""Partner keys: which partner system may submit on which routes over HTTP.

A key is 32 random bytes (256 bits), shown once when made and stored only as its SHA-256.
A slow password hash (PBKDF2, scrypt) exists to make guessing a low-entropy secret from
its hash expensive; nobody can guess 256 random bits, so a fast hash is as safe here and
keeps every request cheap. A key names one partner and the routes it may use; a request
for another partner or another route is refused, and every refusal is recorded.

Partners publishing on ``referral-submitted`` are not checked here: the broker's ACLs
(SASL user per partner, write access to that topic only) decide who may publish.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from services.referral.domain import ROUTE_CATALOGUE
from shared.auth import Refusals, SignedIn
from shared.mongo import Database, Document

KEY_HEADER = "x-partner-key"
KEY_PREFIX = "ehpk_"
KNOWN_ROUTES = frozenset(route.id for route in ROUTE_CATALOGUE)


@dataclass(frozen=True)
class PartnerKey:
    key_id: str
    partner_id: str
    routes: frozenset[str]
    revoked: bool = False


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def submission_refusal(key: PartnerKey, document: Any) -> str | None:
    """Why this key may not send this submission, or None. Only what the key rules on is
    checked; anything else wrong with the request is the validator's to answer."""
    if not isinstance(document, dict):
        return None
    claimed = document.get("partner_id")
    if isinstance(claimed, str) and claimed != key.partner_id:
        return f"this key belongs to partner {key.partner_id!r}, not {claimed!r}"
    route = document.get("route")
    if isinstance(route, str) and route in KNOWN_ROUTES and route not in key.routes:
        allowed = ", ".join(sorted(key.routes))
        return (
            f"partner {key.partner_id!r} may not submit on route {route!r}; its routes: {allowed}"
        )
    return None


class NewPartnerKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partner_id: str = Field(
        min_length=1, max_length=200, description="The partner whose system will use the key."
    )
    routes: list[str] = Field(
        min_length=1, description="Routes the partner may submit on (see GET /routes)."
    )
    name: str | None = Field(
        default=None, max_length=200, description="What the key is for, e.g. the system's name."
    )


class PartnerKeyView(BaseModel):
    key_id: str = Field(description="The key's id (not the key).")
    partner_id: str = Field(description="The partner the key belongs to.")
    routes: list[str] = Field(description="Routes it may submit on.")
    name: str | None = Field(description="What the key is for.")
    created_at: datetime = Field(description="When it was made.")
    created_by: str = Field(description="The administrator who made it.")
    revoked_at: datetime | None = Field(description="When it was revoked; refused from then.")
    revoked_by: str | None = Field(description="Who revoked it.")


class IssuedPartnerKey(PartnerKeyView):
    key: str = Field(description="The key itself: shown this once, send it as X-Partner-Key.")


class MongoPartnerKeys:
    """The ``partner_keys`` collection: hashes only, never a key."""

    def __init__(self, db: Database) -> None:
        self._keys = db["partner_keys"]

    async def ensure_indexes(self) -> None:
        await self._keys.create_index("hash", unique=True)

    async def add(self, document: Document) -> None:
        await self._keys.insert_one(document)

    async def by_hash(self, digest: str) -> Document | None:
        return await self._keys.find_one({"hash": digest})

    async def all(self) -> list[Document]:
        return await self._keys.find({}).sort("created_at", 1).to_list()

    async def revoke(self, key_id: str, *, by: str, now: datetime) -> Document | None:
        await self._keys.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": now, "revoked_by": by}}
        )
        return await self._keys.find_one({"_id": key_id})


class PartnerGate:
    """Checks the X-Partner-Key of ``POST /referrals``; refusals are recorded, then raised."""

    def __init__(self, keys: MongoPartnerKeys, refusals: Refusals) -> None:
        self._keys = keys
        self._refusals = refusals

    async def authenticate(self, request: Request) -> PartnerKey:
        given = request.headers.get(KEY_HEADER)
        if not given:
            await self._refuse(request, 401, "send your partner key as X-Partner-Key")
        found = await self._keys.by_hash(key_hash(given))
        if found is None:
            await self._refuse(request, 401, "unknown partner key")
        key = _partner_key(found)
        if key.revoked:
            await self._refuse(request, 401, "this partner key has been revoked", key)
        return key

    async def authorise(self, request: Request, key: PartnerKey, document: Any) -> None:
        reason = submission_refusal(key, document)
        if reason is not None:
            await self._refuse(request, 403, reason, key)

    async def _refuse(
        self, request: Request, status: int, reason: str, key: PartnerKey | None = None
    ) -> NoReturn:
        await self._refusals.record(
            method=request.method,
            path=request.url.path,
            status=status,
            reason=reason,
            client=request.client.host if request.client else None,
            partner_id=key.partner_id if key else None,
            key_id=key.key_id if key else None,
        )
        raise HTTPException(status, reason, headers={"WWW-Authenticate": "X-Partner-Key"})


def add_partner_keys(
    app: FastAPI, db: Database, refusals: Refusals, clock: Callable[[], datetime]
) -> tuple[MongoPartnerKeys, PartnerGate]:
    """The administrators' API for partner keys; returns the gate ``POST /referrals`` uses."""
    keys = MongoPartnerKeys(db)

    @app.post(
        "/partner-keys",
        status_code=201,
        tags=["partners"],
        summary="Issue a partner key (shown once)",
    )
    async def issue_key(request: NewPartnerKey, admin: SignedIn) -> IssuedPartnerKey:
        unknown = sorted(set(request.routes) - KNOWN_ROUTES)
        if unknown:
            raise HTTPException(422, f"unknown routes {unknown}; see GET /routes")
        key = new_key()
        document = {
            "_id": f"pk-{uuid.uuid4().hex[:16]}",
            "hash": key_hash(key),
            "partner_id": request.partner_id,
            "routes": sorted(set(request.routes)),
            "name": request.name,
            "created_at": clock(),
            "created_by": admin.sub,
            "revoked_at": None,
            "revoked_by": None,
        }
        await keys.add(document)
        return IssuedPartnerKey(**_view(document).model_dump(), key=key)

    @app.get("/partner-keys", tags=["partners"], summary="Partner keys, without the keys")
    async def list_keys() -> list[PartnerKeyView]:
        return [_view(document) for document in await keys.all()]

    @app.delete("/partner-keys/{key_id}", tags=["partners"], summary="Revoke a partner key")
    async def revoke_key(
        key_id: Annotated[str, Path(max_length=40)], admin: SignedIn
    ) -> PartnerKeyView:
        found = await keys.revoke(key_id, by=admin.sub, now=clock())
        if found is None:
            raise HTTPException(404, f"no partner key {key_id}")
        return _view(found)

    return keys, PartnerGate(keys, refusals)


def _partner_key(document: Document) -> PartnerKey:
    return PartnerKey(
        key_id=document["_id"],
        partner_id=document["partner_id"],
        routes=frozenset(document["routes"]),
        revoked=document.get("revoked_at") is not None,
    )


def _view(document: Document) -> PartnerKeyView:
    return PartnerKeyView.model_validate({**document, "key_id": document["_id"]})
