"""The capacity bench's readings of the stores' files (loadtests/bench_capacity.py):
pure logic over directory layouts as Kafka and Cassandra write them, so
no store is needed. The bench itself runs against a whole system
(docs/capacity.md says how)."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench_capacity import Cassandra, deltas, kafka_log_dirs, kafka_topic_bytes


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_kafka_bytes_are_the_log_segments_of_each_topics_partitions(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    write(logs / "signatures-0" / "00000000000000000000.log", 100)
    write(logs / "signatures-0" / "00000000000000000042.log", 50)
    write(logs / "signatures-5" / "00000000000000000000.log", 7)
    # Kafka preallocates index files: their size says nothing about records.
    write(logs / "signatures-0" / "00000000000000000000.index", 10_485_760)
    write(logs / "signatures-0" / "00000000000000000000.timeindex", 10_485_760)
    # A topic whose name has dashes and digits in it; the partition is the last part.
    write(logs / "signatures-dead-letter-0" / "00000000000000000000.log", 3)
    write(logs / "__consumer_offsets-49" / "00000000000000000000.log", 11)
    # The broker's own files beside the partitions.
    write(logs / "meta.properties", 90)
    write(logs / "recovery-point-offset-checkpoint", 90)

    assert kafka_topic_bytes([logs]) == {"signatures": 157, "signatures-dead-letter": 3, "__consumer_offsets": 11}


def test_kafka_log_dirs_come_from_each_brokers_properties(tmp_path: Path) -> None:
    for broker, dirs in (("kafka", "/data/a"), ("kafka-2", "/data/b,/data/c")):
        properties = tmp_path / "conf" / broker / "server.properties"
        properties.parent.mkdir(parents=True)
        properties.write_text(f"node.id=1\nlog.dirs={dirs}\nlisteners=PLAINTEXT://127.0.0.1:1\n")
    (tmp_path / "conf" / "cassandra").mkdir()

    assert sorted(kafka_log_dirs(tmp_path)) == [Path("/data/a"), Path("/data/b"), Path("/data/c")]


def test_cassandra_bytes_are_summed_per_table_whatever_its_directory_id(tmp_path: Path) -> None:
    keyspace = tmp_path / "data" / "petitions"
    write(keyspace / "signatures_by_bucket-0a1b" / "nb-1-big-Data.db", 1000)
    write(keyspace / "signatures_by_bucket-0a1b" / "nb-1-big-Index.db", 24)
    # A table dropped and created again has a second directory.
    write(keyspace / "signatures_by_bucket-9f9f" / "nb-2-big-Data.db", 500)
    write(keyspace / "thresholds_reached-77aa" / "nb-1-big-Data.db", 9)
    (keyspace / "petition_records-1234").mkdir()
    cassandra = Cassandra(pid=1, data_dir=tmp_path / "data", jmx_port="7199", java=["java"])

    assert cassandra.table_bytes("petitions") == {
        "signatures_by_bucket": 1524,
        "thresholds_reached": 9,
        "petition_records": 0,
    }


def test_deltas_keep_what_changed_and_what_is_new() -> None:
    before = {"evalsha": 10, "get": 5, "gone": 1}
    after = {"evalsha": 25, "get": 5, "hsetnx": 3}

    assert deltas(before, after) == {"evalsha": 15, "hsetnx": 3}
