"""Test infrastructure: a real Apache Kafka broker and MongoDB-protocol server.

Where each comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` or ``MONGODB_URI`` when set;
Docker containers when ``EARLYHELP_TEST_INFRA=docker``; otherwise the embedded Apache Kafka
(one KRaft node) and SecantusDB processes on free ports, each started when a test first
needs it, one for the whole session, and stopped at its end however it ends. Each test
gets its own topic namespace and database prefix.
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
from tests.auth import TEST_DEAD_LETTER_KEY, TEST_MATCH_KEY_SECRET, TEST_SECRET

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
            "dead_letter_key": TEST_DEAD_LETTER_KEY,
            "match_key_secret": TEST_MATCH_KEY_SECRET,
            "sample_data": True,
            # Tests write faster than any partner; the write limit's own tests set theirs.
            "write_rate_per_s": 10_000,
            "write_burst": 10_000,
            **overrides,
        }
        return settings_class.model_validate(values)


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database alone: contract suites of the stores need no broker."""
    if uri := os.environ.get("MONGODB_URI"):
        yield uri
    elif os.environ.get("EARLYHELP_TEST_INFRA") == "docker":
        yield from _mongodb_container()
    else:
        yield from _embedded_mongodb(tmp_path_factory.mktemp("mongodb"))


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
    elif os.environ.get("EARLYHELP_TEST_INFRA") == "docker":
        yield from _kafka_container()
    else:
        yield from _embedded_kafka(tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def infra(kafka_bootstrap_servers: str, mongodb_uri: str) -> Infra:
    return Infra(kafka_bootstrap_servers, mongodb_uri)


@pytest.fixture
def namespace() -> Namespace:
    token = uuid.uuid4().hex[:10]
    return Namespace(topics=f"t{token}-", databases=f"t{token}_")


def _embedded_mongodb(run_dir: Path) -> Iterator[str]:
    from shared.embedded import embedded_mongodb, free_port, mongodb_uri

    mongodb = embedded_mongodb(free_port(), run_dir, ":memory:")
    try:
        mongodb.start()
        yield mongodb_uri(mongodb.port)
    finally:
        mongodb.stop()


def _embedded_kafka(run_dir: Path) -> Iterator[str]:
    from shared.embedded import embedded_kafka, free_port, kafka_bootstrap

    kafka = embedded_kafka(free_port(), run_dir, data_dir=run_dir / "data")
    try:
        kafka.start()
        yield kafka_bootstrap(kafka.port)
    finally:
        kafka.stop()


def _kafka_container() -> Iterator[str]:
    """Apache Kafka, one KRaft node, advertising the host port it is published on so that
    clients outside the container can reach it."""
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
    with kafka:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        yield f"localhost:{kafka_port}"


def _mongodb_container() -> Iterator[str]:
    """A single-node MongoDB replica set: transactions need one."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with (
        DockerContainer("mongo:7")
        .with_command("--replSet rs0 --bind_ip_all")
        .with_exposed_ports(27017) as mongo
    ):
        wait_for_logs(mongo, "Waiting for connections")
        port = mongo.get_exposed_port(27017)
        mongo.exec(
            "mongosh --quiet --eval "
            "\"rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'localhost:27017'}]})\""
        )
        yield f"mongodb://{mongo.get_container_host_ip()}:{port}/?directConnection=true"
