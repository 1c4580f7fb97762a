"""The unit of work every service's use cases run in, independent of the database.

A handler opens one, loads what it needs from the repositories it hands out, decides with
the pure rules, saves, and commits once: the changes, their outgoing events and (for a
consumer) the processed-event record are stored together or not at all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeVar

from shared.events import EventData

T = TypeVar("T")

DEFAULT_ATTEMPTS = 8
"""Tries of a use case whose transaction another writer changed under it."""

BACKOFF_S = 0.01
"""First pause before trying again; doubled each time, and jittered so two writers that
clashed do not clash again in step."""


class ConcurrentUpdate(Exception):
    """Another writer changed what this unit of work read: nothing was saved; try again."""


class UnitOfWork(Protocol):
    """One transaction: opened on entry, kept by ``commit``, undone on leaving without it."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class OutgoingEvents(Protocol):
    """The outbox as a unit of work hands it out: what is staged is published after commit."""

    async def stage(self, event: EventData, *, correlation_id: str, event_id: str) -> None:
        """Stage one event; an ``event_id`` staged before keeps the first."""

    async def stage_many(self, events: Sequence[tuple[EventData, str, str]]) -> None:
        """Stage (event, correlation id, event id) in one write."""


async def retrying(work: Callable[[], Awaitable[T]], *, attempts: int = DEFAULT_ATTEMPTS) -> T:
    """Run ``work`` again from the start while it ends in ``ConcurrentUpdate``: each try
    opens its own unit of work, so it decides on what the other writer left."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except ConcurrentUpdate:
            if attempt == attempts:
                raise
            await asyncio.sleep(random.uniform(0, BACKOFF_S * 2**attempt))
    raise AssertionError("unreachable")
