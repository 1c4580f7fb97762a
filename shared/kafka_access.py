"""Who may do what on the broker: SCRAM users and their ACLs, derived from the topic
catalogue in ``shared.topics``.

- Each service has a user of its own, named after it, which may read the topics it consumes
  in its own consumer group (and describe that group: the lag metrics need it), write the
  topics it publishes and its own ``<topic>.dlq`` topics, and create the topics it uses
  (a service creates what it reads too, so it starts cleanly in any order).
- Each partner has a user that may write ``referral-submitted`` and nothing else. A shared
  ``referral-rejected`` would show one partner the others' reasons, so partners learn
  their outcomes over HTTP until per-partner streams exist.
- The operator commands (dead letters, replay, republish) run as ``operations``: it may
  read the dead-letter topics, write the consumed topics (a replay) and describe groups.

Every grant names its topic or group in full, with the topic namespace before it, so a
namespaced copy (a test, a staging copy) gets grants of its own on a shared broker.

    python -m shared.kafka_access partner add northvale-primary   # prints the password once
    python -m shared.kafka_access partner remove northvale-primary
    python -m shared.kafka_access grants [--namespace NS]         # every ACL the table gives

The commands connect as ``KAFKA_SASL_USERNAME`` (an administrator of the broker) when it is
set, else as the embedded broker's ``admin`` (``EARLYHELP_DATA_DIR``/kafka/admin-password).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from shared.embedded import ADMIN_PASSWORD_FILE, kafka_bootstrap, kept_secret
from shared.kafka_security import KafkaSecurity
from shared.settings import DEFAULT_KAFKA_PORT
from shared.topics import (
    CATALOGUE,
    PARTNERS,
    REFERRAL_SUBMITTED,
    SERVICES,
    consumed_by,
    dead_letter_topic,
    published_by,
    topic_name,
)

OPERATOR = "operations"
SCRAM_ITERATIONS = 8192

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]


@dataclass(frozen=True)
class Grant:
    """One ACL: ``user`` may do ``operation`` on the topic or group ``name``."""

    user: str
    resource: Literal["topic", "group"]
    name: str
    operation: Operation

    def line(self) -> str:
        return f"User:{self.user} {self.operation} {self.resource} {self.name}"


def service_grants(service: str, namespace: str = "") -> list[Grant]:
    def topics(names: Iterable[str], *operations: Operation) -> list[Grant]:
        return [
            Grant(service, "topic", topic_name(name, namespace), operation)
            for name in names
            for operation in operations
        ]

    reads, writes = consumed_by(service), published_by(service)
    dead_letters = [dead_letter_topic(name) for name in reads]
    group = topic_name(service, namespace)  # ServiceSettings.consumer_group
    grants = [
        *topics(reads, "READ", "DESCRIBE", "CREATE"),
        *topics([*writes, *dead_letters], "WRITE", "DESCRIBE", "CREATE"),
        Grant(service, "group", group, "READ"),
        Grant(service, "group", group, "DESCRIBE"),
    ]
    # Once each: a topic a service both publishes and reads (family-erased) is named twice.
    return list(dict.fromkeys(grants))


def partner_grants(partner: str, namespace: str = "") -> list[Grant]:
    return [
        Grant(partner, "topic", topic_name(name, namespace), operation)
        for name in published_by(PARTNERS)
        for operation in ("WRITE", "DESCRIBE")
    ]


def operator_grants(namespace: str = "") -> list[Grant]:
    consumed = [topic.name for topic in CATALOGUE if topic.consumed_by]
    return [
        *(
            Grant(OPERATOR, "topic", topic_name(dead_letter_topic(name), namespace), operation)
            for name in consumed
            for operation in ("READ", "DESCRIBE")
        ),
        *(
            Grant(OPERATOR, "topic", topic_name(name, namespace), operation)
            for name in consumed
            for operation in ("WRITE", "DESCRIBE")
        ),
        *(
            Grant(OPERATOR, "group", topic_name(service, namespace), "DESCRIBE")
            for service in SERVICES
        ),
    ]


def platform_grants(namespace: str = "", partners: Sequence[str] = ()) -> list[Grant]:
    """Every grant the platform needs: its services, its operator and these partners."""
    grants = [grant for service in SERVICES for grant in service_grants(service, namespace)]
    grants += operator_grants(namespace)
    return grants + [grant for p in partners for grant in partner_grants(p, namespace)]


class BrokerAccess:
    """Makes and removes SCRAM users and grants them ACLs, with Kafka's admin API.

    Both are idempotent: a user made again gets the new password, a grant made again is
    the same ACL. Every call waits for the broker's answer and raises on a refusal.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._admin = AdminClient(config)

    def set_user(self, user: str, password: str) -> None:
        upsert = UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            password.encode(),
        )
        self._wait(self._admin.alter_user_scram_credentials([upsert]))

    def remove_user(self, user: str) -> None:
        """Remove the user's credential and every ACL that names it; a user already gone is
        no error, so a removal can be run again."""
        every_acl = AclBindingFilter(
            ResourceType.ANY,
            None,
            ResourcePatternType.ANY,
            f"User:{user}",
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        self._wait(self._admin.delete_acls([every_acl]))
        deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
        try:
            self._wait(self._admin.alter_user_scram_credentials([deletion]))
        except KafkaException as error:
            if error.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                raise

    def grant(self, grants: Sequence[Grant]) -> None:
        if not grants:
            return
        resources = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
        bindings = [
            AclBinding(
                resources[grant.resource],
                grant.name,
                ResourcePatternType.LITERAL,
                f"User:{grant.user}",
                "*",
                AclOperation[grant.operation],
                AclPermissionType.ALLOW,
            )
            for grant in grants
        ]
        self._wait(self._admin.create_acls(bindings))

    @staticmethod
    def _wait(futures: dict[Any, Any]) -> None:
        for future in futures.values():
            future.result(timeout=30)


def provision_platform(
    access: BrokerAccess, users_dir: Path, *, namespace: str = "", partners: Sequence[str] = ()
) -> dict[str, Path]:
    """Users for the services, the operator and ``partners``, and all their grants.

    Each password is kept in ``users_dir/<user>`` (mode 600), made the first time, so a
    restart keeps every client's credentials. Returns each user's password file.
    """
    files: dict[str, Path] = {}
    for user in (*SERVICES, OPERATOR, *partners):
        files[user] = users_dir / user
        access.set_user(user, kept_secret(files[user]))
    access.grant(platform_grants(namespace, partners))
    return files


def admin_access(bootstrap_servers: str, admin_password: str) -> BrokerAccess:
    """Access as the embedded broker's own super user, ``admin``."""
    security = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="admin",
        sasl_password=admin_password,
    )
    return BrokerAccess(admin_config(bootstrap_servers, security))


