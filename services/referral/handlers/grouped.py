"""Submissions over HTTP received together: concurrent requests share one transaction.

Each request alone would cost a transaction of its own, and the database commits only so
many a second, so busy partners would queue behind each other's commits (group commit, as
a database's log does it). A request joins the batch being gathered; a batch starts as soon
as the one before it has committed, so a lone request waits for nobody and a burst is
received a few hundred at a time, as a poll of ``referral-submitted`` records is. Each
request still gets its own answer, with its own decision and reasons.

A batch that fails as a whole (not a conflict, which the transaction retries) is received
again one request at a time, so one request's failure is its own alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.referral import domain
from services.referral.handlers import (
    FrontDoor,
    Origin,
    Outcome,
    lookups_for,
    receive_body,
    receive_parsed,
)
from services.referral.ports import ReferralStore, Submissions
from shared.events import ReferralSubmitted
from shared.strict_json import Unreadable, read_json

log = logging.getLogger(__name__)

MOST_A_BATCH = 200
"""Requests received in one transaction at most: a transaction of a few hundred
submissions commits in a fraction of a second."""


@dataclass
class _Request:
    body: bytes
    origin: Origin
    answered: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def answer(self, outcome: Outcome) -> None:
        if not self.answered.done():  # a caller that went away is answered by no one
            self.answered.set_result(outcome)

    def fail(self, error: BaseException) -> None:
        if not self.answered.done():
            self.answered.set_exception(error)


class GroupedReceipts:
    """Receives HTTP submissions, the ones that arrive together in one transaction."""

    def __init__(
        self,
        store: ReferralStore,
        *,
        front_door: FrontDoor,
        clock: Callable[[], datetime],
        max_bytes: int,
        most_a_batch: int = MOST_A_BATCH,
    ) -> None:
        self._store = store
        self._front_door = front_door
        self._clock = clock
        self._max_bytes = max_bytes
        self._most = most_a_batch
        self._waiting: list[_Request] = []
        self._receiving: asyncio.Task[None] | None = None

    async def receive(self, body: bytes, origin: Origin) -> Outcome:
        """The submission's answer, once the batch it joined has committed."""
        request = _Request(body, origin)
        self._waiting.append(request)
        if self._receiving is None or self._receiving.done():
            self._receiving = asyncio.create_task(self._receive_waiting())
        # Shielded: a caller that goes away does not cancel the batch the others are in.
        return await asyncio.shield(request.answered)

    async def _receive_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                await self._receive_together(batch)
            except Exception:
                log.warning("a batch of %d submissions failed; receiving each alone", len(batch))
                for request in batch:
                    await self._receive_alone(request)

    async def _receive_together(self, batch: list[_Request]) -> None:
        now = self._clock()
        parsed = [_parsed(request.body, self._max_bytes) for request in batch]
        lookups = [
            lookups_for(submission, self._front_door.match_keys)
            for submission, _ in filter(None, parsed)
        ]

        async def receive_all(submissions: Submissions) -> list[Outcome]:
            outcomes: list[Outcome] = []
            for request, valid in zip(batch, parsed, strict=True):
                if valid is None:  # unreadable or invalid: read again, to say why
                    outcome = await receive_body(
                        request.body,
                        origin=request.origin,
                        store=submissions,
                        now=now,
                        front_door=self._front_door,
                        max_bytes=self._max_bytes,
                    )
                else:
                    submission, document = valid
                    outcome = await receive_parsed(
                        submission,
                        document,
                        origin=request.origin,
                        store=submissions,
                        now=now,
                        front_door=self._front_door,
                    )
                outcomes.append(outcome)
            return outcomes

        outcomes = await self._store.in_batch(lookups, receive_all)
        for request, outcome in zip(batch, outcomes, strict=True):
            request.answer(outcome)

    async def _receive_alone(self, request: _Request) -> None:
        try:
            outcome = await receive_body(
                request.body,
                origin=request.origin,
                store=self._store,
                now=self._clock(),
                front_door=self._front_door,
                max_bytes=self._max_bytes,
            )
        except Exception as error:
            request.fail(error)
        else:
            request.answer(outcome)


def _parsed(body: bytes, max_bytes: int) -> tuple[ReferralSubmitted, Any] | None:
    """The submission in ``body`` and the document it was read from, when it is a valid
    one: read once, its look-ups made up front."""
    try:
        document: Any = read_json(body, max_bytes=max_bytes)
    except Unreadable:
        return None
    parsed = domain.parse_submission(document)
    return None if isinstance(parsed, list) else (parsed, document)
