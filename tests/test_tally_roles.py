"""Tally's roles: a reader process serves the counts without joining the
consumer group; a consumer process applies the log and serves no reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from petitions.v1 import tally_pb2, tally_pb2_grpc
from tests.harness import ServiceProcess, free_port, start_service, wait_serving
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def _start_tally(system: SystemClient, role: str, log_dir: Path) -> tuple[ServiceProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    process = start_service(
        f"tally-{role}",
        "services.tally",
        [],
        system.namespace.env(system.stack),
        {"PETITIONS_ROLE": role, "PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        log_dir,
    )
    wait_serving(process, address)
    return process, address


async def _group_members(system: SystemClient) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=system.stack.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([system.namespace.consumer_group])
        [group] = response.to_object()["groups"]
        return len(group["members"])
    finally:
        await admin.close()


@pytest.fixture
def reader(system: SystemClient, tmp_path: Path) -> Iterator[str]:
    process, address = _start_tally(system, "reader", tmp_path)
    try:
        yield address
    finally:
        assert process.stop() == 0, process.log_tail()


def test_a_reader_serves_the_same_counts_without_consuming(system: SystemClient, reader: str) -> None:
    petition = system.create_petition("Read elsewhere")
    for territory in ("13", "13", "75"):
        system.sign(system.credential(f"rr-{uuid.uuid4().hex[:8]}", territory=territory).token, petition.id)
    counted = system.settled_tally(petition.id)

    with grpc.insecure_channel(reader) as channel:
        stub = tally_pb2_grpc.TallyStub(channel)
        served = stub.GetTally(tally_pb2.GetTallyRequest(petition_id=petition.id), timeout=10)
        first_watched = next(stub.WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition.id), timeout=10))
    for tally in (served, first_watched):
        assert (tally.total, dict(tally.by_territory)) == (counted.total, dict(counted.by_territory))
    assert asyncio.run(_group_members(system)) == 1, "the reader must not join the consumer group"


def test_a_consumer_applies_the_log_and_serves_no_reads(system: SystemClient, tmp_path: Path) -> None:
    process, address = _start_tally(system, "consumer", tmp_path)
    try:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
            tally_pb2_grpc.TallyStub(channel).GetTally(tally_pb2.GetTallyRequest(petition_id="demo"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # It shares the partitions with the session's tally; together they
        # still count every signature once.
        petition = system.create_petition("Counted by two processes")
        people = [system.credential(f"rc-{uuid.uuid4().hex[:8]}") for _ in range(12)]
        for person in people:
            system.sign(person.token, petition.id)
        system.sign(people[0].token, petition.id)
        assert system.settled_tally(petition.id).total == len(people)
    finally:
        assert process.stop() == 0, process.log_tail()
