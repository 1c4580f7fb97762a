"""Running one service's HTTP API (and with it its consumers) under uvicorn."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

from shared.settings import ServiceSettings


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


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s {settings.service_name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        ensure_port_free(f"{settings.service_name} HTTP", settings.http_host, settings.http_port)
    except PortInUse as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
