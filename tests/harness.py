"""Runs the project's services as real processes for the tests, each test
session in its own namespace (keyspace, topic prefix, Redis database,
secrets, ports) on the shared local stack, so a run never sees another
run's data and leaves the developer's own system alone."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.components import port_open
from deploy.local.fetch import ensure_redis_server
from deploy.local.settings_env import settings_env

# Processes are started by the kit the load tests share (servicekit, which
# they may import); re-exported here for the tests.
from servicekit.dev_processes import ServiceProcess as ServiceProcess
from servicekit.dev_processes import free_port as free_port
from servicekit.dev_processes import run_cli as run_cli
from servicekit.dev_processes import run_module as run_module
from servicekit.dev_processes import start_service as start_service
from servicekit.settings import CommonSettings
from tests.waiting import eventually

REPO = Path(__file__).resolve().parent.parent

JWKS_REFETCH_INTERVAL_SECONDS = 2.0
PUBLISH_TIMEOUT_SECONDS = 3.0
TEST_RATE_LIMITS = {
    "ip": {"burst": 5, "per_minute": 60},
    "mailbox": {"burst": 3, "per_minute": 1},
    "signer": {"burst": 50, "per_minute": 600},
    "email_domain": {"burst": 1000, "per_minute": 6000},
    "sign_ip": {"burst": 5, "per_minute": 60},
    "sign_signer": {"burst": 300, "per_minute": 600},
}


# The client registration of the identified provider's anonymous button.
SIGNING_BUTTON_AUDIENCE = "petitions-test-signing"

# Members of staff of a test session: identified dev personas, by role.
STAFF_PERSONAS = {
    "staff-moderator-a": ["moderator"],
    "staff-moderator-b": ["moderator"],
    "staff-clerk": ["clerk"],
    "staff-admin": ["administrator"],
}


# The petition types of a test session: the packaged ones, and the same
# rules with thresholds and a period small enough for a test to reach.
TEST_PETITION_TYPES = [
    {
        "id": "assemblee-test",
        "name": "Assemblée nationale (test sizes)",
        "thresholds": [
            {"id": "committee", "label": "Examined by the committee", "signatures": 3},
            {"id": "plenary", "label": "May be debated in plenary", "signatures": 5, "min_territories": 3},
        ],
        "sponsors_required": 0,
        "duration_days": 0,
        "eligibility": {"countries": [], "adults_only": True, "methods": ["oidc"], "accept_declared_adults": False},
    },
    {
        "id": "uk-test",
        "name": "UK Parliament (test sizes)",
        "thresholds": [
            {"id": "response", "label": "Government responds", "signatures": 2},
            {"id": "debate", "label": "Considered for debate", "signatures": 3},
        ],
        "sponsors_required": 5,
        "duration_days": 182,
        "duration_seconds": 20,
        "eligibility": {"countries": [], "adults_only": False, "methods": [], "accept_declared_adults": False},
    },
]


def write_petition_types(path: Path) -> Path:
    """The packaged types file plus TEST_PETITION_TYPES, at path."""
    packaged = json.loads((REPO / "services" / "petitions" / "data" / "types.json").read_text())
    packaged["types"].extend(TEST_PETITION_TYPES)
    path.write_text(json.dumps(packaged, ensure_ascii=False, indent=1))
    return path


@dataclass
class Namespace:
    """Where one test session's system lives."""

    work_dir: Path
    suffix: str
    redis_db: int
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def keyspace(self) -> str:
        return f"petitions_test_{self.suffix}"

    @property
    def topic_prefix(self) -> str:
        return f"test-{self.suffix}-"

    @property
    def consumer_group(self) -> str:
        return f"{self.topic_prefix}tally"

    @property
    def secrets_dir(self) -> Path:
        return self.work_dir / "secrets"

    @property
    def devidp_url(self) -> str:
        """The anonymous-mode provider (like FranceConnect's anonymous mode)."""
        return f"http://127.0.0.1:{self.ports['devidp']}"

    @property
    def identified_devidp_url(self) -> str:
        """A second provider, trusted in identified mode."""
        return f"http://127.0.0.1:{self.ports['devidp-identified']}"

    @property
    def adults_devidp_url(self) -> str:
        """A third provider, anonymous, configured as serving adults only
        (as FranceConnect does): its credentials say adult, basis provider."""
        return f"http://127.0.0.1:{self.ports['devidp-adults']}"

    @property
    def petition_types_file(self) -> Path:
        return self.work_dir / "petition-types.json"

    @property
    def mail_dir(self) -> Path:
        return self.work_dir / "mail"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def env(self, stack: CommonSettings) -> dict[str, str]:
        """The environment every service and CLI call of this namespace gets."""
        redis_base = stack.redis_url.rsplit("/", 1)[0]
        issuers = [
            {"issuer": self.devidp_url, "audience": "petitions-test", "mode": "anonymous"},
            {"issuer": self.identified_devidp_url, "audience": "petitions-test", "mode": "identified"},
            {
                "issuer": self.adults_devidp_url,
                "audience": "petitions-test",
                "mode": "anonymous",
                "serves_adults_only": True,
            },
            # The identified provider is trusted a second time, under another
            # client registration, in anonymous mode: FranceConnect's two
            # buttons are one issuer.
            {
                "issuer": self.identified_devidp_url,
                "audience": SIGNING_BUTTON_AUDIENCE,
                "mode": "anonymous",
                "serves_adults_only": True,
            },
        ]
        staff = [
            {"issuer": self.identified_devidp_url, "subject": f"dev-persona:{persona}", "roles": roles}
            for persona, roles in STAFF_PERSONAS.items()
        ]
        return {
            **os.environ,
            # Every store field of the stack's settings (hosts, data centre,
            # replication, Kafka login, sentinels...), so a namespace lives
            # on the cluster profile as well as on the single stack; the
            # namespace's own keyspace, topics and database below.
            **settings_env(stack, without=("keyspace", "topic_prefix", "redis_url")),
            "PETITIONS_REDIS_URL": f"{redis_base}/{self.redis_db}",
            "PETITIONS_KEYSPACE": self.keyspace,
            "PETITIONS_TOPIC_PREFIX": self.topic_prefix,
            "PETITIONS_CONSUMER_GROUP": self.consumer_group,
            "PETITIONS_SECRETS_DIR": str(self.secrets_dir),
            "PETITIONS_OIDC_ISSUERS": json.dumps(issuers),
            "PETITIONS_STAFF_ROLES": json.dumps(staff),
            "PETITIONS_SMTP_PORT": str(self.ports["devsmtp"]),
            "PETITIONS_JWKS_REFETCH_INTERVAL_SECONDS": str(JWKS_REFETCH_INTERVAL_SECONDS),
            # Key rotation shows within seconds rather than minutes.
            "PETITIONS_KEYRING_RELOAD_SECONDS": "0.5",
            "PETITIONS_VERIFICATION_KEYS_CACHE_SECONDS": "1",
            # A stopped broker shows as UNAVAILABLE within seconds.
            "PETITIONS_PUBLISH_TIMEOUT_SECONDS": str(PUBLISH_TIMEOUT_SECONDS),
            "PETITIONS_DEADLINE_CHECK_SECONDS": "0.5",
            "PETITIONS_OUTBOX_RETRY_SECONDS": "1",
            "PETITIONS_TYPES_FILE": str(self.petition_types_file),
            # Small enough for a test to exhaust and see refill within seconds.
            "PETITIONS_RATE_LIMITS": json.dumps(TEST_RATE_LIMITS),
            "PETITIONS_BLOCKED_EMAIL_DOMAINS": json.dumps(["blocked.example"]),
            "PETITIONS_BLOCKED_IP_NETWORKS": json.dumps(["203.0.113.0/24"]),
            "PETITIONS_IDENTITY_ADDRESS": self.address("identity"),
            "PETITIONS_SIGNING_ADDRESS": self.address("signing"),
            "PETITIONS_PETITIONS_ADDRESS": self.address("petitions"),
            "PETITIONS_TALLY_ADDRESS": self.address("tally"),
            "PETITIONS_DEVIDP_URL": self.devidp_url,
            "PETITIONS_DEVIDP_IDENTIFIED_URL": self.identified_devidp_url,
            "PETITIONS_DEVIDP_AUDIENCE": "petitions-test",
            "PETITIONS_LOG_FORMAT": "console",
        }


