"""``make run``: the whole platform on one machine, started and stopped as one.

Starts the embedded broker and database unless ``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URI``
point elsewhere, then the four services as separate processes (as they run in production),
waits until each answers, and prints where they are. With ``EARLYHELP_DEMO_RATE`` above 0
the partner traffic simulator then publishes that many submissions a second. Ctrl-C (or
SIGTERM, or any service dying) stops the simulator, the services, then the servers, in
that order, by process id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.embedded import (
    EmbeddedKafka,
    EmbeddedServer,
    EmbeddedServerError,
    embedded_kafka,
    embedded_mongodb,
    mongodb_uri,
)
from shared.kafka_access import admin_access, provision_platform, sasl_environment
from shared.secrets import new_secret
from shared.serve import PortInUse, ensure_port_free
from shared.settings import DEFAULT_KAFKA_PORT, DEFAULT_MONGODB_PORT

log = logging.getLogger("earlyhelp")

SERVICES = ("referral", "allocation", "audit", "reporting")
DEMO_PARTNER = "partner-simulator"
"""The demo traffic's broker user, when the embedded broker authenticates."""


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EARLYHELP_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    mongodb_uri: str | None = Field(default=None, validation_alias="MONGODB_URI")
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_controller_port: int = DEFAULT_KAFKA_PORT + 1
    embedded_kafka_auth: Literal["none", "scram"] = Field(
        default="none",
        description="scram: the embedded broker takes SASL SCRAM-SHA-512 and enforces ACLs;"
        " every service, the operator and the demo partner get users of their own.",
    )
    topic_namespace: str = ""
    mongodb_port: int = DEFAULT_MONGODB_PORT
    referral_port: int = 8001
    allocation_port: int = 8002
    audit_port: int = 8003
    reporting_port: int = 8004
    http_host: str = "127.0.0.1"
    data_dir: Path = Path("data")
    start_timeout_s: float = 90.0
    demo_rate: float = Field(
        default=0.0, ge=0, description="Submissions a second the simulator sends; 0 is off."
    )

    def port_of(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port


class Stopped(Exception):
    """A signal asked the platform to stop."""


def _stop_on_signal(signum: int, _: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s earlyhelp %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = PlatformSettings()
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        run(settings)
    except (PortInUse, EmbeddedServerError, ServiceFailed) as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    except Stopped as stop:
        log.info("stopped (%s)", stop)


class ServiceFailed(RuntimeError):
    pass


def run(settings: PlatformSettings) -> None:
    run_dir = settings.data_dir / "run"
    servers: list[EmbeddedServer] = []
    services: dict[str, subprocess.Popen[bytes]] = {}
    demo: dict[str, subprocess.Popen[bytes]] = {}
    try:
        env = dict(os.environ)
        # A local run is a demonstration: the sample county's teams, auditors, postcodes
        # and directory, unless asked otherwise. A deployment's services default to none.
        env.setdefault("EARLYHELP_SAMPLE_DATA", "true")
        _ensure_secret(settings, env, "EARLYHELP_AUTH_SECRET", "auth-secret")
        _ensure_secret(settings, env, "EARLYHELP_DEAD_LETTER_KEY", "dead-letter-key")
        _ensure_secret(settings, env, "EARLYHELP_MATCH_KEY_SECRET", "match-key-secret")
        # What each process adds to the common environment: its own broker user, if any.
        own: dict[str, dict[str, str]] = {name: {} for name in (*SERVICES, "simulator")}
        if settings.kafka_bootstrap_servers is None:
            kafka = embedded_kafka(
                settings.kafka_port,
                run_dir,
                data_dir=settings.data_dir / "kafka",
                controller_port=settings.kafka_controller_port,
                scram=settings.embedded_kafka_auth == "scram",
            )
            servers.append(kafka)
            kafka.start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
            if kafka.scram:
                own = _broker_users(settings, kafka)
        if settings.mongodb_uri is None:
            mongodb = embedded_mongodb(
                settings.mongodb_port, run_dir, (settings.data_dir / "mongodb").resolve()
            )
            servers.append(mongodb)
            mongodb.start()
            env["MONGODB_URI"] = mongodb_uri(settings.mongodb_port)
        for name in SERVICES:
            ensure_port_free(f"{name} HTTP", settings.http_host, settings.port_of(name))
        for name in SERVICES:
            services[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=env | own[name],
                start_new_session=True,
            )
        _wait_until_ready(settings, services)
        _print_endpoints(settings, env)
        if settings.demo_rate > 0:
            demo["simulator"] = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--rate", f"{settings.demo_rate:g}"],
                env=env | own["simulator"],
                start_new_session=True,
            )
            log.info("demo: partners send %g submissions a second", settings.demo_rate)
        while True:
            for name, process in services.items():
                if process.poll() is not None:
                    raise ServiceFailed(f"{name} exited with code {process.returncode}")
            for name, process in list(demo.items()):
                # The demo's traffic is not the platform: it carries on without it.
                if process.poll() is not None:
                    log.warning("demo: %s exited with code %s", name, process.returncode)
                    del demo[name]
            time.sleep(0.5)
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Traffic first, so nothing is published into services that are stopping.
        _stop_services(demo)
        _stop_services(services)
        for server in reversed(servers):
            server.stop()


def _broker_users(settings: PlatformSettings, kafka: EmbeddedKafka) -> dict[str, dict[str, str]]:
    """Each service (and the demo partner) connects as its own user, with only its grants."""
    users_dir = kafka.data_dir / "users"
    files = provision_platform(
        admin_access(kafka.bootstrap_servers, kafka.admin_password()),
        users_dir,
        namespace=settings.topic_namespace,
        partners=(DEMO_PARTNER,),
    )
    log.info("broker users and ACLs for the services, operations and %s", DEMO_PARTNER)
    own = {name: sasl_environment(name, files[name]) for name in SERVICES}
    own["simulator"] = sasl_environment(DEMO_PARTNER, files[DEMO_PARTNER])
    return own


def _ensure_secret(
    settings: PlatformSettings, env: dict[str, str], variable: str, file_name: str
) -> None:
    """Without a configured secret, a local run makes one under the data folder (readable by
    this user only) and points every service at it, so tokens minted from it work and dead
    letters sealed under it open after a restart."""
    if env.get(variable) or env.get(f"{variable}_FILE"):
        return
    path = (settings.data_dir / file_name).resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_secret())
    env[f"{variable}_FILE"] = str(path)


