"""Broker credentials and TLS reach every Kafka client the services make."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from aiokafka import AIOKafkaProducer

from shared.kafka import create_broker
from shared.kafka_security import KafkaSecurity
from shared.settings import ServiceSettings


async def test_sasl_over_tls_reaches_aiokafka_and_the_faststream_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "referral")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("KAFKA_SSL_CAFILE", certifi.where())

    options = KafkaSecurity().aiokafka_options()
    producer = AIOKafkaProducer(bootstrap_servers="broker:9093", **options)
    client = producer.client
    assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("referral", "s3cret")
    assert isinstance(client._ssl_context, ssl.SSLContext)
    assert client._ssl_context.verify_mode is ssl.CERT_REQUIRED

    broker = create_broker(ServiceSettings())
    consumers = broker.config.broker_config.builder.keywords  # type: ignore[attr-defined]
    assert consumers["security_protocol"] == "SASL_SSL"
    assert consumers["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (consumers["sasl_plain_username"], consumers["sasl_plain_password"]) == (
        "referral",
        "s3cret",
    )
    assert isinstance(consumers["ssl_context"], ssl.SSLContext)


def test_plaintext_is_the_default_and_sasl_without_a_password_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KafkaSecurity().aiokafka_options() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().faststream_security() is None
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "referral")
    with pytest.raises(ValueError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaSecurity()
