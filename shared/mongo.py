"""MongoDB client factory and the transaction every state change goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.monitoring import CommandListener

from shared.unit_of_work import ConcurrentUpdate

if TYPE_CHECKING:
    from shared.events import EventData
    from shared.outbox import Outbox

Document = dict[str, Any]
MongoClient = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]
Session = AsyncClientSession

T = TypeVar("T")


def create_mongo_client(
    uri: str, *, app_name: str, event_listeners: Sequence[CommandListener] = ()
) -> MongoClient:
    """A client for ``uri``; built by a service's ``create_app()``, never at import time.
    ``event_listeners`` hear each of its commands (the service's write counts)."""
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=10_000,
        event_listeners=list(event_listeners),
    )


async def in_transaction(client: MongoClient, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run ``work`` in one multi-document transaction, retried on transient conflicts.

    This is what keeps a state change, its outgoing events and the processed-event mark
    together: either all of them are stored or none is.
    """
    async with client.start_session() as session:
        return await session.with_transaction(work)


class BulkWrites:
    """Writes gathered per collection, in order, then sent as one bulk write per collection.

    A handler of a batch of events records its writes here instead of sending them one by
    one: the database is the bottleneck, and a bulk write of hundreds of updates costs about
    what a few single ones do. Order is kept within a collection, so a later write sees an
    earlier one's effect, as it would have one at a time.
    """

    def __init__(self) -> None:
        self._writes: dict[str, list[UpdateOne | ReplaceOne[Document]]] = {}

    def __len__(self) -> int:
        return sum(len(writes) for writes in self._writes.values())

    def update_one(
        self,
        collection: str,
        where: Document,
        update: Document,
        *,
        upsert: bool = False,
    ) -> None:
        self._writes.setdefault(collection, []).append(UpdateOne(where, update, upsert=upsert))

    def replace_one(
        self, collection: str, where: Document, document: Document, *, upsert: bool = False
    ) -> None:
        self._writes.setdefault(collection, []).append(ReplaceOne(where, document, upsert=upsert))

    async def send(self, db: Database, *, session: Session | None) -> None:
        for collection, writes in self._writes.items():
            await db[collection].bulk_write(writes, ordered=True, session=session)
        self._writes.clear()


class MongoUnitOfWork:
    """A unit of work over one MongoDB transaction.

    A service's unit of work subclasses it and builds its repositories in ``opened``, over
    ``self.db`` and bound to ``session``; given the service's outbox, ``events`` stages in
    the same transaction. Given a ``session`` already in a transaction (the consumer's,
    which also records the processed events), it joins that one, and ``commit`` leaves the
    commit to its owner. A transient conflict (another writer first) leaves as
    ``ConcurrentUpdate``.
    """

    events: StagedEvents

    def __init__(
        self,
        client: MongoClient,
        db: Database,
        outbox: Outbox | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        self._client = client
        self.db = db
        self._outbox = outbox
        self._joined = session
        self._session: Session | None = session
        self._committed = False

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is not open")
        return self._session

    def opened(self) -> None:
        """Build the repositories over ``self.session``."""

    async def __aenter__(self) -> Self:
        self._committed = False
        if self._joined is None:
            self._session = self._client.start_session()
            await self._session.start_transaction()
        if self._outbox is not None:
            self.events = StagedEvents(self._outbox, self.session)
        self.opened()
        return self

    async def commit(self) -> None:
        if self._joined is None:
            try:
                await self.session.commit_transaction()
            except PyMongoError as error:
                if _transient(error):
                    raise ConcurrentUpdate(str(error)) from error
                raise
        self._committed = True

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._joined is not None:
            return
        session, self._session = self.session, None
        try:
            if session.in_transaction:
                await session.abort_transaction()
        finally:
            await session.end_session()
        if isinstance(error, PyMongoError) and _transient(error):
            raise ConcurrentUpdate(str(error)) from error


class StagedEvents:
    """The outbox bound to a unit of work's session: events staged in its transaction."""

    def __init__(self, outbox: Outbox, session: Session) -> None:
        self._outbox = outbox
        self._session = session

    async def stage(self, event: EventData, *, correlation_id: str, event_id: str) -> None:
        await self._outbox.stage_event(
            event, session=self._session, correlation_id=correlation_id, event_id=event_id
        )

    async def stage_many(self, events: Sequence[tuple[EventData, str, str]]) -> None:
        await self._outbox.stage_events(events, session=self._session)


WRITE_CONFLICT = 112


def _transient(error: PyMongoError) -> bool:
    """Another writer got there first: trying again may succeed. MongoDB labels a write
    conflict in a transaction so; a server that does not is known by the code."""
    return (
        error.has_error_label("TransientTransactionError")
        or error.has_error_label("UnknownTransactionCommitResult")
        or getattr(error, "code", None) == WRITE_CONFLICT
    )
