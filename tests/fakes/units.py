"""The in-memory unit of work the services' fakes share.

A unit of work works on its own deep copy of the store's committed state, so leaving
without ``commit`` undoes everything, and two open units of work do not see each other's
changes, as two transactions would not. ``commit`` hands the copy and the staged events to
the store, which first asks the service's fake whether another commit came between.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

from shared.events import EventData

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class StagedEvent:
    data: EventData
    correlation_id: str
    event_id: str


@dataclass
class InMemoryOutgoingEvents:
    """``OutgoingEvents`` over a list: an event id staged before keeps the first, as the
    outbox does."""

    staged: list[StagedEvent] = field(default_factory=list)

    async def stage(self, event: EventData, *, correlation_id: str, event_id: str) -> None:
        self.keep(StagedEvent(event, correlation_id, event_id))

    async def stage_many(self, events: Sequence[tuple[EventData, str, str]]) -> None:
        for data, correlation_id, event_id in events:
            self.keep(StagedEvent(data, correlation_id, event_id))

    def keep(self, event: StagedEvent) -> None:
        if all(staged.event_id != event.event_id for staged in self.staged):
            self.staged.append(event)


class InMemoryStore(Generic[StateT]):
    """A service's committed state and the events its commits published.

    ``version`` counts commits, so a unit of work can tell whether anything was committed
    since it opened; a service's fake decides in ``check`` which of those changes clash.
    """

    def __init__(self, state: StateT) -> None:
        self.state = state
        self.version = 0
        self.published = InMemoryOutgoingEvents()

    def check(self, read: StateT, mine: StateT) -> None:
        """Raise ``ConcurrentUpdate`` when ``mine`` (opened on ``read``) clashes with what
        was committed since; by default nothing clashes."""

    def committed(self, mine: StateT, events: Sequence[StagedEvent], *, read: StateT) -> None:
        self.check(read, mine)
        self.state = mine
        self.version += 1
        for event in events:
            self.published.keep(event)


class InMemoryUnitOfWork(Generic[StateT]):
    """One transaction over a copy of the store's state; a service's fake builds its
    repositories over ``self.state`` in ``opened``."""

    state: StateT

    def __init__(self, store: InMemoryStore[StateT]) -> None:
        self.store = store
        self.events = InMemoryOutgoingEvents()

    def opened(self) -> None:
        """Build the repositories over ``self.state``."""

    async def __aenter__(self) -> Self:
        self._read = copy.deepcopy(self.store.state)
        self.state = copy.deepcopy(self._read)
        self.events = InMemoryOutgoingEvents()
        self.opened()
        return self

    async def commit(self) -> None:
        self.store.committed(self.state, self.events.staged, read=self._read)
        self._read = copy.deepcopy(self.state)
        self.state = copy.deepcopy(self._read)
        self.events = InMemoryOutgoingEvents()
        self.opened()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
