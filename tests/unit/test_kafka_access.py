"""The broker's users and ACLs come from the topic catalogue, and the catalogue is what the
services really do; the embedded broker's settings are the ones the README promises."""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from services.openapi import document_only_settings
from shared.embedded import KAFKA_HEAP, KAFKA_POM, embedded_kafka
from shared.kafka_access import (
    OPERATOR,
    Grant,
    operator_grants,
    partner_grants,
    platform_grants,
    service_grants,
)
from shared.runtime import Runtime
from shared.topics import CATALOGUE, SERVICES, consumed_by, published_by
from tests.conftest import KAFKA_IMAGE_VERSION

ROOT = Path(__file__).resolve().parents[2]


def runtime_of(service: str) -> Runtime:
    app = import_module(f"services.{service}.app").create_app(document_only_settings(service))
    runtime: Runtime = app.state.runtime
    return runtime


@pytest.mark.parametrize("service", SERVICES)
def test_the_catalogue_lists_exactly_what_each_service_consumes_and_publishes(
    service: str,
) -> None:
    runtime = runtime_of(service)
    assert set(runtime.subscriptions) == set(consumed_by(service))
    assert runtime.produces == set(published_by(service))


def test_every_topic_in_the_catalogue_is_published_by_one_party_and_named_once() -> None:
    names = [topic.name for topic in CATALOGUE]
    assert len(names) == len(set(names))
    assert published_by("partners") == ("referral-submitted",)


def allowed(grants: list[Grant], user: str) -> set[tuple[str, str, str]]:
    return {(g.resource, g.name, g.operation) for g in grants if g.user == user}


def test_a_partner_may_write_referral_submitted_and_nothing_else() -> None:
    grants = partner_grants("northvale-primary", "ns-")
    assert allowed(grants, "northvale-primary") == {
        ("topic", "ns-referral-submitted", "WRITE"),
        ("topic", "ns-referral-submitted", "DESCRIBE"),
    }


def test_allocation_reads_its_inputs_in_its_own_group_and_writes_only_what_it_publishes() -> None:
    grants = allowed(service_grants("allocation", "ns-"), "allocation")
    reads = {name for kind, name, operation in grants if kind == "topic" and operation == "READ"}
    writes = {name for kind, name, operation in grants if kind == "topic" and operation == "WRITE"}
    groups = {(name, operation) for kind, name, operation in grants if kind == "group"}
    assert reads == {"ns-referral-received", "ns-family-erased"}
    assert writes == {
        "ns-case-allocated",
        "ns-case-closed",
        "ns-team-capacity-changed",
        "ns-referral-received.dlq",
        "ns-family-erased.dlq",
    }
    assert groups == {("ns-allocation", "READ"), ("ns-allocation", "DESCRIBE")}


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_may_write_a_topic_another_party_publishes(service: str) -> None:
    writes = {
        name
        for kind, name, operation in allowed(service_grants(service), service)
        if kind == "topic" and operation == "WRITE"
    }
    others = {topic.name for topic in CATALOGUE if topic.published_by != service}
    assert not writes & others


def test_the_operator_reads_dead_letters_and_replays_into_consumed_topics_only() -> None:
    grants = allowed(operator_grants(), OPERATOR)
    reads = {name for kind, name, operation in grants if operation == "READ"}
    writes = {name for kind, name, operation in grants if operation == "WRITE"}
    assert reads == {f"{topic.name}.dlq" for topic in CATALOGUE if topic.consumed_by}
    assert writes == {topic.name for topic in CATALOGUE if topic.consumed_by}
    assert "performance-snapshot" not in writes


def test_every_grant_is_namespaced() -> None:
    grants = platform_grants("t123-", partners=("p1",))
    assert grants
    assert all(grant.name.startswith("t123-") for grant in grants)


def compose_kafka_version() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image: str = compose["services"]["kafka"]["image"]
    return image.removeprefix("apache/kafka:")


def pom_kafka_version() -> str:
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", KAFKA_POM.read_text())
    assert found is not None
    return found.group(1)


def test_compose_and_the_docker_tests_run_the_embedded_brokers_kafka_version_line() -> None:
    line = pom_kafka_version().rsplit(".", 1)[0]
    assert pom_kafka_version().startswith("4.")
    assert compose_kafka_version().rsplit(".", 1)[0] == line
    assert KAFKA_IMAGE_VERSION.rsplit(".", 1)[0] == line


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def test_the_embedded_broker_is_one_kraft_node_on_loopback_with_its_logs_in_the_data_folder(
    tmp_path: Path,
) -> None:
    kafka = embedded_kafka(19092, tmp_path / "run", data_dir=tmp_path / "kafka")
    settings = properties(kafka.server_properties("secret"))
    assert settings["process.roles"] == "broker,controller"
    assert settings["listeners"] == (
        f"CLIENT://127.0.0.1:19092,CONTROLLER://127.0.0.1:{kafka.controller_port}"
    )
    assert settings["log.dirs"] == str((tmp_path / "kafka" / "logs").resolve())
    assert settings["listener.security.protocol.map"] == "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert "authorizer.class.name" not in settings
    heap = KAFKA_HEAP.removesuffix("m")
    assert f"-Xmx{KAFKA_HEAP}" in kafka.command
    assert int(heap) <= 768


def test_with_scram_the_embedded_broker_authenticates_every_listener_and_enforces_acls(
    tmp_path: Path,
) -> None:
    kafka = embedded_kafka(19092, tmp_path / "run", data_dir=tmp_path / "kafka", scram=True)
    settings = properties(kafka.server_properties("s3cret"))
    assert settings["listener.security.protocol.map"] == (
        "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert settings["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert settings["authorizer.class.name"].endswith("StandardAuthorizer")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["super.users"] == "User:admin"
    assert 'password="s3cret"' in settings["listener.name.client.scram-sha-512.sasl.jaas.config"]


def test_each_grant_is_asked_for_once_as_the_broker_refuses_duplicates() -> None:
    grants = platform_grants("ns-", ["northvale-primary"])

    assert len(grants) == len(set(grants))
    assert Grant("referral", "topic", "ns-family-erased", "WRITE") in grants
    assert Grant("referral", "topic", "ns-family-erased", "READ") in grants
