"""Partner keys: which partner system may submit on which routes over HTTP. The rules alone.

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral.domain import ROUTE_CATALOGUE

KEY_PREFIX = "ehpk_"
KNOWN_ROUTES = frozenset(route.id for route in ROUTE_CATALOGUE)


@dataclass(frozen=True)
class PartnerKey:
    """What a key allows: who it speaks for and on which routes."""

    key_id: str
    partner_id: str
    routes: frozenset[str]
    revoked: bool = False


@dataclass(frozen=True)
class PartnerKeyRecord:
    """A key as stored: its hash (never the key), what it allows, and who made and revoked
    it when."""

    key_id: str
    hash: str
    partner_id: str
    routes: tuple[str, ...]
    name: str | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def key(self) -> PartnerKey:
        return PartnerKey(
            key_id=self.key_id,
            partner_id=self.partner_id,
            routes=frozenset(self.routes),
            revoked=self.revoked_at is not None,
        )


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def unknown_routes(routes: Iterable[str]) -> list[str]:
    """The routes a key is asked for that do not exist: a key for them would be a typo."""
    return sorted(set(routes) - KNOWN_ROUTES)


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
