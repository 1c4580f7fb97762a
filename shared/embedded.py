"""Embedded broker and database for local runs and tests, each in its own process.

Apache Kafka (one KRaft node: broker and controller in one JVM) comes from Maven Central
through ``deploy/kafka/pom.xml``; its classpath is copied once into ``.kafka/``. Its storage
is formatted once and kept in a data folder, so topics and committed offsets survive a
restart. SecantusDB (a MongoDB wire-protocol server on WiredTiger, GPL-2.0, beta) keeps its
data in a folder too. Both bind 127.0.0.1, are waited on until they answer, and are stopped
by process id, including after a failed start. A pid file per server lets the next start
clean up after a run that was killed outright.

``python -m shared.embedded prepare`` checks for Java and Maven and fetches the classpath:
``make run`` and ``make test`` call it first, so a missing tool is one line with its fix.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from shared.serve import ensure_port_free
from shared.settings import mongodb_uri_for

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG_CONFIG = ROOT / "deploy" / "kafka" / "log4j2.properties"
KAFKA_CLASSPATH = ROOT / ".kafka" / "lib"
KAFKA_HEAP = "512m"
MIN_JAVA = 17
ADMIN_USER = "admin"
"""The broker's own user when SASL is on: a super user, made when the storage is formatted."""
ADMIN_PASSWORD_FILE = "admin-password"
"""Where in the broker's data folder that user's password is kept."""


class EmbeddedServerError(RuntimeError):
    pass


