"""Dead-letter records: whole bytes when small, a bounded head with a fingerprint when not."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from shared.consumer import DEAD_LETTER_KEEP_BYTES, Record, dead_letter_document
from shared.events import UndecodableEvent


def letter_for(value: bytes) -> dict[str, object]:
    record = Record("t", 0, 7, b"k", value, {})
    return dead_letter_document(
        record,
        UndecodableEvent("unreadable", "not JSON"),
        attempts=1,
        consumer_group="g",
        failed_at=datetime(2026, 11, 23, tzinfo=UTC),
    )


def test_a_small_message_is_kept_whole() -> None:
    letter = letter_for(b'{"a": 1}')

    assert base64.b64decode(str(letter["original_base64"])) == b'{"a": 1}'
    assert letter["original_text"] == '{"a": 1}'
    assert (letter["original_size"], letter["original_truncated"]) == (8, False)


def test_an_oversized_message_keeps_its_head_size_and_fingerprint_under_the_record_limit() -> None:
    value = b"x" * (3 * 1024 * 1024)

    letter = letter_for(value)

    kept = base64.b64decode(str(letter["original_base64"]))
    assert kept == value[:DEAD_LETTER_KEEP_BYTES]
    assert letter["original_truncated"] is True
    assert letter["original_size"] == len(value)
    assert letter["original_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["original_text"] is None
    assert len(str(letter)) < 1_000_000
