"""Kafka factories: the FastStream broker for consuming, a producer for the outbox relay."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.kafka_security import KafkaSecurity
from shared.outbox import OutgoingMessage
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

TOPIC_CONFIG = 1
"""DescribeConfigs' source of a value set on the topic itself (DYNAMIC_TOPIC_CONFIG)."""


def create_broker(settings: ServiceSettings) -> KafkaBroker:
    """The service's broker; built by ``create_app()``, never at import time.

    On stop it waits up to ``shutdown_timeout_s`` for messages being handled to finish (and
    be committed) before it leaves the group.
    """
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        security=KafkaSecurity().faststream_security(),
        logger=logging.getLogger(f"{settings.service_name}.broker"),
        graceful_timeout=settings.shutdown_timeout_s,
    )


class KafkaPublisher:
    """Publishes outbox records with the idempotent producer, waiting for every
    acknowledgement from all in-sync replicas.

    Records are sent without waiting in between, so one batch costs one round trip, and a
    partition keeps them in the order they were sent; idempotence lets the producer retry
    a send whose answer was lost without writing the record twice or out of order.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Made here, not in __init__: aiokafka binds to the running event loop.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            **KafkaSecurity().aiokafka_options(),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is None:
            raise RuntimeError("publisher not started")
        pending = [
            await self._producer.send(
                message.topic,
                value=message.value,
                key=message.key,
                headers=[(name, value.encode()) for name, value in message.headers.items()],
            )
            for message in messages
        ]
        for delivery in pending:
            await delivery


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int,
    retention_ms: Mapping[str, int] | None = None,
) -> None:
    """Create the topics a service uses, so partitions are as configured, not auto-created,
    and set the retention of those in ``retention_ms`` (created or not): topics that may
    hold personal data are kept a set time, the others as the broker keeps them."""
    kept = dict(retention_ms or {})
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **KafkaSecurity().aiokafka_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=topic,
                num_partitions=partitions,
                replication_factor=1,
                topic_configs={"retention.ms": str(kept[topic])} if topic in kept else None,
            )
            for topic in sorted(set(topics) - existing)
        ]
        if missing:
            # Another replica may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", [topic.name for topic in missing])
        if changed := sorted(set(kept) & existing):
            await admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, topic, {"retention.ms": str(kept[topic])}
                    )
                    for topic in changed
                ]
            )
    finally:
        await admin.close()


async def topic_retention_ms(bootstrap_servers: str, topic: str) -> int | None:
    """A topic's own ``retention.ms``, or None when it keeps the broker's default."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **KafkaSecurity().aiokafka_options()
    )
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for _, _, _, _, entries in response.resources:
        for name, value, _, source, *_ in entries:
            if name == "retention.ms":
                return int(value) if source == TOPIC_CONFIG else None
    return None


async def topic_partitions(bootstrap_servers: str, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of those of ``topics`` that exist, in order; none is created.

    Asked of the admin client: a consumer knows only the topics it already tracks, and a
    producer's metadata request would create a missing topic.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **KafkaSecurity().aiokafka_options()
    )
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(set(topics)))
    finally:
        await admin.close()
    return sorted(
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic["error_code"] == 0
        for partition in topic["partitions"]
    )
