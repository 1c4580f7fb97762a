"""``make run`` with the embedded servers: it starts Apache Kafka (no other broker), Ctrl-C
leaves nothing behind, and what was on a topic is still there when it starts again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from subprocess import STDOUT

import pytest
from aiokafka import AIOKafkaProducer

from shared.embedded import free_port
from tests.support import read_topic

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]


def embedded_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI"}
    }
    env.update(
        {
            "EARLYHELP_DATA_DIR": str(tmp_path / "data"),
            "EARLYHELP_KAFKA_PORT": str(free_port()),
            "EARLYHELP_KAFKA_CONTROLLER_PORT": str(free_port()),
            "EARLYHELP_MONGODB_PORT": str(free_port()),
            **{
                f"EARLYHELP_{service}_PORT": str(free_port())
                for service in ("REFERRAL", "ALLOCATION", "AUDIT", "REPORTING")
            },
            **overrides,
        }
    )
    return env


def start_platform(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``make run``'s command, its output and errors on one pipe."""
    command = [sys.executable, "-m", "services"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=STDOUT)


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry leads to ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_until_running(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], set[int]]:
    """``make run`` up to its "is running" line, and every process it started."""
    process = start_platform(env)
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 120
    started: set[int] = set()
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        if not line and process.poll() is not None:
            break
        output.append(line)
        started |= descendants(process.pid)
        if "is running" in line:
            break
    assert any("is running" in line for line in output), "".join(output[-40:])
    return process, started | descendants(process.pid)


def ctrl_c(process: subprocess.Popen[bytes], started: set[int], data_dir: Path) -> None:
    process.send_signal(signal.SIGINT)
    remaining, _ = process.communicate(timeout=60)
    assert process.returncode == 0, remaining.decode(errors="replace")[-3000:]
    assert not [pid for pid in started if alive(pid)]
    assert not list((data_dir / "run").glob("*.pid"))


async def publish(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def test_ctrl_c_stops_every_process_and_a_topic_outlives_the_run(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    bootstrap = f"127.0.0.1:{env['EARLYHELP_KAFKA_PORT']}"
    process, started = run_until_running(env)
    assert len(started) >= 6, f"expected broker, database and four services, got {started}"
    commands = [command_line(pid) for pid in started]
    [broker] = [command for command in commands if " kafka.Kafka " in command]
    assert "-Xmx512m" in broker
    assert not [command for command in commands if "tansu" in command]
    written = f"written before the stop {time.time()}".encode()
    asyncio.run(publish(bootstrap, "kept-across-runs", written))
    ctrl_c(process, started, tmp_path / "data")

    process, started = run_until_running(env)
    try:
        [record] = asyncio.run(read_topic(bootstrap, "kept-across-runs", count=1))
        assert record.value == written
    finally:
        ctrl_c(process, started, tmp_path / "data")


def test_a_port_already_in_use_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "services"],
            cwd=ROOT,
            env=embedded_env(tmp_path, EARLYHELP_KAFKA_PORT=str(port)),
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr.decode()
