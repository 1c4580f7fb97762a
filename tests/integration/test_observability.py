"""What operators see of the delivery plumbing, on the real broker and database: outcomes
counted, logs correlated with the event, readiness, and a relay that drains on stop."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime

import httpx
import pytest

from shared.consumer import Delivered
from shared.events import CaseClosed, CaseOutcome, envelope
from shared.logs import JsonFormatter
from shared.mongo import Session, in_transaction
from shared.outbox import OUTBOX
from shared.runtime import Runtime, build_runtime, service_app
from shared.settings import ServiceSettings
from tests.conftest import Infra, Namespace
from tests.support import eventually, produce

pytestmark = pytest.mark.infra

EVENT_TYPE = "case-closed"
HANDLER_LOGGER = "tests.observability.handler"


def closed_event(case_id: str, *, event_id: str, correlation_id: str) -> bytes:
    data = CaseClosed(
        case_id=case_id,
        family_id="fam-1",
        district="eastmere",
        team_id=None,
        worker_id=None,
        outcome=CaseOutcome.NEEDS_MET,
        closed_at=datetime(2026, 11, 5, tzinfo=UTC),
    )
    return envelope(
        data,
        event_id=event_id,
        source="/earlyhelp/tests",
        time=datetime(2026, 11, 5, tzinfo=UTC),
        correlation_id=correlation_id,
    ).to_bytes()


def sample(runtime: Runtime, name: str, **labels: str) -> float:
    """The current value of one sample of the runtime's own registry (0 when absent)."""
    value = runtime.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The JSON lines written by the handler's logger while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("observability-tests"))
    logger = logging.getLogger(HANDLER_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


@pytest.fixture
async def runtime(infra: Infra, namespace: Namespace) -> AsyncIterator[Runtime]:
    """A service runtime whose handler records each event once and logs as it does; one
    record per poll, so each outcome below is exact."""
    settings = namespace.settings(
        ServiceSettings,
        infra,
        service_name="observed",
        consumer_max_attempts=2,
        consumer_batch_size=1,
    )
    runtime = build_runtime(settings)

    async def on_case_closed(batch: Sequence[Delivered[CaseClosed]]) -> int:
        if any(item.event.case_id.startswith("broken") for item in batch):
            raise RuntimeError("the store refused")

        async def record(session: Session, fresh: list[int]) -> None:
            for index in fresh:
                await runtime.db["closures"].update_one(
                    {"_id": batch[index].event.case_id},
                    {"$set": {"closed": True}},
                    upsert=True,
                    session=session,
                )

        for item in batch:
            logging.getLogger(HANDLER_LOGGER).info("closing %s", item.event.case_id)
        return await runtime.processed.process_many([item.envelope for item in batch], record)

    runtime.subscribe(CaseClosed, on_case_closed)
    await runtime.start()
    yield runtime
    await runtime.stop()


async def test_each_outcome_is_counted_per_topic_and_a_handled_event_logs_its_correlation_id(
    infra: Infra, namespace: Namespace, runtime: Runtime, captured_logs: io.StringIO
) -> None:
    topic = namespace.topic(EVENT_TYPE)
    correlation_id = f"corr-{uuid.uuid4()}"
    event_id = str(uuid.uuid4())
    once = closed_event("case-1", event_id=event_id, correlation_id=correlation_id)
    await produce(
        infra.kafka_bootstrap_servers,
        topic,
        [
            once,
            once,  # redelivered: the processed-event record makes it a duplicate
            b"not an event",
            closed_event("broken-1", event_id=str(uuid.uuid4()), correlation_id="corr-broken"),
        ],
        key=b"fam-1",
    )

    def outcomes() -> dict[str, float]:
        return {
            outcome: sample(
                runtime, "earlyhelp_messages_consumed_total", topic=topic, outcome=outcome
            )
            for outcome in ("processed", "duplicate", "dead_lettered", "failed_attempt")
        }

    async def probe() -> dict[str, float]:
        return outcomes()

    counted = await eventually(probe, lambda found: found["dead_lettered"] == 2)
    assert counted == {"processed": 1, "duplicate": 1, "dead_lettered": 2, "failed_attempt": 2}
    assert sample(runtime, "earlyhelp_dead_letters_total", topic=topic) == 2
    assert sample(runtime, "earlyhelp_errors_total", where="handler") == 2
    # Every handler call is timed, failed ones too; the unreadable record never reaches it.
    assert sample(runtime, "earlyhelp_handler_duration_seconds_count", topic=topic) == 4

    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    closing = [line for line in lines if line["message"] == "closing case-1"]
    assert len(closing) == 2
    assert {line["correlation_id"] for line in closing} == {correlation_id}
    assert {line["logger"] for line in closing} == {HANDLER_LOGGER}


async def test_ready_once_started_and_metrics_served_with_lag_and_backlog(
    infra: Infra, namespace: Namespace, runtime: Runtime
) -> None:
    topic = namespace.topic(EVENT_TYPE)
    app = service_app(runtime, title="observed", description="operations endpoints under test")
    transport = httpx.ASGITransport(app=app)  # no lifespan: the runtime is already started
    async with httpx.AsyncClient(transport=transport, base_url="http://observed") as client:

        async def ready() -> httpx.Response:
            return await client.get("/ready")

        answer = await eventually(ready, lambda response: response.status_code == 200)
        assert answer.json()["checks"]["consumer"].startswith("ok: ")

        await produce(
            infra.kafka_bootstrap_servers,
            topic,
            [closed_event("case-9", event_id=str(uuid.uuid4()), correlation_id="c-9")],
        )

        async def scraped() -> str:
            return (await client.get("/metrics")).text

        text = await eventually(
            scraped, lambda text: f'outcome="processed",topic="{topic}"}} 1.0' in text
        )
        assert "earlyhelp_outbox_backlog 0.0" in text
        assert re.search(rf'earlyhelp_consumer_lag{{partition="\d",topic="{topic}"}} 0.0', text)


async def test_a_stopping_relay_publishes_what_is_staged_first(
    infra: Infra, namespace: Namespace, runtime: Runtime
) -> None:
    await runtime.relay.stop()  # nothing relays in the background now
    relay_topic = namespace.topic("case-closed")

    async def stage_three(session: Session) -> None:
        for number in range(3):
            data = CaseClosed(
                case_id=f"case-{number}",
                family_id="fam-7",
                district="eastmere",
                team_id=None,
                worker_id=None,
                outcome=CaseOutcome.NEEDS_MET,
                closed_at=datetime(2026, 11, 5, tzinfo=UTC),
            )
            await runtime.outbox.stage_event(data, session=session, correlation_id="c-stop")

    await in_transaction(runtime.client, stage_three)
    assert await runtime.relay.pending_count() == 3
    runtime.relay.start()
    await runtime.relay.stop()
    assert await runtime.db[OUTBOX].count_documents({"sent_at": None}) == 0
    assert sample(runtime, "earlyhelp_messages_published_total", topic=relay_topic) == 3
