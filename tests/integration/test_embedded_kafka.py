"""The embedded Apache Kafka: durable across restarts (a clean stop and a SIGKILL alike),
and clear and tidy when it cannot start."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.embedded import EmbeddedKafka, EmbeddedServerError, embedded_kafka, free_port
from shared.serve import PortInUse
from tests.support import eventually

pytestmark = pytest.mark.infra

TOPIC = "durable"
# aiokafka retries a coordinator lookup or an offset commit for as long as the broker
# answers "not yet": each step gets this long, then fails the test rather than hanging it.
STEP_S = 90.0


@pytest.fixture
def kafka(tmp_path: Path) -> EmbeddedKafka:
    return embedded_kafka(free_port(), tmp_path / "run", data_dir=tmp_path / "kafka")


async def write_and_commit(bootstrap: str, values: list[bytes], committed: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC, value, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="readers", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(TOPIC, 0)])
        await consumer.commit({TopicPartition(TOPIC, 0): committed})
        assert await consumer.committed(TopicPartition(TOPIC, 0)) == committed
    finally:
        await consumer.stop()


async def read_back(bootstrap: str, committed_at_least: int) -> tuple[list[bytes], int | None]:
    """Every record of partition 0, and the offset the group ``readers`` committed there.

    Just after a start the broker may still be loading its offsets topic, and an offset
    fetch outside a group join can then answer "none yet"; it is asked again until the
    offset is there (a lost offset never comes, and fails the test).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="readers", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])

        async def committed_offset() -> int | None:
            offset: int | None = await consumer.committed(partition)
            return offset

        committed = await eventually(
            committed_offset, lambda offset: (offset or 0) >= committed_at_least, timeout_s=20
        )
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while len(values) < end:
            batch = await consumer.getmany(partition, timeout_ms=5000)
            values += [record.value for record in batch.get(partition, [])]
        return values, committed
    finally:
        await consumer.stop()


async def test_topics_and_committed_offsets_survive_a_stop_and_a_sigkill(
    kafka: EmbeddedKafka,
) -> None:
    kafka.start()
    try:
        bootstrap = kafka.bootstrap_servers
        await asyncio.wait_for(write_and_commit(bootstrap, [b"one", b"two", b"three"], 2), STEP_S)
        kafka.stop()
        kafka.start()
        read = await asyncio.wait_for(read_back(bootstrap, 2), STEP_S)
        assert read == ([b"one", b"two", b"three"], 2)

        await asyncio.wait_for(write_and_commit(bootstrap, [b"four"], committed=4), STEP_S)
        kafka.kill()
        kafka.start()
        assert await asyncio.wait_for(read_back(bootstrap, 4), STEP_S) == (
            [b"one", b"two", b"three", b"four"],
            4,
        )
    finally:
        kafka.stop()
    cluster_id = (kafka.data_dir / "cluster-id").read_text()
    assert f"cluster.id={cluster_id}" in (kafka.log_dir / "meta.properties").read_text()


def test_a_port_in_use_is_an_immediate_clear_error(kafka: EmbeddedKafka) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", kafka.port))
        taken.listen()
        started = time.monotonic()
        with pytest.raises(PortInUse, match=f"port {kafka.port} on 127.0.0.1 is already in use"):
            kafka.start()
    assert time.monotonic() - started < 2
    assert kafka.pid is None


def test_a_broker_that_dies_while_starting_is_reported_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    kafka = embedded_kafka(
        free_port(),
        tmp_path / "run",
        data_dir=tmp_path / "kafka",
        # The storage tool accepts it; the broker refuses it while starting.
        overrides={"authorizer.class.name": "org.example.NoSuchAuthorizer"},
    )
    with pytest.raises(EmbeddedServerError, match="kafka exited with code") as refused:
        kafka.start()
    assert "NoSuchAuthorizer" in str(refused.value)
    assert kafka.pid is None
    assert not list((tmp_path / "run").glob("*.pid"))
