"""The platform as separate processes the campaign can kill and restart.

Each service keeps a fixed port across restarts, so clients find it again; the broker and
the database keep their files on disk, so a restart loses nothing they acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from resilience.client import PlatformClient
from shared.embedded import (
    EmbeddedKafka,
    EmbeddedServer,
    embedded_kafka,
    embedded_mongodb,
    free_port,
    mongodb_uri,
)

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("referral", "allocation", "audit", "reporting")


class ServiceDied(RuntimeError):
    """A service exited without being killed on purpose."""


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.name}.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as when a machine or container dies."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceDied(f"{self.name} exited with code {self.process.returncode}")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class CampaignPlatform:
    """Broker, on-disk database and the four services, each its own process."""

    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    kafka: EmbeddedKafka | None = None
    mongodb: EmbeddedServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    database_prefix: str = "campaign_"

    def start_servers(self) -> None:
        run_dir = self.work_dir / "run"
        self.kafka = embedded_kafka(free_port(), run_dir, data_dir=self.work_dir / "kafka")
        self.kafka.start()
        self.mongodb = embedded_mongodb(free_port(), run_dir, (self.work_dir / "mongodb").resolve())
        self.mongodb.start()

    @property
    def bootstrap_servers(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap_servers

    @property
    def mongodb_uri(self) -> str:
        assert self.mongodb is not None
        return mongodb_uri(self.mongodb.port)

    @property
    def ports(self) -> dict[str, int]:
        return {name: service.port for name, service in self.services.items()}

    def start_services(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "MONGODB_URI": self.mongodb_uri,
            "EARLYHELP_DATABASE_PREFIX": self.database_prefix,
            "EARLYHELP_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "EARLYHELP_LOG_LEVEL": "INFO",
            "EARLYHELP_SAMPLE_DATA": "true",
            **{f"EARLYHELP_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **self.extra_env,
        }
        for name in SERVICES:
            self.services[name] = ServiceProcess(name, ports[name], env, self.work_dir)
            self.services[name].start()

    async def wait_ready(
        self, client: PlatformClient, names: tuple[str, ...] = SERVICES, timeout_s: float = 120
    ) -> float:
        """Seconds until each of ``names`` answers ``/ready`` (broker, database, group)."""
        started = time.monotonic()
        waiting = set(names)
        while waiting:
            for name in sorted(waiting):
                self.services[name].check_alive()
                if await client.ready(name):
                    waiting.discard(name)
            if waiting and time.monotonic() - started > timeout_s:
                raise TimeoutError(f"not ready after {timeout_s:.0f}s: {sorted(waiting)}")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def restart_database(self, down_s: float) -> None:
        """Stop SecantusDB, leave it down ``down_s``, start it again on the same files."""
        assert self.mongodb is not None
        self.mongodb.stop()
        time.sleep(down_s)
        self.mongodb.start()

    def kill_broker(self, down_s: float) -> None:
        """SIGKILL the broker (no controlled shutdown, as when its machine dies), leave it
        down ``down_s``, and start it again on the same port and log directory."""
        assert self.kafka is not None
        self.kafka.kill()
        time.sleep(down_s)
        self.kafka.start()

    def check_alive(self) -> None:
        for service in self.services.values():
            service.check_alive()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        for server in (self.mongodb, self.kafka):
            if server is not None:
                server.stop()
