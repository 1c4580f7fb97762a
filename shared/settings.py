"""Settings every service reads from its environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_PORT = 9092
DEFAULT_MONGODB_PORT = 27017
DEFAULT_FETCH_MAX_WAIT_MS = 500


def mongodb_uri_for(host: str, port: int) -> str:
    """The URI of a SecantusDB server: it needs ``retryWrites=false`` to keep its write speed."""
    return f"mongodb://{host}:{port}/?retryWrites=false&directConnection=true"


class ServiceSettings(BaseSettings):
    """What every service needs: where the broker and database are, and its own namespace.

    ``topic_namespace`` and ``database_prefix`` let several copies of the platform (tests,
    a staging copy) share one broker and one database server without seeing each other.
    """

    model_config = SettingsConfigDict(env_prefix="EARLYHELP_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default=f"127.0.0.1:{DEFAULT_KAFKA_PORT}",
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Comma-separated Kafka bootstrap servers.",
    )
    mongodb_uri: str = Field(
        default=mongodb_uri_for("127.0.0.1", DEFAULT_MONGODB_PORT),
        validation_alias="MONGODB_URI",
        description="MongoDB connection string.",
    )
    topic_namespace: str = Field(
        default="", description="Prefix put before every topic name, empty in production."
    )
    database_prefix: str = Field(
        default="earlyhelp_", description="Prefix of each service's database name."
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    kafka_partitions: int = Field(default=4, ge=1, description="Partitions of topics we create.")
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    kafka_fetch_max_wait_ms: int = Field(
        default=DEFAULT_FETCH_MAX_WAIT_MS,
        ge=1,
        description="How long the broker may hold a fetch open while no record is there;"
        " a record that arrives is answered at once, so this costs no latency.",
    )
    consumer_batch_wait_ms: int = Field(
        default=200,
        ge=1,
        description="How long a poll waits for records before it returns none; FastStream then"
        " pauses as long again, so a record arriving on an idle topic waits up to about this."
        " Lower cuts latency when idle, but smaller batches cost the database more under load.",
    )
    consumer_max_attempts: int = Field(
        default=3, ge=1, description="Tries of a failing handler before dead-lettering."
    )
    consumer_retry_backoff_s: float = Field(default=0.2, ge=0)
    consumer_batch_size: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Most records taken in one poll; handled together where a service can.",
    )
    outbox_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often the relay looks for unsent events it missed."
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="json: one JSON object a line (the container image sets it); text: local.",
    )
    shutdown_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="On SIGTERM, how long in-flight messages and the outbox relay may finish.",
    )
    readiness_timeout_s: float = Field(
        default=2.0, gt=0, description="How long /ready waits for the broker and the database."
    )
    auth_secret: SecretStr | None = Field(
        default=None, description="HMAC secret that signs staff tokens (shared by the services)."
    )
    auth_secret_file: Path | None = Field(
        default=None, description="A file holding the signing secret, e.g. a mounted secret."
    )

    dead_letter_key: SecretStr | None = Field(
        default=None,
        description="Secret the dead letters' stored originals are sealed under (AES-GCM);"
        " at least 32 bytes, shared by the services and the operations command.",
    )
    dead_letter_key_file: Path | None = Field(
        default=None, description="A file holding the dead-letter secret, e.g. a mounted secret."
    )
    dead_letter_retention_days: int = Field(
        default=30, ge=1, description="Days a dead letter is kept before it is purged."
    )
    personal_topic_retention_days: int = Field(
        default=7,
        ge=1,
        description="Days the broker keeps referral-submitted (partners' submissions, in the"
        " clear) and every dead-letter topic; other topics are kept as the broker keeps them.",
    )
    write_rate_per_s: float = Field(
        default=20.0,
        gt=0,
        description="Writes a second each caller (a partner key, a staff token, else an"
        " address) may make to one replica, sustained; more are answered 429 with Retry-After.",
    )
    write_burst: int = Field(
        default=40, ge=1, description="Writes each caller may make at once before the rate."
    )

    sample_data: bool = Field(
        default=False,
        description="Load the sample county (its teams, auditors, postcode table and service"
        " directory) where the council has configured none. Off in production: a deployment"
        " that configures nothing starts empty and says so in its logs and in /ready.",
    )

    service_name: str = "earlyhelp"
    http_port: int = 8000

    @property
    def database_name(self) -> str:
        return f"{self.database_prefix}{self.service_name}"

    @property
    def consumer_group(self) -> str:
        """Consumer group = service name, namespaced so test runs never share offsets."""
        return f"{self.topic_namespace}{self.service_name}"
