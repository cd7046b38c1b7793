"""Redis: Debian's redis-server with the stack's own configuration.

Three shapes:

- `Redis()`: the single server of the local stack (layout.ports.redis),
  configured on the command line as it always was.
- `Redis(name, port=P)` and `Redis(name, port=R, replica_of=P)`: members of
  a replicated set watched by Sentinel (the cluster profile). Each keeps its
  configuration in a file in its data directory, written only on its first
  start: Sentinel rewrites it (CONFIG REWRITE) when it turns a primary into
  a replica or back, so a member restarted after a failover comes back in
  the role Sentinel gave it, not in the one it was born with.
- `RedisSentinel(name, port, primary_port)`: `redis-server <conf> --sentinel`
  (Debian's binary is the sentinel too). Sentinels rewrite their file with
  what they learn (their own id, the other sentinels, the replicas, the
  current primary and its epoch), so it too is written only on first start:
  a sentinel restarted with a fresh file would get a new id and be counted
  twice by its peers.

Replication is asynchronous: a write the primary acknowledged and had not
yet sent to the replica when it died is lost by the failover. The services
are built for that (the tally rebuilds a shard from Cassandra when Redis
lost what it had applied; the ledger and the rate limits lose a moment's
entries, see docs/architecture.md). `min-replicas-to-write` is left at 0:
with one replica, 1 would make the promoted primary refuse every write
until the dead one is back (it has no replica left), turning a failover
into an outage, and it would still not stop the loss of the last
acknowledged writes (replication stays asynchronous; the lag bound is
seconds). Production with two replicas would set min-replicas-to-write 1,
min-replicas-max-lag 10, which bounds what an isolated primary accepts
during a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.local.fetch import ensure_redis_server
from deploy.local.layout import Layout

# Locally, failures are declared fast so a failover takes a few seconds:
# down after 1.5 s without an answer, and a failover that stalls (a split
# vote) is tried again after twice the failover timeout, 10 s. Production
# picks 5000 ms (a slow fsync or a busy host must not trigger a failover)
# and Sentinel's default failover timeout, 180 s, or at least 60 s.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 5_000


def _common_settings(port: int, data: Path) -> list[str]:
    """What every server of ours is, as redis.conf lines."""
    return [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{data}"',
        # Every write is appended and fsynced each second, so a restart (or
        # a crash) keeps the counters; no RDB snapshots besides replication.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "daemonize no",
        'logfile ""',
    ]


@dataclass(frozen=True, init=False)
class Redis:
    name: str
    # None: the stack's single server on layout.ports.redis.
    port_number: int | None
    # The port of the primary this server replicates at its first start.
    replica_of: int | None
    # The set's password (requirepass, and masterauth for replication), as
    # the Kubernetes RedisReplication runs; None: none.
    password: str | None
    start_timeout: float
    stop_timeout: float

    # Written out because the constructor takes `port` (the agreed
    # interface) while port() is the Component protocol's method.
    def __init__(
        self,
        name: str = "redis",
        port: int | None = None,
        replica_of: int | None = None,
        password: str | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 20.0,
    ):
        if password is not None and port is None:
            raise ValueError("the stack's single Redis has no password; only members of a set take one")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "port_number", port)
        object.__setattr__(self, "replica_of", replica_of)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "start_timeout", start_timeout)
        object.__setattr__(self, "stop_timeout", stop_timeout)

    def fetch(self, layout: Layout) -> None:
        ensure_redis_server()

    def prepare(self, layout: Layout) -> list[str]:
        data = layout.data(self.name)
        data.mkdir(parents=True, exist_ok=True)
        if self.port_number is None:
            return [
                ensure_redis_server(),
                "--port", str(layout.ports.redis),
                "--bind", "127.0.0.1",
                "--dir", str(data),
                # Locally every write is appended and fsynced each second, so a
                # restart (or a crash) keeps the counters.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--logfile", "",
            ]  # fmt: skip
        conf = data / "redis.conf"
        if not conf.exists():
            lines = _common_settings(self.port_number, data)
            # A replica that lost its link keeps answering reads with what
            # it has (the services only read the primary).
            lines.append("replica-serve-stale-data yes")
            lines.append("min-replicas-to-write 0")
            if self.replica_of is not None:
                lines.append(f"replicaof 127.0.0.1 {self.replica_of}")
            if self.password is not None:
                # masterauth too: any member may become a replica of another.
                lines += [f'requirepass "{self.password}"', f'masterauth "{self.password}"']
            conf.write_text("\n".join(lines) + "\n")
        return [ensure_redis_server(), str(conf)]

    def ready(self, layout: Layout) -> bool:
        """Answers PING; a replica has also finished its first sync with
        its primary (a replica still loading is of no use to a failover)."""
        import redis

        client = redis.Redis(port=self.port(layout), password=self.password, socket_timeout=1, socket_connect_timeout=1)
        try:
            if not client.ping():
                return False
            if self.port_number is None:
                return True
            info = client.info("replication")
            return info.get("role") == "master" or info.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def port(self, layout: Layout) -> int:
        return layout.ports.redis if self.port_number is None else self.port_number


@dataclass(frozen=True, init=False)
class RedisSentinel:
    """One sentinel watching the set whose first primary is primary_port.

    ready() once it names a primary, sees the other sentinels of the set
    (other_sentinels) and its replicas (replicas): before that a failover
    could not reach a quorum or would have no replica to promote."""

    name: str
    port_number: int
    primary_port: int
    service: str
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int
    other_sentinels: int
    replicas: int
    # The set's password: the sentinels require it (as the OT operator's
    # do), log in to the servers and to each other with it; None: none.
    password: str | None
    start_timeout: float
    stop_timeout: float

    def __init__(
        self,
        name: str,
        port: int,
        primary_port: int,
        service: str = "petitions",
        quorum: int = 2,
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        other_sentinels: int = 2,
        replicas: int = 1,
        password: str | None = None,
        start_timeout: float = 40.0,
        stop_timeout: float = 20.0,
    ):
        for field, value in (
            ("name", name),
            ("port_number", port),
            ("primary_port", primary_port),
            ("service", service),
            ("quorum", quorum),
            ("down_after_ms", down_after_ms),
            ("failover_timeout_ms", failover_timeout_ms),
            ("other_sentinels", other_sentinels),
            ("replicas", replicas),
            ("password", password),
            ("start_timeout", start_timeout),
            ("stop_timeout", stop_timeout),
        ):
            object.__setattr__(self, field, value)

    def fetch(self, layout: Layout) -> None:
        ensure_redis_server()

    def prepare(self, layout: Layout) -> list[str]:
        data = layout.data(self.name)
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "sentinel.conf"
        if not conf.exists():
            lines = [
                f"port {self.port_number}",
                "bind 127.0.0.1",
                f'dir "{data}"',
                "daemonize no",
                'logfile ""',
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                # One replica resyncs with the new primary at a time.
                f"sentinel parallel-syncs {self.service} 1",
            ]
            if self.password is not None:
                lines += [
                    f'requirepass "{self.password}"',
                    f'sentinel auth-pass {self.service} "{self.password}"',
                    # What a sentinel logs in to its peers with: without it
                    # they cannot ask each other to vote, and no failover
                    # reaches a quorum.
                    f'sentinel sentinel-pass "{self.password}"',
                ]
            conf.write_text("\n".join(lines) + "\n")
        return [ensure_redis_server(), str(conf), "--sentinel"]

    def ready(self, layout: Layout) -> bool:
        import redis

        client = redis.Redis(port=self.port_number, password=self.password, socket_timeout=1, socket_connect_timeout=1)
        try:
            if not client.sentinel_get_master_addr_by_name(self.service):
                return False
            state = client.sentinel_master(self.service)
            assert isinstance(state, dict)
            return bool(
                int(state["num-other-sentinels"]) >= self.other_sentinels
                and int(state["num-slaves"]) >= self.replicas
                and state.get("is_master")
                and not state.get("is_sdown")
            )
        except redis.RedisError:
            return False
        finally:
            client.close()

    def port(self, layout: Layout) -> int:
        return self.port_number
