"""The deployment files are valid against their published schemas and wire what we rely on.

No Docker engine or cluster is needed: docker-compose.yml is checked against the Compose
Specification's JSON schema (as shipped in the ``check-jsonschema`` wheel), every Kubernetes
manifest against the API's JSON schemas (``kubernetes-validate``, strict: unknown fields
fail). KEDA's ScaledObject is a custom resource those schemas do not cover, so it gets a
structural check of the fields KEDA needs.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.allocation.settings import AllocationSettings
from services.audit.settings import AuditSettings
from services.referral.settings import ReferralSettings
from services.reporting.settings import ReportingSettings
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
SERVICES = {"referral": 8001, "allocation": 8002, "audit": 8003, "reporting": 8004}
SETTINGS: tuple[type[ServiceSettings], ...] = (
    ReferralSettings,
    AllocationSettings,
    AuditSettings,
    ReportingSettings,
)
PARTITIONS = 4

Manifest = dict[str, Any]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def compose_spec_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendored.joinpath("compose-spec.json").read_text())
    return schema


def manifests() -> list[tuple[str, Manifest]]:
    return [
        (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def of_kind(kind: str) -> dict[str, Manifest]:
    return {
        document["metadata"]["name"]: document
        for _, document in manifests()
        if document["kind"] == kind
    }


def variables_read() -> set[str]:
    """Every environment variable some service's settings read."""
    names = set()
    for settings in SETTINGS:
        prefix = settings.model_config.get("env_prefix", "")
        for name, field in settings.model_fields.items():
            alias = field.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator_class(schema).iter_errors(compose())
    ]
    assert errors == []


def test_compose_schema_rejects_a_broken_file() -> None:
    """The check can fail: a misspelt key is caught by the same schema."""
    broken = compose()
    broken["services"]["referral"]["depends_onn"] = ["kafka"]
    validator_class = jsonschema.validators.validator_for(compose_spec_schema())
    assert not validator_class(compose_spec_schema()).is_valid(broken)


@pytest.mark.parametrize("service", SERVICES)
def test_each_compose_service_waits_for_healthy_servers_and_is_healthy_when_ready(
    service: str,
) -> None:
    definition = compose()["services"][service]
    assert definition["command"] == ["python", "-m", f"services.{service}"]
    assert definition["build"]["dockerfile"] == "deploy/Dockerfile"
    assert definition["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "mongodb": {"condition": "service_healthy"},
    }
    port = SERVICES[service]
    assert f"http://127.0.0.1:{port}/ready" in " ".join(definition["healthcheck"]["test"])
    environment = definition["environment"]
    assert environment[f"EARLYHELP_{service.upper()}_PORT"] == port
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "replicaSet=rs0" in environment["MONGODB_URI"]
    assert set(environment) <= variables_read(), set(environment) - variables_read()


def test_compose_mongodb_is_a_replica_set_initiated_by_its_healthcheck() -> None:
    mongodb = compose()["services"]["mongodb"]
    assert mongodb["command"][mongodb["command"].index("--replSet") + 1] == "rs0"
    assert "rs.initiate({_id: 'rs0'" in " ".join(mongodb["healthcheck"]["test"])
    kafka = compose()["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


# ---------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize(
    "manifest",
    [document for _, document in manifests() if document["kind"] != "ScaledObject"],
    ids=[name for name, document in manifests() if document["kind"] != "ScaledObject"],
)
def test_manifest_is_valid_against_the_kubernetes_schemas(manifest: Manifest) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_rejects_a_broken_manifest() -> None:
    deployment = of_kind("Deployment")["allocation"]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_deployment_service_and_budget_wired_to_its_probes_and_config(
    service: str,
) -> None:
    deployment = of_kind("Deployment")[service]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", f"services.{service}"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    sources = {
        next(iter(source)): next(iter(source.values()))["name"] for source in container["envFrom"]
    }
    assert sources == {"configMapRef": "earlyhelp-config", "secretRef": "earlyhelp-secrets"}
    (port,) = container["ports"]
    assert port["containerPort"] == SERVICES[service]
    assert {"name": f"EARLYHELP_{service.upper()}_PORT", "value": str(port["containerPort"])} in (
        container["env"]
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selecting in (of_kind("Service")[service], of_kind("PodDisruptionBudget")[service]):
        selector = selecting["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), selecting["kind"]


def test_configmap_and_secret_hold_only_variables_the_services_read() -> None:
    config = of_kind("ConfigMap")["earlyhelp-config"]["data"]
    secret = of_kind("Secret")["earlyhelp-secrets"]["stringData"]
    assert set(config) | set(secret) <= variables_read()
    assert "MONGODB_URI" in secret
    assert "MONGODB_URI" not in config
    assert int(config["EARLYHELP_KAFKA_PARTITIONS"]) == PARTITIONS
    assert config["EARLYHELP_LOG_FORMAT"] == "json"


def test_a_deployment_loads_no_sample_data_unless_its_config_asks() -> None:
    """No fiction in production: the services default to none, and the cluster's config and
    every deployment's environment leave it so."""
    assert ServiceSettings.model_fields["sample_data"].default is False
    config = of_kind("ConfigMap")["earlyhelp-config"]["data"]
    assert "EARLYHELP_SAMPLE_DATA" not in config
    for deployment in of_kind("Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names = {variable["name"] for variable in container.get("env", [])}
            assert "EARLYHELP_SAMPLE_DATA" not in names


@pytest.mark.parametrize("service", SERVICES)
def test_scaled_object_scales_the_deployment_on_its_consumer_group_lag(service: str) -> None:
    """KEDA's CRD is not in the Kubernetes schemas: check the fields its Kafka scaler reads."""
    scaled = of_kind("ScaledObject")[service]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert (
        scaled["metadata"]["namespace"] == of_kind("Deployment")[service]["metadata"]["namespace"]
    )
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in of_kind("Deployment")
    assert spec["scaleTargetRef"]["name"] == service
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    kafka = triggers["kafka"]["metadata"]
    assert all(isinstance(value, str) for value in kafka.values()), "KEDA wants strings"
    assert kafka["consumerGroup"] == ServiceSettings(service_name=service).consumer_group
    assert re.fullmatch(r"[1-9]\d*", kafka["lagThreshold"])
    # The scaler reads the broker address from the container's environment.
    assert kafka["bootstrapServersFromEnv"] in of_kind("ConfigMap")["earlyhelp-config"]["data"]
    assert "HorizontalPodAutoscaler" not in {document["kind"] for _, document in manifests()}
