"""One service as it runs in a container: ready once started, metrics and JSON logs of the
events it handles, and a clean exit on SIGTERM within seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import topics
from shared.embedded import free_port
from tests.auth import TEST_DEAD_LETTER_KEY, TEST_MATCH_KEY_SECRET, TEST_SECRET
from tests.conftest import Infra, Namespace
from tests.factories import referral_received
from tests.support import eventually, produce, service_event

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line it wrote to stderr, each of which must be one JSON object."""
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def allocation(infra: Infra, namespace: Namespace, tmp_path: Path) -> Iterator[ServiceProcess]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "MONGODB_URI": infra.mongodb_uri,
        "EARLYHELP_TOPIC_NAMESPACE": namespace.topics,
        "EARLYHELP_DATABASE_PREFIX": namespace.databases,
        "EARLYHELP_ALLOCATION_PORT": str(port),
        "EARLYHELP_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "EARLYHELP_SAMPLE_DATA": "true",
        "EARLYHELP_LOG_FORMAT": "json",
        "EARLYHELP_LOG_LEVEL": "DEBUG",
        "EARLYHELP_AUTH_SECRET": TEST_SECRET,
        "EARLYHELP_DEAD_LETTER_KEY": TEST_DEAD_LETTER_KEY,
        "EARLYHELP_MATCH_KEY_SECRET": TEST_MATCH_KEY_SECRET,
    }
    log = tmp_path / "allocation.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.allocation"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        yield ServiceProcess(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


async def _status(url: str, process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is not None:
        raise AssertionError(f"service exited with {process.returncode}")
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=5)).status_code
    except httpx.TransportError:
        return None


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/metrics", timeout=5)).text


async def test_ready_metrics_correlated_json_logs_and_a_clean_exit_on_sigterm(
    infra: Infra, namespace: Namespace, allocation: ServiceProcess
) -> None:
    service = allocation
    await eventually(
        lambda: _status(f"{service.url}/ready", service.process),
        lambda status: status == 200,
        timeout_s=60,
        interval_s=0.2,
    )
    async with httpx.AsyncClient(base_url=service.url) as client:
        ready = (await client.get("/ready")).json()
        assert ready["status"] == "ready"
        assert set(ready["checks"]) == {"database", "broker", "consumer", "teams"}
        assert ready["checks"]["teams"] == "ok: 9 teams"  # the sample county, as asked
        assert (await client.get("/health")).json() == {"status": "ok", "service": "allocation"}

    correlation_id = f"corr-{uuid.uuid4()}"
    topic = namespace.topic(topics.REFERRAL_RECEIVED)
    await produce(
        infra.kafka_bootstrap_servers,
        topic,
        [
            service_event(
                referral_received(district="northvale"),
                service="referral",
                correlation_id=correlation_id,
            )
        ],
    )
    processed = f'earlyhelp_messages_consumed_total{{outcome="processed",topic="{topic}"}} 1.0'
    text = await eventually(lambda: _metrics(service.url), lambda text: processed in text)
    assert f'earlyhelp_handler_duration_seconds_count{{topic="{topic}"}} 1.0' in text
    published = namespace.topic(topics.CASE_ALLOCATED)
    text = await eventually(
        lambda: _metrics(service.url),
        lambda text: f'earlyhelp_messages_published_total{{topic="{published}"}} 1.0' in text,
    )
    assert "earlyhelp_outbox_backlog 0.0" in text
    assert 'earlyhelp_http_requests_total{method="GET",route="/ready",status="200"}' in text
    assert re.search(rf'earlyhelp_consumer_lag{{partition="\d",topic="{topic}"}} 0.0', text)

    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    code = service.process.wait(15)
    took = time.monotonic() - started

    lines = service.log_lines()
    assert code == 0, lines[-20:]
    assert took < 10, f"took {took:.1f}s to stop"
    assert all(line["service"] == "allocation" for line in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    correlated = [line for line in lines if line.get("correlation_id") == correlation_id]
    assert any(line["logger"] == "shared.consumer" for line in correlated), lines[-30:]
    assert any("stopped" in line["message"] for line in lines), lines[-10:]
