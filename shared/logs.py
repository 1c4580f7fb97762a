"""Logging: one JSON object per line in containers, readable text locally, both correlated.

A log line written while a service handles an event or an HTTP request carries that
event's (or request's) correlation id, so everything that came from one submission can be
found across the four services with one query. The id lives in a context variable that the
consumer wrapper (``shared.consumer``) and the HTTP middleware (``shared.runtime``) set.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["json", "text"]

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Chatty at INFO, and their warnings are what an operator needs.
QUIET_LOGGERS = ("aiokafka", "pymongo", "httpx", "uvicorn.access")


@contextmanager
def correlated(value: str | None) -> Iterator[None]:
    """Every line logged inside the block carries ``value`` as its correlation id."""
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


class JsonFormatter(logging.Formatter):
    """time, level, service, logger, message; correlation_id and exception when there are."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := correlation_id.get()) is not None:
            line["correlation_id"] = current
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The local format: the correlation id, when there is one, follows the level."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        current = correlation_id.get()
        return text if current is None else f"{text} [correlation_id={current}]"


def configure_logging(service: str, *, level: str, log_format: LogFormat) -> logging.Handler:
    """Send every logger's records to stderr in ``log_format``; returns the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def uvicorn_log_config() -> dict[str, object]:
    """Let uvicorn's loggers reach the root handler instead of installing their own."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
