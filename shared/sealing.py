"""Data sealed at rest: AES-256-GCM under a key derived from a service secret.

A sealed value is the 12-byte nonce, then the ciphertext and its tag. The context (what the
value is, and which record it belongs to) is bound in as associated data, so a sealed value
moved to another record does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class Unsealable(ValueError):
    """The value was sealed under another key or for another record, or was altered."""


class Sealer:
    """Seals and opens values for one purpose under one secret."""

    def __init__(self, secret: bytes, *, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            secret
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, *, context: str) -> bytes:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise Unsealable("the value does not open with this key for this record") from None