def _wait_until_ready(
    settings: PlatformSettings, services: dict[str, subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + settings.start_timeout_s
    waiting = set(services)
    while waiting:
        for name in sorted(waiting):
            if services[name].poll() is not None:
                raise ServiceFailed(f"{name} exited with code {services[name].returncode}")
            url = f"http://{settings.http_host}:{settings.port_of(name)}/ready"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            raise ServiceFailed(f"not ready after {settings.start_timeout_s:.0f}s: {waiting}")
        time.sleep(0.2)


def _stop_services(services: dict[str, subprocess.Popen[bytes]], timeout_s: float = 15) -> None:
    for process in services.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in services.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _broker_note(settings: PlatformSettings) -> str:
    if settings.kafka_bootstrap_servers is not None or settings.embedded_kafka_auth == "none":
        return ""
    users = settings.data_dir / "kafka" / "users"
    return (
        f"  (SASL SCRAM-SHA-512 and ACLs; passwords in {users}/;"
        " a partner's user: python -m shared.kafka_access partner add <id>)"
    )


def _print_endpoints(settings: PlatformSettings, env: dict[str, str]) -> None:
    base = f"http://{settings.http_host}"
    lines = [
        "",
        "Early Help platform is running. Ctrl-C stops everything.",
        f"  broker    {env['KAFKA_BOOTSTRAP_SERVERS']}{_broker_note(settings)}",
        f"  database  {env['MONGODB_URI']}",
        f"  referral    {base}:{settings.referral_port}   POST /referrals   (docs: /docs)",
        f"  allocation  {base}:{settings.allocation_port}   GET /cases",
        f"  audit       {base}:{settings.audit_port}   GET /audits, POST /audits/draws",
        f"  reporting   {base}:{settings.reporting_port}   GET /reports/monthly, /dashboard",
        "",
        "Every API but /health and the API documents needs a token. Mint one with:",
        f"  EARLYHELP_AUTH_SECRET_FILE={env.get('EARLYHELP_AUTH_SECRET_FILE', '<the secret file>')}"
        " .venv/bin/python -m shared.auth token --role administrator --sub admin",
        "and send it as Authorization: Bearer <token>. Partners use keys: POST /partner-keys.",
        "",
    ]
    print("\n".join(lines), flush=True)
