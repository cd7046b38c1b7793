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
    """Where the shared stores are: what every store-using process adds."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    redis_url: str = "redis://127.0.0.1:16379/0"
    cassandra_hosts: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 19042
    keyspace: str = "petitions"
    # Replication of the keyspace; 1 on a single local node, 3 in production.
    cassandra_replication: int = 1

    # Prefix for every topic name, so that several systems (or a test run)
    # can share one Kafka cluster without seeing each other's messages.
    topic_prefix: str = ""
    signature_partitions: int = 6
    topic_replication: int = 1

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
