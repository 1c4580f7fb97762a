"""Who may call what: staff bearer tokens, each service's access policy, recorded refusals.

Staff carry a signed token (JWT, HMAC-SHA256) with ``sub``, ``role``, ``districts`` and
``exp``. Each service declares, route by route, which roles may call it; a route missing
from its policy is for administrators only, so an endpoint added later is never open by
accident. The operations endpoints (health, readiness, metrics, API documents) stay open:
they hold no personal data and orchestrators call them without credentials.

A council's identity provider plugs in by issuing these tokens (a token-exchange step or
a gateway that signs them with the shared secret after its own sign-in), or by replacing
``verify_token`` with a check of its own tokens (e.g. RS256 against its published keys):
nothing else here depends on how the token was made.

``python -m shared.auth token --role administrator --sub admin`` mints a token with the
configured secret, for local runs and operators.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.clock import utc_now
from shared.listing import NEXT_PAGE, BucketedList, PositionCursor, link_next
from shared.mongo import Database
from shared.problems import document_problems, problem
from shared.secrets import SecretMissing, new_secret, read_secret
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ALL_DISTRICTS = "*"

OPEN_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/metrics",
        "/asyncapi.json",
        "/openapi.json",
        "/docs",
    }
)


class Role(StrEnum):
    PRACTITIONER = "practitioner"
    TEAM_MANAGER = "team_manager"
    HEAD_OF_SERVICE = "head_of_service"
    PERFORMANCE_ANALYST = "performance_analyst"
    ADMINISTRATOR = "administrator"


EVERY_ROLE = frozenset(Role)
CASEWORK = frozenset({Role.PRACTITIONER, Role.TEAM_MANAGER, Role.HEAD_OF_SERVICE})
MANAGERS = frozenset({Role.TEAM_MANAGER, Role.HEAD_OF_SERVICE})
REPORTING = frozenset({Role.PERFORMANCE_ANALYST, Role.HEAD_OF_SERVICE})
ADMINISTRATOR = frozenset({Role.ADMINISTRATOR})


class AuthError(SecretMissing):
    """The service has no usable signing secret."""


class InvalidCredentials(Exception):
    """A token that is missing, malformed, badly signed or expired."""


@dataclass(frozen=True)
class Principal:
    """A signed-in member of staff, as their token says."""

    sub: str
    role: Role
    districts: frozenset[str] = frozenset()

    def covers(self, districts: Iterable[str]) -> bool:
        return ALL_DISTRICTS in self.districts or set(districts) <= self.districts


@dataclass(frozen=True)
class Rule:
    """Who may call one route. ``partner``: the endpoint checks a partner key itself;
    ``by_district``: the figures asked for must be within the caller's districts."""

    roles: frozenset[Role] = frozenset()
    open: bool = False
    partner: bool = False
    by_district: bool = False


OPEN = Rule(open=True)
PARTNER = Rule(partner=True)
ADMIN_ONLY = Rule(ADMINISTRATOR)


def allow(*roles: Iterable[Role] | Role, by_district: bool = False) -> Rule:
    chosen: set[Role] = set()
    for item in roles:
        chosen |= {item} if isinstance(item, Role) else set(item)
    return Rule(frozenset(chosen), by_district=by_district)


Policy = Mapping[tuple[str, str], Rule]
"""(HTTP method, route path as declared) -> rule."""


# ---------------------------------------------------------------------------------------------
# Secrets and tokens


def signing_secret(settings: ServiceSettings) -> bytes:
    """The HMAC secret, from ``EARLYHELP_AUTH_SECRET`` or the file ``EARLYHELP_AUTH_SECRET_FILE``
    names (a mounted secret); never from the repository. Without one a service will not start:
    failing closed beats running with a guessable key."""
    try:
        return read_secret(
            settings.auth_secret, settings.auth_secret_file, variable="EARLYHELP_AUTH_SECRET"
        )
    except SecretMissing as missing:
        raise AuthError(str(missing)) from None


