"""What a service has its database do: documents written and transactions committed.

The database sets the platform's pace, so a submission's cost is counted in the units its
ceilings are measured in (``benchmarks.ceilings``): documents inserted, documents updated
or upserted, documents deleted, transactions. The counts come from each write's reply, the
number of documents the database says it wrote, not from the statements sent: the relay's
one ``update_many`` that marks a poll's outbox records sent writes each of them.

The listener hears every command the service's client runs, so it acts on succeeded
events alone, by their command name, and does no I/O. A write inside a transaction that
is later aborted still counts: the database did that work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
OPERATIONS = (INSERT, UPDATE, DELETE)
"""The values of the ``operation`` label."""


class DatabaseWrites(CommandListener):
    """Counts into ``documents`` (by operation) and ``transactions`` as replies arrive."""

    def __init__(self, documents: Counter, transactions: Counter) -> None:
        # Bound once: looking a label up takes a lock, and this runs on every command.
        self._inserted = documents.labels(INSERT)
        self._updated = documents.labels(UPDATE)
        self._deleted = documents.labels(DELETE)
        self._transactions = transactions

    def started(self, event: CommandStartedEvent) -> None:
        """Nothing: a command counts once the database has answered it."""

    def succeeded(self, event: CommandSucceededEvent) -> None:
        name = event.command_name
        if name == "insert":
            self._inserted.inc(_written(event.reply))
        elif name == "update":
            self._updated.inc(_written(event.reply))
        elif name == "delete":
            self._deleted.inc(_written(event.reply))
        elif name == "findAndModify":
            last = event.reply.get("lastErrorObject")
            self._updated.inc(_written(last) if isinstance(last, Mapping) else 0)
        elif name == "commitTransaction":
            self._transactions.inc()

    def failed(self, event: CommandFailedEvent) -> None:
        """Nothing: a failed command wrote nothing the reply can tell of."""


def _written(reply: Mapping[str, Any]) -> int:
    """The reply's ``n``: documents inserted, matched or upserted, or deleted."""
    n = reply.get("n", 0)
    return n if isinstance(n, int) and n > 0 else 0
