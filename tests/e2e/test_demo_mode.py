"""``make run`` in demo mode: partners' traffic reaches the monthly figures, and Ctrl-C
stops the simulator with everything else."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import Role
from tests.auth import TEST_SECRET, as_role
from tests.e2e.test_run_command import alive, descendants, embedded_env, start_platform

pytestmark = pytest.mark.infra


def test_demo_traffic_reaches_the_figures_and_ctrl_c_stops_it_with_the_platform(
    tmp_path: Path,
) -> None:
    env = embedded_env(tmp_path, EARLYHELP_DEMO_RATE="20", EARLYHELP_AUTH_SECRET=TEST_SECRET)
    process = start_platform(env)
    output: list[str] = []
    # Read the output as it comes, so a chatty platform never blocks on a full pipe.
    reader = threading.Thread(target=_collect, args=(process, output), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any("is running" in ln for ln in output), timeout_s=120, output=output)
        started = descendants(process.pid)

        reporting = f"http://127.0.0.1:{env['EARLYHELP_REPORTING_PORT']}/reports/monthly"
        month = datetime.now(UTC).strftime("%Y-%m")

        report: dict[str, Any] = {}

        def traffic_counted() -> bool:
            response = httpx.get(
                reporting, params={"month": month}, headers=as_role(Role.PERFORMANCE_ANALYST)
            )
            report.update(response.json())
            requests: int = report["requests"]["total"]
            rejected: int = report["outcomes"]["rejected"]
            return requests >= 20 and rejected >= 1

        _wait_for(traffic_counted, timeout_s=90, output=output)
        assert report["requests"]["by_source"].get("2A", 0) > 0
        started |= descendants(process.pid)
        assert len(started) >= 7, "expected broker, database, four services and the simulator"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)

    assert process.returncode == 0, "".join(output[-40:])
    assert any("simulator: sent" in line for line in output), "".join(output[-40:])
    assert not [pid for pid in started if alive(pid)]


def _collect(process: subprocess.Popen[bytes], output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line.decode(errors="replace"))


def _wait_for(condition: Callable[[], bool], *, timeout_s: float, output: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s:\n" + "".join(output[-40:]))
        time.sleep(0.5)