def mint_token(
    secret: bytes,
    *,
    sub: str,
    role: Role,
    districts: Iterable[str] = (),
    ttl: timedelta = timedelta(hours=8),
    now: datetime | None = None,
) -> str:
    issued = now or utc_now()
    claims = {
        "sub": sub,
        "role": role.value,
        "districts": sorted(districts),
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: bytes, token: str) -> Principal:
    """The token's principal; only HS256 is accepted, so an ``alg: none`` or a public-key
    confusion cannot pass, and ``exp`` is required."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidCredentials("the token has expired") from None
    except jwt.InvalidTokenError as error:
        raise InvalidCredentials(f"invalid token: {error}") from None
    try:
        role = Role(claims["role"])
    except ValueError:
        raise InvalidCredentials(f"unknown role {claims['role']!r}") from None
    districts = claims.get("districts") or []
    if not isinstance(districts, list) or not all(isinstance(d, str) for d in districts):
        raise InvalidCredentials("districts must be a list of district names")
    return Principal(sub=str(claims["sub"]), role=role, districts=frozenset(districts))


# ---------------------------------------------------------------------------------------------
# Decisions


def refusal(rule: Rule, principal: Principal) -> str | None:
    """Why ``principal`` may not call a route under ``rule``, or None when they may."""
    if rule.open:
        return None
    if principal.role not in rule.roles:
        allowed = ", ".join(sorted(role.value for role in rule.roles)) or "no staff role"
        return f"role {principal.role.value} may not do this; allowed: {allowed}"
    return None


def district_refusal(
    principal: Principal, district: str | None, known_districts: Iterable[str]
) -> str | None:
    """A district's figures need that district (or "*"); county-wide ones need every district."""
    if district is not None:
        if principal.covers([district]):
            return None
        yours = ", ".join(sorted(principal.districts)) or "none"
        return f"your districts ({yours}) do not include {district}"
    known = set(known_districts)
    if ALL_DISTRICTS in principal.districts or (known and known <= principal.districts):
        return None
    return 'county-wide figures need every district (or "*"); ask for one of yours with ?district='


# ---------------------------------------------------------------------------------------------
# Recorded refusals


class RefusalView(BaseModel):
    at: datetime = Field(description="When it was refused.")
    service: str = Field(description="Which service refused it.")
    method: str = Field(description="HTTP method.")
    path: str = Field(description="The path asked for.")
    status: int = Field(description="401 no or bad credentials; 403 not allowed.")
    reason: str = Field(description="Why it was refused.")
    sub: str | None = Field(default=None, description="The token's subject, when there was one.")
    role: str | None = Field(default=None, description="The token's role, when there was one.")
    partner_id: str | None = Field(default=None, description="The partner a key belongs to.")
    key_id: str | None = Field(default=None, description="The partner key's id (not the key).")
    client: str | None = Field(default=None, description="The caller's address.")


REFUSALS = "refusals"
REFUSED = BucketedList(REFUSALS)
"""Refusals, newest first, a page at a time."""


