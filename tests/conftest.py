"""Test infrastructure: a real Apache Kafka broker and MongoDB-protocol server.

Where they come from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` and ``MONGODB_URI`` when both
are set; Docker containers when ``EARLYHELP_TEST_INFRA=docker``; otherwise the embedded
Apache Kafka (one KRaft node) and SecantusDB processes on free ports, one of each for the
whole session, stopped at its end however it ends. Each test gets its own topic namespace
and database prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from shared.settings import ServiceSettings
from tests.auth import TEST_SECRET

KAFKA_IMAGE_VERSION = "4.4.0"
"""The Kafka of the Docker path: the same version as ``deploy/kafka/pom.xml``."""

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap_servers: str
    mongodb_uri: str


@dataclass(frozen=True)
class Namespace:
    """Names private to one test, so tests never see each other's topics or data."""

    topics: str
    databases: str

    def topic(self, event_type: str) -> str:
        return f"{self.topics}{event_type}"

    def settings(
        self, settings_class: type[SettingsT], infra: Infra, **overrides: object
    ) -> SettingsT:
        values: dict[str, object] = {
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
            "MONGODB_URI": infra.mongodb_uri,
            "topic_namespace": self.topics,
            "database_prefix": self.databases,
            "kafka_session_timeout_ms": 6000,
            "kafka_heartbeat_interval_ms": 1000,
            "consumer_retry_backoff_s": 0.05,
            "outbox_poll_interval_s": 0.2,
            "auth_secret": TEST_SECRET,
            "sample_data": True,
            **overrides,
        }
        return settings_class.model_validate(values)


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    kafka, mongodb = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGODB_URI")
    if kafka and mongodb:
        yield Infra(kafka, mongodb)
    elif os.environ.get("EARLYHELP_TEST_INFRA") == "docker":
        yield from _containers()
    else:
        yield from _embedded(tmp_path_factory.mktemp("infra"))


@pytest.fixture
def namespace() -> Namespace:
    token = uuid.uuid4().hex[:10]
    return Namespace(topics=f"t{token}-", databases=f"t{token}_")


def _embedded(run_dir: Path) -> Iterator[Infra]:
    from shared.embedded import (
        embedded_kafka,
        embedded_mongodb,
        free_port,
        kafka_bootstrap,
        mongodb_uri,
    )

    kafka = embedded_kafka(free_port(), run_dir, data_dir=run_dir / "kafka")
    mongodb = embedded_mongodb(free_port(), run_dir, ":memory:")
    try:
        kafka.start()
        mongodb.start()
        yield Infra(kafka_bootstrap(kafka.port), mongodb_uri(mongodb.port))
    finally:
        mongodb.stop()
        kafka.stop()


def _containers() -> Iterator[Infra]:
    """Apache Kafka (one KRaft node) and a single-node MongoDB replica set (transactions
    need one). Kafka advertises the host port it is published on, so clients outside the
    container can reach it."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    from shared.embedded import free_port

    kafka_port = free_port()
    kafka_settings = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:{kafka_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "4",
    }
    kafka = DockerContainer(f"apache/kafka:{KAFKA_IMAGE_VERSION}").with_bind_ports(9092, kafka_port)
    for name, value in kafka_settings.items():
        kafka = kafka.with_env(name, value)
    with (
        kafka,
        DockerContainer("mongo:7")
        .with_command("--replSet rs0 --bind_ip_all")
        .with_exposed_ports(27017) as mongo,
    ):
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        wait_for_logs(mongo, "Waiting for connections")
        port = mongo.get_exposed_port(27017)
        mongo.exec(
            "mongosh --quiet --eval "
            "\"rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'localhost:27017'}]})\""
        )
        host = mongo.get_container_host_ip()
        yield Infra(
            f"localhost:{kafka_port}",
            f"mongodb://{host}:{port}/?directConnection=true",
        )
