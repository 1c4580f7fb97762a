"""Without Java 17+ or Maven, the embedded broker's preparation says what is missing and how
to fix it, in one line, and ``python -m shared.embedded prepare`` (the first step of
``make run`` and ``make test``) exits non-zero."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared import embedded
from shared.embedded import MissingPrerequisite, prepare_kafka

ROOT = Path(__file__).resolve().parents[2]


def fake_java(folder: Path, version: str) -> None:
    """A ``java`` that reports ``version`` as the real one does, on stderr."""
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-04-15' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)


def test_without_java_the_error_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingPrerequisite) as missing:
        prepare_kafka()
    message = str(missing.value)
    assert "\n" not in message
    assert "needs Java 17+" in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "KAFKA_BOOTSTRAP_SERVERS" in message


def test_an_old_java_is_named_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_java(tmp_path, "11.0.22")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingPrerequisite, match="`java` is Java 11"):
        prepare_kafka()


def test_without_maven_the_first_fetch_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_java(tmp_path, "17.0.15")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded, "KAFKA_CLASSPATH", tmp_path / "kafka" / "lib")
    with pytest.raises(MissingPrerequisite, match="Maven is not on the PATH") as missing:
        prepare_kafka()
    assert "apt-get install maven" in str(missing.value)
    assert not (tmp_path / "kafka" / "lib").exists()


def test_the_prepare_command_prints_one_line_and_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.embedded", "prepare"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: the embedded Kafka broker needs Java 17+")