def sasl_environment(user: str, password_file: Path) -> dict[str, str]:
    """The variables that make a process connect as ``user`` (see ``shared.kafka_security``)."""
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file.resolve()),
    }


def admin_config(bootstrap_servers: str, security: KafkaSecurity) -> dict[str, Any]:
    """librdkafka's settings for the same broker and credentials as ``KafkaSecurity``."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "security.protocol": security.security_protocol,
        # An idle admin connection closed by the broker is routine, not worth a log line.
        "log.connection.close": False,
    }
    if security.uses_sasl:
        config |= {
            "sasl.mechanism": security.sasl_mechanism,
            "sasl.username": security.sasl_username,
            "sasl.password": security.password(),
        }
    if security.ssl_cafile is not None:
        config["ssl.ca.location"] = str(security.ssl_cafile)
    if security.ssl_certfile is not None:
        config["ssl.certificate.location"] = str(security.ssl_certfile)
    if security.ssl_keyfile is not None:
        config["ssl.key.location"] = str(security.ssl_keyfile)
    return config


def _command_line_access() -> tuple[BrokerAccess, str]:
    """Access as the configured administrator, or as the embedded broker's own ``admin``."""
    namespace = os.environ.get("EARLYHELP_TOPIC_NAMESPACE", "")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (
        kafka_bootstrap(int(os.environ.get("EARLYHELP_KAFKA_PORT", DEFAULT_KAFKA_PORT)))
    )
    if os.environ.get("KAFKA_SASL_USERNAME"):
        return BrokerAccess(admin_config(bootstrap, KafkaSecurity())), namespace
    data_dir = Path(os.environ.get("EARLYHELP_DATA_DIR", "data"))
    password = (data_dir / "kafka" / ADMIN_PASSWORD_FILE).read_text().strip()
    return admin_access(bootstrap, password), namespace


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.kafka_access", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    partner = commands.add_parser("partner", help="add or remove a partner's broker user")
    partner.add_argument("action", choices=("add", "remove"))
    partner.add_argument("partner_id", help="the partner's id, also its user name")
    partner.add_argument(
        "--password-file", type=Path, help="take the password from this file (default: a new one)"
    )
    listing = commands.add_parser("grants", help="print every ACL the catalogue gives")
    listing.add_argument("--namespace", default=os.environ.get("EARLYHELP_TOPIC_NAMESPACE", ""))
    arguments = parser.parse_args(argv)

    if arguments.command == "grants":
        for grant in platform_grants(arguments.namespace):
            print(grant.line())
        return
    partner_id: str = arguments.partner_id
    if partner_id in (*SERVICES, OPERATOR, "admin"):
        parser.error(f"{partner_id!r} is one of the platform's own users")
    access, namespace = _command_line_access()
    if arguments.action == "remove":
        access.remove_user(partner_id)
        print(f"removed {partner_id}: its user and every ACL naming it")
        return
    password = (
        arguments.password_file.read_text().strip()
        if arguments.password_file
        else secrets.token_urlsafe(24)
    )
    access.set_user(partner_id, password)
    access.grant(partner_grants(partner_id, namespace))
    topic = topic_name(REFERRAL_SUBMITTED, namespace)
    print(f"partner {partner_id} may write {topic} and nothing else")
    if not arguments.password_file:
        print(f"password (shown once): {password}")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # one line for an operator, not a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
