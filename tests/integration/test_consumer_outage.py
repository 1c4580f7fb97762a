"""A database outage is not a poison message: the consumer waits it out, never dead-letters.

Found by the fault campaign (``resilience.campaign``): with SecantusDB down for longer than
a consumer's three tries took, a submission was dead-lettered and so never answered.
"""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

from shared.consumer import is_outage
from shared.dead_letters import DEAD_LETTERS
from shared.events import CaseClosed
from shared.runtime import build_runtime
from shared.settings import ServiceSettings
from shared.unit_of_work import ConcurrentUpdate
from tests.conftest import Infra, Namespace
from tests.integration.test_consumer import EVENT_TYPE, Closures, closed_event
from tests.support import eventually, produce


@pytest.mark.infra
async def test_a_handler_failing_while_the_database_is_down_is_retried_until_it_is_back(
    infra: Infra, namespace: Namespace
) -> None:
    outage_errors = [
        ServerSelectionTimeoutError("127.0.0.1:27017: connection refused"),
        AutoReconnect("connection closed"),
    ] * 2
    tries: list[str] = []
    effects: list[str] = []

    async def on_case_closed(batch: Closures) -> int:
        for item in batch:
            case_id = item.event.case_id
            tries.append(case_id)
            if case_id == "case-during-outage" and outage_errors:
                raise outage_errors.pop()
        effects.extend(item.event.case_id for item in batch)
        return len(batch)

    async def effects_so_far() -> list[str]:
        return list(effects)

    runtime = build_runtime(
        namespace.settings(
            ServiceSettings, infra, service_name="outage-tests", consumer_max_attempts=2
        )
    )
    runtime.subscribe(CaseClosed, on_case_closed)
    await runtime.start()
    try:
        await produce(
            infra.kafka_bootstrap_servers,
            namespace.topic(EVENT_TYPE),
            [closed_event("case-during-outage"), closed_event("case-after")],
            key=b"fam-1",
        )
        await eventually(effects_so_far, lambda seen: "case-after" in seen)
        assert effects == ["case-during-outage", "case-after"]
        assert tries.count("case-during-outage") == 5  # four outage errors were not tries
        assert await runtime.db[DEAD_LETTERS].count_documents({}) == 0
    finally:
        await runtime.stop()


def test_only_an_unreachable_database_or_a_transient_transaction_counts_as_an_outage() -> None:
    transient = OperationFailure("write conflict", code=112)
    transient._add_error_label("TransientTransactionError")
    assert is_outage(ServerSelectionTimeoutError("no server"))
    assert is_outage(AutoReconnect("connection reset"))
    assert is_outage(transient)
    # A write conflict still standing after the unit of work's own tries (a transaction a
    # killed process left open holds its documents until the server reaps it) is waited out;
    # a conflict found by the service itself is the record's try.
    overtaken = ConcurrentUpdate("overtaken")
    overtaken.__cause__ = transient
    assert is_outage(overtaken)
    assert not is_outage(ConcurrentUpdate("a fact changed meanwhile"))
    assert not is_outage(OperationFailure("bad query", code=2))
    assert not is_outage(RuntimeError("allocation rules exploded"))
