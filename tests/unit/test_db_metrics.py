"""The database write counters: what each reply says was written, and only that."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo.monitoring import CommandFailedEvent, CommandSucceededEvent

from shared.db_metrics import DELETE, INSERT, UPDATE, DatabaseWrites
from shared.metrics import Metrics
from shared.runtime import build_runtime
from shared.settings import ServiceSettings
from tests.auth import TEST_DEAD_LETTER_KEY

ADDRESS = ("127.0.0.1", 27017)


def succeeded(command_name: str, reply: dict[str, Any]) -> CommandSucceededEvent:
    return CommandSucceededEvent(
        timedelta(milliseconds=1), {**reply, "ok": 1.0}, command_name, 1, ADDRESS, 1
    )


def written(metrics: Metrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value(
        "earlyhelp_database_documents_written_total", {"operation": operation}
    )


def transactions(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("earlyhelp_database_transactions_total")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def listener(metrics: Metrics) -> DatabaseWrites:
    return DatabaseWrites(metrics.database_documents_written, metrics.database_transactions)


def test_every_operation_is_exported_at_zero_before_any_write(
    metrics: Metrics, listener: DatabaseWrites
) -> None:
    assert [written(metrics, operation) for operation in (INSERT, UPDATE, DELETE)] == [0, 0, 0]
    assert transactions(metrics) == 0


def test_inserts_count_the_documents_the_database_wrote(
    metrics: Metrics, listener: DatabaseWrites
) -> None:
    listener.succeeded(succeeded("insert", {"n": 3}))
    duplicate = {"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000"}]}
    listener.succeeded(succeeded("insert", duplicate))
    assert written(metrics, INSERT) == 3
    assert written(metrics, UPDATE) == 0


def test_updates_count_matched_and_upserted_documents_not_statements(
    metrics: Metrics, listener: DatabaseWrites
) -> None:
    # A bulk of three UpdateOne: one matched, one upserted, one matched nothing.
    listener.succeeded(succeeded("update", {"n": 2, "nModified": 1, "upserted": [{"index": 1}]}))
    # One update_many statement that marked forty outbox records sent.
    listener.succeeded(succeeded("update", {"n": 40, "nModified": 40}))
    assert written(metrics, UPDATE) == 42


def test_find_and_modify_counts_as_an_update_when_it_changed_a_document(
    metrics: Metrics, listener: DatabaseWrites
) -> None:
    listener.succeeded(succeeded("findAndModify", {"lastErrorObject": {"n": 1}, "value": {}}))
    listener.succeeded(succeeded("findAndModify", {"lastErrorObject": {"n": 0}, "value": None}))
    assert written(metrics, UPDATE) == 1


def test_deletes_count_the_documents_removed(metrics: Metrics, listener: DatabaseWrites) -> None:
    listener.succeeded(succeeded("delete", {"n": 5}))
    assert written(metrics, DELETE) == 5


def test_only_committed_transactions_count(metrics: Metrics, listener: DatabaseWrites) -> None:
    listener.succeeded(succeeded("commitTransaction", {}))
    listener.succeeded(succeeded("abortTransaction", {}))
    listener.failed(
        CommandFailedEvent(
            timedelta(milliseconds=1),
            {"ok": 0.0, "errmsg": "WriteConflict"},
            "commitTransaction",
            2,
            ADDRESS,
            2,
        )
    )
    assert transactions(metrics) == 1


def test_reads_and_other_commands_count_nothing(metrics: Metrics, listener: DatabaseWrites) -> None:
    for name in ("find", "getMore", "aggregate", "count", "ping", "createIndexes", "drop"):
        listener.succeeded(succeeded(name, {"n": 7, "cursor": {"firstBatch": []}}))
    assert [written(metrics, operation) for operation in (INSERT, UPDATE, DELETE)] == [0, 0, 0]
    assert transactions(metrics) == 0


async def test_every_service_client_counts_into_that_service_s_own_metrics() -> None:
    settings = ServiceSettings(
        mongodb_uri="mongodb://127.0.0.1:1/?directConnection=true",
        dead_letter_key=SecretStr(TEST_DEAD_LETTER_KEY),
    )
    runtime, other = build_runtime(settings), build_runtime(settings)
    (listener,) = [
        each for each in runtime.client.options.event_listeners if isinstance(each, DatabaseWrites)
    ]
    listener.succeeded(succeeded("insert", {"n": 2}))
    assert written(runtime.metrics, INSERT) == 2
    assert written(other.metrics, INSERT) == 0
    await runtime.client.close()
    await other.client.close()
