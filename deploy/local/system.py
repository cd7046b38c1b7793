"""The whole local system: the stack, then the project's own services as
background processes, a demo petition, and what to do next.

    python -m deploy.local.system up       (make up)
    python -m deploy.local.system down     (make down)
    python -m deploy.local.system status
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local import processes
from deploy.local.components import port_open
from deploy.local.fetch import FetchFailed
from deploy.local.layout import REPO, Layout
from deploy.local.processes import ProcessFiles, StartFailed
from deploy.local.stack import ORDER, Stack
from petitions.v1 import identity_pb2, identity_pb2_grpc, petitions_pb2, petitions_pb2_grpc
from servicekit.settings import CommonSettings
from services.dev_secrets import ensure_dev_secrets
from services.migrations import migrate

DEMO_PETITION = "demo"
DEV_AUDIENCE = "petitions-dev"
# Two dev providers, as FranceConnect has two buttons: the anonymous one (to
# sign; it serves adults only, as FranceConnect does) and the identified one
# (to deposit a petition, and for staff).
DEV_ANONYMOUS_ISSUER = "http://127.0.0.1:8461"
DEV_IDENTIFIED_ISSUER = "http://127.0.0.1:8462"


def dev_issuers(anonymous: str, identified: str) -> list[dict[str, object]]:
    return [
        {"issuer": anonymous, "audience": DEV_AUDIENCE, "mode": "anonymous", "serves_adults_only": True},
        {"issuer": identified, "audience": DEV_AUDIENCE, "mode": "identified"},
    ]


DEV_ISSUERS = dev_issuers(DEV_ANONYMOUS_ISSUER, DEV_IDENTIFIED_ISSUER)
# The dev staff: identified personas of the second provider, by role.
DEV_STAFF = {"staff-moderator": ["moderator"], "staff-clerk": ["clerk"], "staff-admin": ["administrator"]}


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int
    metrics_port: int
    # "grpc": ready when its health check says SERVING; "http": when GET
    # /readyz answers 200; "tcp": when it listens.
    kind: str
    # Command-line arguments, given the layout (dev tools take their paths so).
    arguments: Callable[[Layout], list[str]] = lambda layout: []
    # A port of this process alone, when it shares `port` with other
    # processes of its service: its readiness is checked there.
    process_port: int = 0
    # More of this process's own environment (the cluster profile gives each
    # service its address here, where `make up` relies on the defaults).
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, layout: Layout) -> list[str]:
        return [sys.executable, "-m", self.module, *self.arguments(layout)]

    def env(self) -> dict[str, str]:
        env = {"PETITIONS_METRICS_PORT": str(self.metrics_port)}
        if self.process_port:
            env["PETITIONS_GRPC_SHARED_ADDRESS"] = "true"
            env["PETITIONS_GRPC_PROCESS_ADDRESS"] = f"127.0.0.1:{self.process_port}"
        return {**env, **self.extra_env}

    def ready(self) -> bool:
        if self.kind == "tcp":
            return port_open(self.port)
        if self.kind == "http":
            return _http_ready(f"http://127.0.0.1:{self.port}/readyz")
        return _serving(f"127.0.0.1:{self.process_port or self.port}")


SERVICES = (
    Service(
        "devidp",
        "services.devidp",
        8461,
        0,
        "tcp",
        lambda layout: ["--port", "8461", "--secrets-dir", str(layout.run_dir / "secrets")],
    ),
    Service(
        "devidp-identified",
        "services.devidp",
        8462,
        0,
        "tcp",
        lambda layout: ["--port", "8462", "--secrets-dir", str(layout.run_dir / "secrets")],
    ),
    Service(
        "devsmtp",
        "services.devsmtp",
        8025,
        0,
        "tcp",
        lambda layout: ["--port", "8025", "--mail-dir", str(layout.run_dir / "mail")],
    ),
    Service("identity", "services.identity", 50061, 9161, "grpc"),
    Service("petitions", "services.petitions", 50064, 9166, "grpc"),
    # Two signing processes share the signing port, so Sign, the hot path,
    # can use both cores (one Python process is bound to one).
    Service("signing", "services.signing", 50062, 9162, "grpc", process_port=50072),
    Service("signing-2", "services.signing", 50062, 9165, "grpc", process_port=50073),
    Service("tally", "services.tally", 50063, 9163, "grpc"),
    Service("gateway", "services.gateway", 8080, 9164, "http"),
)
SERVICE_STOP_SECONDS = 20.0
SERVICE_START_SECONDS = 60.0


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class DevEndpoints:
    """Where a profile's dev providers and services answer, for the
    environment and the demo petition."""

    anonymous_issuer: str = DEV_ANONYMOUS_ISSUER
    identified_issuer: str = DEV_IDENTIFIED_ISSUER
    identity_address: str = "127.0.0.1:50061"
    petitions_address: str = "127.0.0.1:50064"


class System:
    """A stack (started in `steps`, each step's components at once), the
    schema, and the services. `make up` is the default; the cluster profile
    (deploy/local/cluster.py) gives its own stack, steps, store settings,
    services and endpoints."""

    def __init__(
        self,
        layout: Layout,
        *,
        stack: Stack | None = None,
        steps: Sequence[Sequence[str]] = (ORDER,),
        store_settings: Mapping[str, object] | None = None,
        store_env: Mapping[str, str] | None = None,
        services: Sequence[Service] = SERVICES,
        endpoints: DevEndpoints = DevEndpoints(),
        after_stack: Callable[[], str] | None = None,
    ):
        self.layout = layout
        self.stack = stack or Stack(layout)
        self.steps = [tuple(step) for step in steps]
        self.services = tuple(services)
        self.endpoints = endpoints
        # Waits for what "each server is ready" does not say (a cluster's
        # nodes seeing each other); returns a line for the log.
        self.after_stack = after_stack
        self._store_settings = dict(store_settings) if store_settings is not None else None
        self._store_env = dict(store_env) if store_env is not None else layout.service_env()

    def env(self) -> dict[str, str]:
        issuers = dev_issuers(self.endpoints.anonymous_issuer, self.endpoints.identified_issuer)
        return {
            **os.environ,
            **self._store_env,
            "PETITIONS_SECRETS_DIR": str(self.layout.run_dir / "secrets"),
            "PETITIONS_OIDC_ISSUERS": json.dumps(issuers),
            "PETITIONS_STAFF_ROLES": json.dumps(
                [
                    {"issuer": self.endpoints.identified_issuer, "subject": f"dev-persona:{persona}", "roles": roles}
                    for persona, roles in DEV_STAFF.items()
                ]
            ),
            "PETITIONS_DEVIDP_IDENTIFIED_URL": self.endpoints.identified_issuer,
        }

    def settings(self) -> CommonSettings:
        if self._store_settings is not None:
            return CommonSettings.model_validate(
                {**self._store_settings, "secrets_dir": self.layout.run_dir / "secrets"}
            )
        return CommonSettings.model_validate(
            {
                "kafka_bootstrap": f"127.0.0.1:{self.layout.ports.kafka}",
                "redis_url": f"redis://127.0.0.1:{self.layout.ports.redis}/0",
                "cassandra_port": self.layout.ports.cassandra,
                "secrets_dir": self.layout.run_dir / "secrets",
            }
        )

    def up(self, say: Callable[[str], None]) -> None:
        began = time.monotonic()
        for step in self.steps:
            for name, line in self.stack.up(step).items():
                say(f"{name:10} {line}")
        if self.after_stack is not None:
            say(f"{'stack':10} {self.after_stack()}")
        say(f"{'stack':10} ready after {time.monotonic() - began:.1f} s")
        settings = self.settings()
        created = ensure_dev_secrets(settings.secrets_dir)
        if created:
            say(f"{'secrets':10} created {len(created)} files in {settings.secrets_dir}")
        step_began = time.monotonic()
        new_topics = asyncio.run(migrate(settings))
        say(
            f"{'schema':10} keyspace {settings.keyspace} ready; new topics: {', '.join(new_topics) or 'none'}"
            f" ({time.monotonic() - step_began:.1f} s)"
        )
        # The processes of one service start together (on 2 cores that halves
        # the cluster profile's wait); services start in order, as each may
        # ask the one before (identity's keys) when it starts.
        for group in _by_module(self.services):
            group_began = time.monotonic()
            running = {}
            for service in group:
                files = ProcessFiles.under(self.layout.run_dir, service.name)
                running[service.name] = processes.running_pid(files)
                if running[service.name] is None:
                    env = {**self.env(), **service.env()}
                    processes.start(files, service.argv(self.layout), env, REPO)
            for service in group:
                files = ProcessFiles.under(self.layout.run_dir, service.name)
                processes.wait_ready(files, service.ready, SERVICE_START_SECONDS)
                pid = running[service.name]
                state = f"already running (pid {pid})" if pid else f"ready after {time.monotonic() - group_began:.1f} s"
                say(f"{service.name:10} {state}, port {service.port}")
        say(f"{'demo':10} {self._create_demo_petition(settings)}")
        say(f"{'total':10} up after {time.monotonic() - began:.1f} s")

    def _create_demo_petition(self, settings: CommonSettings) -> str:
        """Creates the demo petition as the dev administrator, whose staff
        credential identity issues for the identified dev provider's token."""
        body = json.dumps(
            {"persona": "staff-admin", "audience": DEV_AUDIENCE, "identified": True, "birthdate": "1980-01-01"}
        ).encode()
        request = urllib.request.Request(
            f"{self.endpoints.identified_issuer}/dev/id-token", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            id_token = str(json.load(response)["id_token"])
        with grpc.insecure_channel(self.endpoints.identity_address) as channel:
            staff = identity_pb2_grpc.IdentityStub(channel).ExchangeStaffIdToken(
                identity_pb2.ExchangeStaffIdTokenRequest(id_token=id_token), timeout=10
            )
        with grpc.insecure_channel(self.endpoints.petitions_address) as channel:
            stub = petitions_pb2_grpc.PetitionsStub(channel)
            try:
                stub.CreatePetition(
                    petitions_pb2.CreatePetitionRequest(
                        id=DEMO_PETITION,
                        title="Demo: a petition to try the system with",
                        text="Created by `make up`.",
                        open=True,
                    ),
                    metadata=(("authorization", f"Bearer {staff.token}"),),
                    timeout=30,
                )
            except grpc.RpcError as error:
                if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.ALREADY_EXISTS:
                    return f"petition '{DEMO_PETITION}' already exists"
                raise
        return f"petition '{DEMO_PETITION}' created and open"

    def down(self, say: Callable[[str], None]) -> None:
        for service in reversed(self.services):
            stopped = processes.stop(ProcessFiles.under(self.layout.run_dir, service.name), SERVICE_STOP_SECONDS)
            say(f"{service.name:10} {'stopped' if stopped else 'was not running'}")
        for name, line in self.stack.down(self.stack.order).items():
            say(f"{name:10} {line}")

    def status(self, say: Callable[[str], None]) -> None:
        for item in self.stack.status():
            state = f"running (pid {item.pid})" if item.pid else "stopped"
            say(f"{item.name:18} {state:22} port {item.port:<6} log {item.log_file}")
        for service in self.services:
            files = ProcessFiles.under(self.layout.run_dir, service.name)
            pid = processes.running_pid(files)
            state = f"running (pid {pid})" if pid else "stopped"
            say(f"{service.name:18} {state:22} port {service.port:<6} log {files.log_file}")


def _by_module(services: Sequence[Service]) -> list[list[Service]]:
    """Consecutive services of the same module, grouped."""
    groups: list[list[Service]] = []
    for service in services:
        if groups and groups[-1][0].module == service.module and service.kind != "tcp":
            groups[-1].append(service)
        else:
            groups.append([service])
    return groups


NEXT_STEPS = """
The system is up.

Web page:              http://127.0.0.1:8080/petitions/{demo}   (sign in as any persona at the dev provider)
HTTP API:              http://127.0.0.1:8080/api/v1/petitions   (described in http://127.0.0.1:8080/openapi.json)

From the command line:

  .venv/bin/petitions dev-sign --persona alice             # sign the demo petition as "alice"
  .venv/bin/petitions dev-sign --persona alice             # again: ALREADY_SIGNED
  .venv/bin/petitions dev-sign --persona bob --territory 13
  .venv/bin/petitions tally demo                           # the live count, by territory and country

Dev mailbox:           {mail}/  (one-time codes sent by identity land here)
Metrics (Prometheus):  http://127.0.0.1:9161/metrics (identity)  :9162, :9165 (signing)  :9163 (tally)
                       :9164 (gateway)  :9166 (petitions)
Logs:                  {logs}/
Stop everything:       make down
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.system", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    options = parser.parse_args(argv)
    system = System(Layout.from_environment())
    say = partial(print, flush=True)
    try:
        if options.command == "up":
            system.up(say)
            say(NEXT_STEPS.format(logs=system.layout.logs(), mail=system.layout.run_dir / "mail", demo=DEMO_PETITION))
        elif options.command == "down":
            system.down(say)
        else:
            system.status(say)
    except (StartFailed, FetchFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
