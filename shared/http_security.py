"""What every service's HTTP answers carry for safety, and the limit on each caller's writes.

Every answer says not to sniff its type, not to be framed and not to leak a referrer; an
API answer may hold a family's details, so unless a route says otherwise none is stored by
a browser or a proxy (``Cache-Control: no-store``), and its Content-Security-Policy lets it
load nothing at all. A page of ours gets a strict policy of its own (``page_policy``): its
inline script and style allowed by hash, its data fetched only from this origin.

Writes are limited per caller, so that one runaway partner system or script cannot starve
the others: a token bucket per partner key, per staff token, or (with neither) per client
address. The limit is per replica, so N replicas behind a balancer allow N times as much;
the defaults are far above what a busy partner sends. Over the limit, the answer is 429
with ``Retry-After``, in the problem shape.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import problem

BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""An API answer is data: it may run, load and frame nothing."""

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
_INLINE_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)


def _hashes(blocks: Iterable[str]) -> str:
    return " ".join(
        f"'sha256-{b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in blocks
    )


def page_policy(html: str, *, sources: Mapping[str, str] | None = None) -> str:
    """A strict Content-Security-Policy for one of our own pages.

    Its inline scripts and styles are allowed by their SHA-256 (so a script injected into
    the page would not run), its requests go only to this origin, and ``sources`` adds what
    a page must load from elsewhere (``{"script-src": "https://cdn.example"}``).
    """
    directives = {
        "default-src": "'none'",
        "script-src": _hashes(_INLINE_SCRIPT.findall(html)) or "'none'",
        "style-src": _hashes(_INLINE_STYLE.findall(html)) or "'none'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    for directive, source in (sources or {}).items():
        current = directives.get(directive, "'none'")
        directives[directive] = source if current == "'none'" else f"{current} {source}"
    return "; ".join(f"{directive} {value}" for directive, value in directives.items())


class SecurityHeaders:
    """Adds the safety headers to every answer; a route's own ``Cache-Control`` or
    ``Content-Security-Policy`` (a page's) is kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
                if "content-security-policy" not in headers:
                    headers["content-security-policy"] = API_POLICY
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """A token bucket per caller: ``burst`` writes at once, refilled at ``rate_per_s``."""

    MAX_CALLERS = 10_000
    """Callers tracked at once; full buckets (idle callers) are forgotten beyond it."""

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, caller: str) -> float:
        """Take one token for ``caller``: 0 when allowed, else the seconds until one is due."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.MAX_CALLERS:
                self._forget_idle(now)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    def _forget_idle(self, now: float) -> None:
        """Forget the buckets that are full by now: a fresh one is the same."""
        self._buckets = {
            caller: bucket
            for caller, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate_per_s < self.burst
        }


def caller_of(scope: Scope) -> str:
    """Who is writing: a digest of their partner key or token (never the secret itself),
    else their address."""
    headers = dict(scope.get("headers") or ())
    for name, kind in ((b"x-partner-key", "partner"), (b"authorization", "staff")):
        if value := headers.get(name):
            return f"{kind}:{hashlib.sha256(value).hexdigest()[:32]}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class WriteRateLimit:
    """Answers 429 with ``Retry-After`` to a caller writing faster than their bucket allows."""

    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES:
            wait_s = self.buckets.take(caller_of(scope))
            if wait_s > 0:
                answer = problem(
                    429,
                    f"more than {self.buckets.burst} writes at once or"
                    f" {self.buckets.rate_per_s:g} a second from one caller; try again later",
                    headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
