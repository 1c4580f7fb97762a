"""Secrets from the environment or a mounted file, never from the repository.

Each secret is one setting and its ``_FILE`` twin (``EARLYHELP_AUTH_SECRET`` or
``EARLYHELP_AUTH_SECRET_FILE``). A service that needs a secret and finds none will not
start: failing closed beats running with a guessable key.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import SecretStr

MIN_SECRET_BYTES = 32
"""HMAC and AES keys derived from shorter secrets are weaker than their 256 bits."""


class SecretMissing(RuntimeError):
    """A secret the service needs is not set, cannot be read, or is too short."""


def read_secret(value: SecretStr | None, file: Path | None, *, variable: str) -> bytes:
    """The secret from ``variable`` or the file ``variable_FILE`` names."""
    if value is not None:
        secret = value.get_secret_value().encode()
    elif file is not None:
        try:
            secret = file.read_bytes().strip()
        except OSError as error:
            raise SecretMissing(f"cannot read {variable}_FILE: {error}") from None
    else:
        raise SecretMissing(
            f"no {variable}: set {variable} or {variable}_FILE"
            " (make run creates one under the data folder)"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretMissing(f"{variable} must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def new_secret() -> str:
    """A fresh secret, printable, of 64 characters (48 random bytes)."""
    return secrets.token_urlsafe(48)
