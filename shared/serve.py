"""Running one service's HTTP API (and with it its consumers) under uvicorn."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from shared.logs import configure_logging, uvicorn_log_config
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class PortInUse(RuntimeError):
    def __init__(self, what: str, host: str, port: int) -> None:
        super().__init__(
            f"{what}: port {port} on {host} is already in use; "
            f"stop whatever holds it or choose another port"
        )


def ensure_port_free(what: str, host: str, port: int) -> None:
    """Fail fast with a clear message instead of a server that hangs or dies obscurely."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(what, host, port) from None


def _stopped_by(signum: int, _: FrameType | None) -> None:
    log.info("stopped cleanly on %s", signal.Signals(signum).name)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and exit with code 0.

    uvicorn shuts down gracefully on either signal (the lifespan drains the consumer and
    the outbox relay), then re-raises the signal with the handler that was there before it
    started. Ours only logs, so a clean stop exits 0 instead of dying by the signal, which
    orchestrators would report as a crash.
    """
    configure_logging(
        settings.service_name, level=settings.log_level, log_format=settings.log_format
    )
    try:
        ensure_port_free(f"{settings.service_name} HTTP", settings.http_host, settings.http_port)
    except PortInUse as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_by)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(),
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
    )