class MissingPrerequisite(EmbeddedServerError):
    """A tool the embedded broker needs is not installed; the message says how to fix it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def secantus_binary() -> Path:
    launcher = Path(sys.executable).parent / "secantusd-py"
    if not launcher.exists():
        raise EmbeddedServerError(f"{launcher} not found: is secantusdb installed?")
    return launcher


ELSEWHERE = "or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka, or run `docker compose up`"


def java_major_version() -> int:
    """The major version of the ``java`` on the PATH; a clear error when there is none."""
    if shutil.which("java") is None:
        raise MissingPrerequisite(
            f"the embedded Kafka broker needs Java {MIN_JAVA}+ and none is on the PATH:"
            f" install it (Debian: apt-get install openjdk-{MIN_JAVA}-jre-headless), {ELSEWHERE}"
        )
    answer = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', answer.stderr + answer.stdout)
    if found is None:
        raise MissingPrerequisite(f"cannot tell the version of java: {answer.stderr.strip()}")
    major = int(found.group(1))
    # Java 8 and older call themselves 1.x.
    return int(found.group(2) or 0) if major == 1 else major


def kafka_classpath() -> Path:
    """The folder of the broker's jars, copied from Maven Central once per ``pom.xml``.

    A changed pom (a new Kafka version) fetches again; a fetch cut short leaves nothing
    that looks complete, because the folder is renamed into place only when it is.
    """
    wanted = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    stamp = KAFKA_CLASSPATH / ".pom-sha256"
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return KAFKA_CLASSPATH
    if shutil.which("mvn") is None:
        raise MissingPrerequisite(
            "the embedded Kafka broker is fetched from Maven Central once, and Maven is not on"
            f" the PATH: install it (Debian: apt-get install maven), {ELSEWHERE}"
        )
    partial = KAFKA_CLASSPATH.with_name("lib.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("fetching Apache Kafka from Maven Central into %s (once)", KAFKA_CLASSPATH)
    fetch = subprocess.run(
        [
            "mvn",
            "--batch-mode",
            "--quiet",
            "--file",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if fetch.returncode != 0 or not any(partial.glob("kafka_*.jar")):
        tail = "\n".join((fetch.stdout + fetch.stderr).splitlines()[-20:])
        raise EmbeddedServerError(f"could not fetch Apache Kafka with Maven:\n{tail}")
    shutil.rmtree(KAFKA_CLASSPATH, ignore_errors=True)
    partial.rename(KAFKA_CLASSPATH)
    stamp.write_text(wanted)
    return KAFKA_CLASSPATH


def prepare_kafka() -> Path:
    """Everything the embedded broker needs before it can start: Java, then its jars."""
    major = java_major_version()
    if major < MIN_JAVA:
        raise MissingPrerequisite(
            f"the embedded Kafka broker needs Java {MIN_JAVA}+, and `java` is Java {major}:"
            f" install a newer one and put it first on the PATH, {ELSEWHERE}"
        )
    return kafka_classpath()


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
        other_ports: Mapping[str, int] | None = None,
        signature: str | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self._run_dir = run_dir
        self._is_ready = is_ready
        self._start_timeout_s = start_timeout_s
        self._other_ports = dict(other_ports or {})
        # What a left-behind process's command line must contain to be taken for ours.
        self._signature = signature or Path(command[0]).name
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

    def prepare(self) -> None:
        """Work done once before the process starts (none here)."""

    def start(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        ensure_port_free(self.name, HOST, self.port)
        for what, port in self._other_ports.items():
            ensure_port_free(f"{self.name} {what}", HOST, port)
        self.prepare()
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

    def stop(self, timeout_s: float = 15.0) -> None:
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

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as when a machine or container dies."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
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
        if self._signature.encode() in command_line:
            log.warning("stopping %s left behind by an earlier run (pid %d)", self.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._pid_path.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class EmbeddedKafka(EmbeddedServer):
    """Apache Kafka as one KRaft node, its storage and settings in ``data_dir``.

    ``data_dir`` holds ``cluster-id`` and ``admin-password`` (both made once),
    ``server.properties`` (written at every start from the arguments) and ``logs/``, the
    log directory: formatted once, so topics and committed offsets outlive the process.

    With ``scram`` the client listener takes SASL SCRAM-SHA-512 only and Kafka's own
    ``StandardAuthorizer`` enforces ACLs (``shared.kafka_access`` makes the users and
    grants). The broker itself is ``admin``, a super user whose SCRAM credential the format
    step writes, so it exists before anything can connect; its controller listener takes
    SASL PLAIN for that one user, so the controller port lets nobody else in either.
    """

    def __init__(
        self,
        port: int,
        run_dir: Path,
        data_dir: Path,
        *,
        controller_port: int,
        scram: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.controller_port = controller_port
        self.scram = scram
        self._overrides = dict(overrides or {})
        super().__init__(
            "kafka",
            [
                "java",
                f"-Xmx{KAFKA_HEAP}",
                "-Xms128m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={KAFKA_LOG_CONFIG}",
                "-cp",
                f"{KAFKA_CLASSPATH}/*",
                "kafka.Kafka",
                str(self.config_path),
            ],
            port=port,
            run_dir=run_dir,
            is_ready=self._answers_metadata,
            start_timeout_s=90.0,
            other_ports={"controller": controller_port},
            signature=str(self.config_path),
        )

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def bootstrap_servers(self) -> str:
        return kafka_bootstrap(self.port)

    def admin_password(self) -> str:
        return kept_secret(self.data_dir / ADMIN_PASSWORD_FILE)

    def admin_options(self) -> dict[str, Any]:
        """aiokafka options that connect as the broker's super user."""
        if not self.scram:
            return {}
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": ADMIN_USER,
            "sasl_plain_password": self.admin_password(),
        }

    def prepare(self) -> None:
        classpath = prepare_kafka()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = self.admin_password()
        _write_private(self.config_path, self.server_properties(password))
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self.data_dir / "cluster-id"
        if not cluster_id.exists():
            # Kafka's cluster ids are 16 random bytes in URL-safe base64, unpadded.
            cluster_id.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22])
        log.info("formatting the Kafka storage in %s (once)", self.log_dir)
        formatted = subprocess.run(
            [
                "java",
                "-cp",
                f"{classpath}/*",
                f"-Dlog4j2.configurationFile={KAFKA_LOG_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self.config_path),
                # One argument with "=": a random id may start with "-", which the
                # tool would otherwise take for an option.
                f"--cluster-id={cluster_id.read_text().strip()}",
                "--standalone",
                # Always, so the same storage can later be started with SASL on.
                "--add-scram",
                f"SCRAM-SHA-512=[name={ADMIN_USER},password={password}]",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            tail = "\n".join((formatted.stdout + formatted.stderr).splitlines()[-20:])
            raise EmbeddedServerError(f"formatting the Kafka storage failed:\n{tail}")

    def server_properties(self, admin_password: str) -> str:
        client = "SASL_PLAINTEXT" if self.scram else "PLAINTEXT"
        settings: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": f"CLIENT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"CLIENT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": f"CLIENT:{client},CONTROLLER:{client}",
            "log.dirs": str(self.log_dir),
            # The embedded broker is the local log of record: rebuilds replay all of it.
            "log.retention.ms": "-1",
            "num.partitions": "4",
            # One node: every internal topic has one replica, and few partitions to create.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A group forms as soon as its first member joins, not three seconds later.
            "group.initial.rebalance.delay.ms": "0",
        }
        if self.scram:
            plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
            scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
            settings |= {
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                "listener.name.client.scram-sha-512.sasl.jaas.config": (
                    f'{scram} required username="{ADMIN_USER}" password="{admin_password}";'
                ),
                "sasl.mechanism.controller.protocol": "PLAIN",
                "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
                "listener.name.controller.plain.sasl.jaas.config": (
                    f'{plain} required username="{ADMIN_USER}" password="{admin_password}"'
                    f' user_{ADMIN_USER}="{admin_password}";'
                ),
                "authorizer.class.name": (
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
                ),
                "super.users": f"User:{ADMIN_USER}",
                "allow.everyone.if.no.acl.found": "false",
            }
        settings |= self._overrides
        lines = ["# Written by shared/embedded.py at every start; edits are overwritten."]
        return "\n".join([*lines, *(f"{key}={value}" for key, value in settings.items())]) + "\n"

    def _answers_metadata(self) -> bool:
        """The broker answers a metadata request and lists itself: it is ready for clients."""
        if not _accepts_connections(self.port):
            return False
        return _in_own_loop(_describes_cluster(self.bootstrap_servers, self.admin_options()))


def embedded_kafka(
    port: int,
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    controller_port: int | None = None,
    scram: bool = False,
    overrides: Mapping[str, str] | None = None,
) -> EmbeddedKafka:
    """Apache Kafka on ``port`` (its controller on ``controller_port``, by default a free
    one), keeping its data in ``data_dir`` (by default ``run_dir/kafka``)."""
    return EmbeddedKafka(
        port,
        run_dir,
        data_dir or run_dir / "kafka",
        controller_port=controller_port or free_port(),
        scram=scram,
        overrides=overrides,
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


def kept_secret(path: Path) -> str:
    """A random secret kept in ``path`` (mode 600), made the first time it is asked for."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _in_own_loop(check: Any) -> bool:
    """Run an async check to its end, also when the caller is inside an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        answer: bool = thread.submit(asyncio.run, check).result()
        return answer


async def _describes_cluster(bootstrap_servers: str, options: dict[str, Any]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=3000, **options
    )
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return bool(cluster.get("brokers"))


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


def main(argv: list[str] | None = None) -> None:
    """``python -m shared.embedded prepare``: Java checked and Kafka fetched, or one line."""
    arguments = argv if argv is not None else sys.argv[1:]
    if arguments != ["prepare"]:
        print("usage: python -m shared.embedded prepare", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(f"Apache Kafka ready in {prepare_kafka()}")
    except EmbeddedServerError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
