"""The services' OpenAPI documents, checked in under ``shared/contracts/openapi/``.

Partners build against these without running anything, and a change to an HTTP API shows in
review as a diff of its document. ``python -m services.openapi`` checks the files are
current; ``--write`` (``make schemas``) refreshes them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from shared.contracts import OPENAPI_DIR, load_schema, render

SERVICES = ("referral", "allocation", "audit", "reporting")
DOCUMENT_ONLY_SECRET = "placeholder-secret-for-printing-the-openapi-document-only"


def openapi_path(service: str) -> Path:
    return OPENAPI_DIR / f"{service}.json"


def current_openapi(service: str) -> dict[str, Any]:
    """What ``create_app().openapi()`` serves at ``/openapi.json``; nothing is connected.

    The document does not depend on the service's secrets, so placeholders stand in for
    them: printing the contract needs no credentials.
    """
    create_app: Callable[[Any], FastAPI] = import_module(f"services.{service}.app").create_app
    return create_app(document_only_settings(service)).openapi()


def document_only_settings(service: str) -> Any:
    """The service's settings with placeholder secrets, for an app that never connects."""
    settings_class = getattr(
        import_module(f"services.{service}.settings"), f"{service.title()}Settings"
    )
    secrets = ("auth_secret", "dead_letter_key", "match_key_secret")
    return settings_class.model_validate(dict.fromkeys(secrets, DOCUMENT_ONLY_SECRET))


def write_openapi() -> list[Path]:
    OPENAPI_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for service in SERVICES:
        openapi_path(service).write_text(render(current_openapi(service)), encoding="utf-8")
        written.append(openapi_path(service))
    return written


def check() -> list[str]:
    """Every stale or missing document; empty when they are up to date."""
    problems = []
    for service in SERVICES:
        path = openapi_path(service)
        checked_in = load_schema(path)
        if checked_in is None:
            problems.append(f"{path.name}: missing; run `make schemas` to write it")
        elif checked_in != current_openapi(service):
            problems.append(f"{path.name}: out of date; run `make schemas` to refresh it")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.openapi",
        description="Check the services' OpenAPI documents under shared/contracts/openapi.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite them from the apps")
    if parser.parse_args(argv).write:
        for path in write_openapi():
            print(f"wrote {path}")
        return 0
    if problems := check():
        print(*problems, sep="\n", file=sys.stderr)
        return 1
    print("OpenAPI documents up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
