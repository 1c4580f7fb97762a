"""The operations endpoints without servers: readiness explains itself, liveness needs no
I/O, and every request is counted and correlated."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import httpx
import pytest
from fastapi import FastAPI

from shared.consumer import Delivered
from shared.embedded import free_port
from shared.events import CaseClosed
from shared.logs import JsonFormatter, TextFormatter, configure_logging, correlated
from shared.runtime import build_runtime, service_app
from shared.settings import ServiceSettings, mongodb_uri_for
from tests.auth import TEST_DEAD_LETTER_KEY


@pytest.fixture
def app() -> FastAPI:
    """A service whose broker and database are nowhere (closed ports), never started."""
    settings = ServiceSettings.model_validate(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "MONGODB_URI": mongodb_uri_for("127.0.0.1", free_port()),
            "service_name": "unreachable",
            "readiness_timeout_s": 0.3,
            "dead_letter_key": TEST_DEAD_LETTER_KEY,
        }
    )
    runtime = build_runtime(settings)
    runtime.subscribe(CaseClosed, _ignore)
    app = service_app(runtime, title="unreachable", description="nothing to reach")

    @app.get("/cases/{case_id}")
    async def case(case_id: str) -> dict[str, str]:
        logging.getLogger("tests.operations").warning("looked up %s", case_id)
        return {"id": case_id}

    return app


async def _ignore(batch: Sequence[Delivered[CaseClosed]]) -> int:
    return 0


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("unreachable"))
    logger = logging.getLogger("tests.operations")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


async def test_health_answers_without_touching_the_broker_or_database(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "service": "unreachable"}


async def test_ready_is_503_naming_each_unreachable_dependency_and_the_unjoined_consumer(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/ready")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unreachable")
    assert body["checks"]["broker"].startswith("unreachable")
    assert body["checks"]["consumer"] == "not yet assigned partitions in group unreachable"
    assert [reason.split(":")[0] for reason in body["reasons"]] == [
        "database",
        "broker",
        "consumer",
    ]


async def test_requests_are_counted_by_route_template_and_logged_with_their_correlation_id(
    client: httpx.AsyncClient, json_lines: io.StringIO
) -> None:
    answer = await client.get("/cases/case-42", headers={"X-Correlation-Id": "corr-http-1"})
    assert answer.status_code == 200
    assert answer.headers["x-correlation-id"] == "corr-http-1"
    await client.get("/cases/case-43")
    await client.get("/no/such/route")

    (line,) = [json.loads(text) for text in json_lines.getvalue().splitlines()][:1]
    assert line["message"] == "looked up case-42"
    assert line["correlation_id"] == "corr-http-1"
    assert line["service"] == "unreachable"
    second = json.loads(json_lines.getvalue().splitlines()[1])
    assert "correlation_id" not in second

    metrics = (await client.get("/metrics")).text
    assert (
        'earlyhelp_http_requests_total{method="GET",route="/cases/{case_id}",status="200"} 2.0'
        in metrics
    )
    assert (
        'earlyhelp_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in metrics
    )


def test_two_apps_in_one_process_keep_separate_registries(app: FastAPI) -> None:
    other = build_runtime(
        ServiceSettings.model_validate(
            {"service_name": "other", "dead_letter_key": TEST_DEAD_LETTER_KEY}
        )
    )
    assert other.metrics.registry is not app.state.runtime.metrics.registry


def test_text_format_appends_the_correlation_id_and_configure_replaces_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        handler = configure_logging("referral", level="info", log_format="text")
        assert root.handlers == [handler]
        assert isinstance(handler.formatter, TextFormatter)
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        with correlated("corr-7"):
            text = handler.format(record)
        assert " referral INFO x: hello [correlation_id=corr-7]" in text
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
