"""Settings shared by every process, read once from the environment at start.

Two layers: BaseProcessSettings is what every process has (logging, the metrics
host, the secrets directory); CommonSettings adds where the stores are (Kafka,
Redis, Cassandra, the topic names), for the processes that use them. The
gateway takes BaseProcessSettings only: it talks to the services, never to a
store, and its settings say so. Each service subclasses one of them; the
object is frozen and passed down through constructors, so no module reads
os.environ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class BaseProcessSettings(BaseSettings):
    """How a process presents itself, and where its secret files are."""

    model_config = SettingsConfigDict(env_prefix="PETITIONS_", frozen=True, extra="ignore")

    log_level: str = "INFO"
    log_format: str = "json"
    # Where /metrics listens: loopback on a laptop; every interface in a pod
    # (0.0.0.0), so Prometheus can scrape it.
    metrics_host: str = "127.0.0.1"

    # Secret material (keys, HMAC secrets) lives in files here.
    secrets_dir: Path = REPO_ROOT / ".run" / "secrets"

    def secret_file(self, name: str) -> Path:
        return self.secrets_dir / name

    def read_secret(self, name: str) -> bytes:
        """Reads a secret file; a missing one is a start-up error that names it."""
        path = self.secret_file(name)
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            raise SystemExit(f"missing secret file {path} (run `petitions dev-secrets` locally)") from None


class CommonSettings(BaseProcessSettings):
    """Where the shared stores are, and how to log in to them: what every
    store-using process adds. Defaults are the local single-node stack;
    production (and `make up PROFILE=cluster`) sets the authenticated,
    replicated shape through the same fields."""

    # Kafka. PLAINTEXT locally; production's brokers (a Strimzi listener
    # with `authentication: scram-sha-512`, `tls: true`) take SASL_SSL with a
    # KafkaUser's name and password, and the cluster CA's certificate to
    # check the brokers against.
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_username: str = ""
    # A file holding the password (the KafkaUser secret's `password` key,
    # mounted), never the password itself in the environment.
    kafka_password_file: Path | None = None
    # PEM bundle of the CA that signed the brokers' certificates; the
    # system's trust store when unset.
    kafka_ca_file: Path | None = None

    # Redis. Alone: redis_url. Behind Sentinel: the sentinels' host:port
    # list and the name they monitor; redis_url then gives only the database
    # number (its path) and the password, and the primary's address comes
    # from the sentinels, again after every failover.
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_service: str = "petitions"
    # The sentinels themselves require redis_url's password too (sentinel
    # `requirepass`, as the OT redis-operator's RedisSentinel sets it up);
    # off, they are asked without one, since a sentinel with no password
    # refuses an AUTH.
    redis_sentinel_auth: bool = False

    # Cassandra.
    cassandra_hosts: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 19042
    keyspace: str = "petitions"
    # The data centre this process runs in (what the snitch reports): the
    # driver keeps its queries there, and the keyspace is replicated there.
    # SimpleSnitch, the single local node's, reports "datacenter1".
    cassandra_datacenter: str = "datacenter1"
    # Replicas in that data centre (NetworkTopologyStrategy); 1 on a single
    # local node, 3 in production and in the cluster profile.
    cassandra_replication: int = 1
    # Reads and writes that decide correctness; with RF 3, LOCAL_QUORUM
    # survives one node down and every read sees every acknowledged write.
    cassandra_consistency: Literal["LOCAL_QUORUM", "QUORUM", "LOCAL_ONE", "ONE", "ALL"] = "LOCAL_QUORUM"
    # Cassandra's PasswordAuthenticator (cass-operator's superuser secret or
    # a role of our own); none locally.
    cassandra_username: str = ""
    cassandra_password_file: Path | None = None

    # Prefix for every topic name, so that several systems (or a test run)
    # can share one Kafka cluster without seeing each other's messages.
    topic_prefix: str = ""
    # Partitions of the signatures topic: the tally's shards, and the unit
    # of its parallelism: `petitions migrate` creates the topic with this
    # many, and the tally refuses to start if the topic has another count.
    signature_partitions: int = 6
    topic_replication: int = 1

    def read_optional_secret(self, path: Path | None, what: str) -> str:
        """The stripped text of a password file; "" when none is set."""
        if path is None:
            return ""
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise SystemExit(f"{what}: password file {path} does not exist") from None

    @property
    def signatures_topic(self) -> str:
        return f"{self.topic_prefix}signatures"

    @property
    def petition_events_topic(self) -> str:
        return f"{self.topic_prefix}petition-events"

    @property
    def petition_state_topic(self) -> str:
        """Compacted: each petition's whole latest state, keyed by its id."""
        return f"{self.topic_prefix}petition-state"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}signatures-dead-letter"


class ServiceSettings(CommonSettings):
    """What every gRPC service has; each service sets its own defaults."""

    grpc_address: str = "127.0.0.1:0"
    # Lets several processes of one service serve grpc_address together
    # (SO_REUSEPORT: the kernel spreads client connections over them), so
    # one host can use all its cores. Off by default, so a second process
    # started by mistake fails to bind instead of silently sharing.
    grpc_shared_address: bool = False
    # An address of this process alone, served beside the shared one, so a
    # supervisor can health-check each process of a shared address.
    grpc_process_address: str = ""
    metrics_port: int = 0
    # How long in-flight RPCs may take to finish after SIGTERM.
    grace_seconds: float = 5.0

    @property
    def listen_address(self) -> str:
        return self.grpc_address