class Refusals:
    """Every refused request, in the service's own ``refusals`` collection, for administrators.

    Holds who and what was refused, never a request body, so it holds no personal data.
    """

    def __init__(self, db: Database, *, service: str, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._refusals = db[REFUSALS]
        self._service = service
        self._clock = clock

    async def prepare(self, _: object = None) -> None:
        """Index the list, and list refusals stored before it was kept."""
        await REFUSED.ensure_index(self._db, REFUSALS)
        await REFUSED.list_existing(self._db, REFUSALS, "at")

    async def record(
        self,
        *,
        method: str,
        path: str,
        status: int,
        reason: str,
        principal: Principal | None = None,
        client: str | None = None,
        **details: str | None,
    ) -> None:
        document: dict[str, Any] = {
            "at": self._clock(),
            "service": self._service,
            "method": method,
            "path": path,
            "status": status,
            "reason": reason,
            "sub": principal.sub if principal else None,
            "role": principal.role.value if principal else None,
            "client": client,
            **details,
        }
        try:
            await self._refusals.insert_one(await REFUSED.listed(self._db, document))
        except Exception:  # the refusal stands even when it cannot be recorded
            log.exception("could not record a refusal of %s %s", method, path)

    async def recent(
        self, limit: int, *, before: int | None = None, **filters: str
    ) -> tuple[list[RefusalView], int | None]:
        """A page of refusals, newest first, of one caller when ``filters`` name one; and
        the cursor of the next page, None after the last."""
        page, following = await REFUSED.page(
            self._db,
            REFUSALS,
            limit,
            before=before,
            keep=lambda refusal: all(refusal.get(name) == value for name, value in filters.items()),
        )
        return [RefusalView.model_validate(refusal) for refusal in page], following


# ---------------------------------------------------------------------------------------------
# The gate in front of a service's routes


class AccessControl:
    """ASGI middleware: finds the route a request is for, checks its rule, and refuses with
    401 (no or bad credentials) or 403 (not allowed), saying why, and recording it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: FastAPI,
        policy: Policy,
        secret: bytes,
        refusals: Refusals,
        known_districts: Callable[[], Awaitable[Iterable[str]]] | None = None,
    ) -> None:
        self._app = app
        self._service = service
        self._policy = policy
        self._secret = secret
        self._refusals = refusals
        self._known_districts = known_districts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rule = self._rule_for(scope)
        if rule is None or rule.open or rule.partner:
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        principal: Principal | None = None
        try:
            principal = self._principal(request)
        except InvalidCredentials as error:
            await self._refuse(scope, receive, send, request, 401, str(error), None)
            return
        reason = refusal(rule, principal)
        if reason is None and rule.by_district:
            known = await self._known_districts() if self._known_districts else ()
            reason = district_refusal(principal, request.query_params.get("district"), known)
        if reason is not None:
            await self._refuse(scope, receive, send, request, 403, reason, principal)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)

    def _rule_for(self, scope: Scope) -> Rule | None:
        if scope["path"] in OPEN_PATHS:
            return OPEN
        for route in self._service.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                path = getattr(route, "path", "")
                return self._policy.get((scope["method"], path), ADMIN_ONLY)
        return None  # no such route: let the app answer 404 or 405

    def _principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise InvalidCredentials("sign in: send Authorization: Bearer <token>")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidCredentials("the Authorization header must be Bearer <token>")
        return verify_token(self._secret, token.strip())

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        status: int,
        reason: str,
        principal: Principal | None,
    ) -> None:
        await self._refusals.record(
            method=request.method,
            path=request.url.path,
            status=status,
            reason=reason,
            principal=principal,
            client=request.client.host if request.client else None,
        )
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await problem(status, reason, headers=headers)(scope, receive, send)


def current_principal(request: Request) -> Principal:
    """The signed-in caller, for endpoints whose rule goes beyond a role."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "sign in: send Authorization: Bearer <token>")
    return principal


SignedIn = Annotated[Principal, Depends(current_principal)]


DEAD_LETTER_RULES: Policy = {
    ("GET", "/dead-letters"): ADMIN_ONLY,
    ("GET", "/dead-letters/{dead_letter_id}"): ADMIN_ONLY,
    ("POST", "/dead-letters/{dead_letter_id}/replay"): ADMIN_ONLY,
    ("DELETE", "/dead-letters/{dead_letter_id}"): ADMIN_ONLY,
    # What a dead letter said is a family's data: for casework, with a reason, recorded.
    ("GET", "/dead-letters/{dead_letter_id}/original"): Rule(CASEWORK),
}
"""The rules of the dead-letter routes every service has, for each policy to include."""


def protect(
    app: FastAPI,
    settings: ServiceSettings,
    db: Database,
    policy: Policy,
    *,
    on_start: list[Callable[[Any], Awaitable[None]]],
    clock: Callable[[], datetime] = utc_now,
    known_districts: Callable[[], Awaitable[Iterable[str]]] | None = None,
) -> Refusals:
    """Put ``policy`` in front of ``app`` and add ``GET /refusals`` for administrators; what
    the refusals need before the service answers joins ``on_start``."""
    refusals = Refusals(db, service=settings.service_name, clock=clock)

    on_start.append(refusals.prepare)

    @app.get(
        "/refusals",
        tags=["access"],
        summary="Refused requests, newest first, a page at a time",
        description="Newest first." + NEXT_PAGE,
    )
    async def list_refusals(
        request: Request,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        partner_id: str | None = None,
        sub: str | None = None,
        cursor: PositionCursor = None,
    ) -> list[RefusalView]:
        filters = {
            name: value for name, value in (("partner_id", partner_id), ("sub", sub)) if value
        }
        page, following = await refusals.recent(limit, before=cursor, **filters)
        link_next(request, response, following)
        return page

    def refusable(method: str, path: str) -> set[int]:
        """401 and 403 wherever a caller can be refused: every route but the open ones."""
        rule = OPEN if path in OPEN_PATHS else policy.get((method, path), ADMIN_ONLY)
        return set() if rule.open else {401, 403}

    document_problems(app, refusable)
    app.add_middleware(
        AccessControl,
        service=app,
        policy=policy,
        secret=signing_secret(settings),
        refusals=refusals,
        known_districts=known_districts,
    )
    return refusals


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.auth",
        description="Mint a staff token signed with the configured secret"
        " (EARLYHELP_AUTH_SECRET or EARLYHELP_AUTH_SECRET_FILE).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a bearer token")
    token.add_argument("--role", required=True, choices=[role.value for role in Role])
    token.add_argument("--sub", required=True, help="who: a user id, or an auditor's id")
    token.add_argument("--districts", default="", help='comma-separated districts, or "*" for all')
    token.add_argument("--hours", type=float, default=8.0, help="hours until it expires")
    commands.add_parser("secret", help="print a new random signing secret")
    args = parser.parse_args(argv)
    if args.command == "secret":
        print(new_secret())
        return
    try:
        secret = signing_secret(ServiceSettings())
    except AuthError as error:
        raise SystemExit(str(error)) from None
    districts = [name.strip() for name in args.districts.split(",") if name.strip()]
    print(
        mint_token(
            secret,
            sub=args.sub,
            role=Role(args.role),
            districts=districts,
            ttl=timedelta(hours=args.hours),
        )
    )


if __name__ == "__main__":
    main()