def gateway_env(namespace: Namespace) -> dict[str, str]:
    """The gateway of a test session: its own ports, the session's dev
    provider, and X-Forwarded-For believed from 127.0.0.1, so that a test
    can speak for as many client addresses as it needs (the test limits per
    address are tight)."""
    return {
        "PETITIONS_HTTP_PORT": str(namespace.ports["gateway"]),
        "PETITIONS_METRICS_PORT": str(namespace.ports["gateway-metrics"]),
        "PETITIONS_PUBLIC_URL": namespace.gateway_url,
        "PETITIONS_OIDC_PROVIDER_URL": namespace.devidp_url,
        "PETITIONS_OIDC_CLIENT_ID": "petitions-test",
        "PETITIONS_TRUSTED_PROXY_HEADER": "X-Forwarded-For",
        "PETITIONS_TRUSTED_PROXY_NETWORKS": '["127.0.0.1/32"]',
        "PETITIONS_LIVE_HEARTBEAT_SECONDS": "5",
        # The second sign-in (FranceConnect's identified button), for authors.
        "PETITIONS_AUTHOR_OIDC_PROVIDER_URL": namespace.identified_devidp_url,
        "PETITIONS_AUTHOR_OIDC_CLIENT_ID": "petitions-test",
    }


def _alive(service: ServiceProcess) -> None:
    """Fails the wait at once, with the log, when the process has exited."""
    if service.process.poll() is not None:
        raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")


def wait_serving(service: ServiceProcess, address: str, timeout: float = 60.0) -> None:
    """Waits until the service's gRPC health check says SERVING."""
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            _alive(service)
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
            except grpc.RpcError:
                return False
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        eventually(
            serving,
            timeout,
            interval=0.2,
            message=lambda: f"{service.name} not serving on {address}:\n{service.log_tail()}",
        )


def wait_ready(service: ServiceProcess, url: str, timeout: float = 60.0) -> None:
    """Waits until GET url answers 200 (an HTTP service's readiness probe)."""

    def ready() -> bool:
        _alive(service)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    eventually(
        ready, timeout, interval=0.2, message=lambda: f"{service.name} not ready at {url}:\n{service.log_tail()}"
    )


def wait_http(service: ServiceProcess, port: int, timeout: float = 30.0) -> None:
    def listening() -> bool:
        _alive(service)
        return port_open(port)

    eventually(listening, timeout, message=lambda: f"{service.name} not listening on {port}:\n{service.log_tail()}")


class PrivateRedis:
    """A redis-server of a test's own (no persistence), for tests that kill
    Redis: the session's shared one keeps serving every other test."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self._data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [ensure_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            cwd=self._data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(lambda: port_open(self.port), 10, interval=0.05, message="redis-server did not start")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
