"""The cluster profile: the production topology on this machine.

    python -m deploy.local.cluster up       (make up PROFILE=cluster)
    python -m deploy.local.cluster down     (make down PROFILE=cluster)
    python -m deploy.local.cluster status   (make status PROFILE=cluster)
    python -m deploy.local.cluster env      export lines for a client of the cluster
    python -m deploy.local.cluster rss      resident memory of every process, and the total

Three Kafka nodes (combined broker and controller), three Cassandra nodes on
127.0.0.2-4 at replication factor 3, a Redis primary with one replica and
three sentinels, and two processes of every service (the tally as two
consumers of one group). Everything lives under `.run/cluster` (or
PETITIONS_CLUSTER_RUN_DIR) on ports of its own, so it runs beside the single
stack of `make up` without touching it.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from deploy.local import processes
from deploy.local.components import Cassandra, Component, Kafka, KafkaNode, Redis, RedisSentinel
from deploy.local.components.kafka import KafkaSecurity
from deploy.local.fetch import FetchFailed
from deploy.local.layout import REPO, Layout, Ports
from deploy.local.processes import ProcessFiles, StartFailed
from deploy.local.settings_env import settings_env
from deploy.local.stack import Stack
from deploy.local.system import DevEndpoints, Service, System
from servicekit.settings import CommonSettings

CLUSTER_NAME = "petitions-cluster"
DATACENTER = "datacenter1"
REPLICATION = 3
GRPC_SERVICES = ("identity", "petitions", "signing", "tally")
PROCESSES_PER_SERVICE = 2
# Nine JVMs and a dozen Python processes starting together on 2 cores (and
# other work on the machine) take far longer than one of each.
KAFKA_START_SECONDS = 300.0
CASSANDRA_START_SECONDS = 420.0


def _default_service_ports() -> dict[str, int]:
    """The services' ports: each gRPC service's (shared by its two
    processes), each process's own (51062 -> 51072, 51082) and its metrics
    port (51162, 51172); the gateway's two HTTP ports; the dev tools'."""
    ports = {"identity": 51061, "signing": 51062, "tally": 51063, "petitions": 51064}
    for name, base in list(ports.items()):
        for index in range(1, PROCESSES_PER_SERVICE + 1):
            ports[f"{name}-{index}"] = base + 10 * index
            ports[f"{name}-{index}-metrics"] = base + 100 + 10 * (index - 1)
    ports.update(
        {
            "gateway": 51080,
            "gateway-2": 51090,
            "gateway-1-metrics": 51165,
            "gateway-2-metrics": 51175,
            "devidp": 51461,
            "devidp-identified": 51462,
            "devsmtp": 51025,
        }
    )
    return ports


SERVICE_PORTS = _default_service_ports()


@dataclass(frozen=True)
class ClusterPorts:
    kafka: tuple[int, ...] = (29092, 29093, 29094)
    kafka_controller: tuple[int, ...] = (29095, 29096, 29097)
    cassandra_addresses: tuple[str, ...] = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    cassandra_native: int = 29042
    cassandra_storage: int = 29000
    cassandra_jmx: tuple[int, ...] = (29199, 29200, 29201)
    redis_primary: int = 26379
    redis_replica: int = 26380
    sentinels: tuple[int, ...] = (26479, 26480, 26481)
    services: Mapping[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))

    def service(self, key: str) -> int:
        """A service port by key: "signing" (shared by its processes),
        "signing-1" (that process's own), "signing-1-metrics"."""
        return self.services[key]

    @classmethod
    def free(cls) -> ClusterPorts:
        """Ports nothing listens on now, for a test's private cluster: the
        Cassandra ports free on each node's address at once."""
        taken: set[int] = set()

        def port(host: str = "127.0.0.1") -> int:
            while True:
                candidate = _free_port(host)
                if candidate not in taken:
                    taken.add(candidate)
                    return candidate

        addresses = cls().cassandra_addresses
        services = {key: port() for key in SERVICE_PORTS}
        return cls(
            kafka=tuple(port() for _ in range(3)),
            kafka_controller=tuple(port() for _ in range(3)),
            cassandra_native=_free_on_all(addresses, taken),
            cassandra_storage=_free_on_all(addresses, taken),
            cassandra_jmx=tuple(port() for _ in range(3)),
            redis_primary=port(),
            redis_replica=port(),
            sentinels=tuple(port() for _ in range(3)),
            services=services,
        )


# Below the kernel's ephemeral range (32768-60999): a port from that range,
# once its server is killed, can be taken by a client reconnecting to it (a
# TCP self-connection from the same port number), and the server cannot
# start again there: "port in use by a process this stack did not start".
PRIVATE_PORTS = range(20_000, 32_000)


def _free_port(host: str) -> int:
    while True:
        candidate = random.choice(PRIVATE_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate


def _free_on_all(addresses: Sequence[str], taken: set[int]) -> int:
    while True:
        candidate = _free_port(addresses[0])
        if candidate in taken:
            continue
        try:
            for address in [*addresses[1:], "127.0.0.1"]:
                with socket.socket() as probe:
                    probe.bind((address, candidate))
        except OSError:
            continue
        taken.add(candidate)
        return candidate


@dataclass(frozen=True)
class ClusterPlan:
    """What the cluster is made of, where it lives, and how its clients and
    services reach it."""

    run_dir: Path
    jar_cache: Path
    ports: ClusterPorts = ClusterPorts()
    # Small heaps: nine JVMs share the machine.
    cassandra_heap: str = "512M"
    kafka_heap: str = "384m"

    @classmethod
    def from_environment(cls) -> ClusterPlan:
        default = Layout.from_environment()
        run_dir = Path(os.environ.get("PETITIONS_CLUSTER_RUN_DIR", REPO / ".run" / "cluster")).resolve()
        return cls(run_dir, default.jar_cache)

    @property
    def layout(self) -> Layout:
        p = self.ports
        return Layout(
            self.run_dir,
            self.jar_cache,
            Ports(
                redis=p.redis_primary,
                kafka=p.kafka[0],
                kafka_controller=p.kafka_controller[0],
                cassandra=p.cassandra_native,
                cassandra_storage=p.cassandra_storage,
                cassandra_jmx=p.cassandra_jmx[0],
            ),
        )

    # The servers.

    @property
    def kafka_nodes(self) -> tuple[KafkaNode, ...]:
        return tuple(
            KafkaNode(index + 1, port, controller)
            for index, (port, controller) in enumerate(zip(self.ports.kafka, self.ports.kafka_controller, strict=True))
        )

    def kafka_names(self) -> list[str]:
        return [f"kafka-{node.node_id}" for node in self.kafka_nodes]

    def cassandra_names(self) -> list[str]:
        return [f"cassandra-{index}" for index in range(1, len(self.ports.cassandra_addresses) + 1)]

    def redis_names(self) -> list[str]:
        """The primary first, then its replica."""
        return ["redis-primary", "redis-replica"]

    def sentinel_names(self) -> list[str]:
        return [f"sentinel-{index}" for index in range(1, len(self.ports.sentinels) + 1)]

    @property
    def kafka_security(self) -> KafkaSecurity:
        """One CA and one password per user for the three nodes and every client."""
        return KafkaSecurity.in_run_dir(self.layout)

    def cassandra_nodes(self) -> dict[str, Cassandra]:
        p = self.ports
        return {
            name: Cassandra(
                name=name,
                address=address,
                native_port=p.cassandra_native,
                storage_port=p.cassandra_storage,
                jmx_port=jmx,
                # Two seeds, as Cassandra recommends; the third joins through them.
                seeds=p.cassandra_addresses[:2],
                datacenter=DATACENTER,
                cluster_name=CLUSTER_NAME,
                heap=self.cassandra_heap,
                direct_memory="256M",
                memtable_space="64MiB",
                start_timeout=CASSANDRA_START_SECONDS,
            )
            for name, address, jmx in zip(self.cassandra_names(), p.cassandra_addresses, p.cassandra_jmx, strict=True)
        }

    def components(self) -> dict[str, Component]:
        p = self.ports
        nodes = self.kafka_nodes
        primary, replica = self.redis_names()
        components: dict[str, Component] = {
            primary: Redis(name=primary, port=p.redis_primary),
            replica: Redis(name=replica, port=p.redis_replica, replica_of=p.redis_primary),
        }
        for name, port in zip(self.sentinel_names(), p.sentinels, strict=True):
            components[name] = RedisSentinel(name=name, port=port, primary_port=p.redis_primary, quorum=2)
        security = self.kafka_security
        for node, name in zip(nodes, self.kafka_names(), strict=True):
            components[name] = Kafka(
                name=name,
                node=node,
                cluster=nodes,
                cluster_name=f"{CLUSTER_NAME}-kafka",
                heap=self.kafka_heap,
                start_timeout=KAFKA_START_SECONDS,
                security=security,
            )
        components.update(self.cassandra_nodes())
        return components

    def steps(self) -> list[list[str]]:
        """Everything at once: a new Cassandra cluster's nodes do not
        bootstrap (they hold no data yet), so none waits for another; a
        replica and the sentinels are ready once they see their primary
        and each other."""
        return [list(self.components())]

    def ring_formed(self) -> bool:
        """Every Cassandra node sees the two others as normal members."""
        nodes = self.cassandra_nodes()
        addresses = set(self.ports.cassandra_addresses)
        return all(node.sees_peers(self.layout, addresses - {node.address}) for node in nodes.values())

    def wait_ring(self, timeout: float = CASSANDRA_START_SECONDS) -> float:
        began = time.monotonic()
        while not self.ring_formed():
            if time.monotonic() - began > timeout:
                raise StartFailed(f"the Cassandra nodes did not all see each other within {timeout:g} s")
            time.sleep(0.5)
        return time.monotonic() - began

    def stack(self) -> Stack:
        return Stack(self.layout, self.components())

    # How clients find and log in to it.

    def store_settings(self) -> dict[str, object]:
        """The CommonSettings fields (store part) of a client of the cluster."""
        security = self.kafka_security
        return {
            "kafka_bootstrap": ",".join(f"127.0.0.1:{port}" for port in self.ports.kafka),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": security.mechanism,
            "kafka_username": security.username,
            "kafka_password_file": security.password_file,
            "kafka_ca_file": security.ca_file,
            # With sentinels only the database number is read from it.
            "redis_url": "redis://127.0.0.1/0",
            "redis_sentinels": tuple(f"127.0.0.1:{port}" for port in self.ports.sentinels),
            "redis_sentinel_service": "petitions",
            "cassandra_hosts": self.ports.cassandra_addresses,
            "cassandra_port": self.ports.cassandra_native,
            "cassandra_datacenter": DATACENTER,
            "cassandra_replication": REPLICATION,
            "cassandra_consistency": "LOCAL_QUORUM",
            "topic_replication": REPLICATION,
        }

    def settings(self) -> CommonSettings:
        return CommonSettings.model_validate({**self.store_settings(), "secrets_dir": self.run_dir / "secrets"})

    # The services.

    def address(self, key: str) -> str:
        return f"127.0.0.1:{self.ports.service(key)}"

    def endpoints(self) -> DevEndpoints:
        return DevEndpoints(
            anonymous_issuer=f"http://{self.address('devidp')}",
            identified_issuer=f"http://{self.address('devidp-identified')}",
            identity_address=self.address("identity"),
            petitions_address=self.address("petitions"),
        )

    def client_addresses(self) -> dict[str, str]:
        """Where every process finds the other services."""
        return {f"PETITIONS_{name.upper()}_ADDRESS": self.address(name) for name in GRPC_SERVICES}

    def services(self, gateway_env: Callable[[int], Mapping[str, str]] | None = None) -> list[Service]:
        """Two processes of each service: the gRPC ones share their
        service's address (SO_REUSEPORT) and are health-checked each on its
        own; the gateway (aiohttp, which does not share its port) has two
        ports."""
        ports = self.ports
        endpoints = self.endpoints()

        def dev_tool(name: str, module: str, flag: str, directory: str) -> Service:
            port = ports.service(name)
            return Service(
                name,
                module,
                port,
                0,
                "tcp",
                lambda layout: ["--port", str(port), flag, str(layout.run_dir / directory)],
            )

        services = [
            dev_tool("devidp", "services.devidp", "--secrets-dir", "secrets"),
            dev_tool("devidp-identified", "services.devidp", "--secrets-dir", "secrets"),
            dev_tool("devsmtp", "services.devsmtp", "--mail-dir", "mail"),
        ]
        for name in GRPC_SERVICES:
            for index in range(1, PROCESSES_PER_SERVICE + 1):
                services.append(
                    Service(
                        f"{name}-{index}",
                        f"services.{name}",
                        ports.service(name),
                        ports.service(f"{name}-{index}-metrics"),
                        "grpc",
                        process_port=ports.service(f"{name}-{index}"),
                        extra_env={
                            "PETITIONS_GRPC_ADDRESS": self.address(name),
                            "PETITIONS_SMTP_PORT": str(ports.service("devsmtp")),
                        },
                    )
                )
        for index in range(1, PROCESSES_PER_SERVICE + 1):
            port = ports.service("gateway" if index == 1 else f"gateway-{index}")
            metrics = ports.service(f"gateway-{index}-metrics")
            extra = dict(gateway_env(port)) if gateway_env else self._gateway_env(port, endpoints)
            services.append(
                Service(
                    f"gateway-{index}",
                    "services.gateway",
                    port,
                    metrics,
                    "http",
                    extra_env={**extra, "PETITIONS_HTTP_PORT": str(port), "PETITIONS_METRICS_PORT": str(metrics)},
                )
            )
        return services

    def _gateway_env(self, port: int, endpoints: DevEndpoints) -> dict[str, str]:
        return {
            "PETITIONS_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "PETITIONS_OIDC_PROVIDER_URL": endpoints.anonymous_issuer,
            "PETITIONS_AUTHOR_OIDC_PROVIDER_URL": endpoints.identified_issuer,
        }

    def system(self) -> System:
        return System(
            self.layout,
            stack=self.stack(),
            steps=self.steps(),
            store_settings=self.store_settings(),
            store_env={**settings_env(self.settings()), **self.client_addresses()},
            services=self.services(),
            endpoints=self.endpoints(),
            after_stack=lambda: f"every node sees the others after {self.wait_ring():.1f} s more",
        )


def resident_memory(pids: Sequence[int]) -> dict[int, int]:
    """RSS in KiB of each pid and of all its descendants (a service started
    through a wrapper counts whole), from ps."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True, check=True)
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for line in table.stdout.splitlines():
        pid, ppid, kib = (int(part) for part in line.split())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = kib

    def total(pid: int) -> int:
        return rss.get(pid, 0) + sum(total(child) for child in children.get(pid, []))

    return {pid: total(pid) for pid in pids}


def memory_report(plan: ClusterPlan, say: Callable[[str], None]) -> int:
    """Prints each running process's RSS; returns the total in KiB."""
    names = [*plan.components(), *(service.name for service in plan.services())]
    pids = {name: processes.running_pid(ProcessFiles.under(plan.run_dir, name)) for name in names}
    memory = resident_memory([pid for pid in pids.values() if pid is not None])
    total = 0
    for name, pid in pids.items():
        if pid is None:
            say(f"{name:18} not running")
            continue
        total += memory[pid]
        say(f"{name:18} {memory[pid] / 1024:8.0f} MiB")
    say(f"{'total':18} {total / 1024:8.0f} MiB ({total / 1024 / 1024:.1f} GiB)")
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.cluster", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "rss"])
    options = parser.parse_args(argv)
    plan = ClusterPlan.from_environment()
    system = plan.system()
    say = partial(print, flush=True)
    try:
        if options.command == "up":
            began = time.monotonic()
            system.up(say)
            memory_report(plan, say)
            say(f"\nThe cluster is up after {time.monotonic() - began:.1f} s.")
            say(f"Gateways: http://{plan.address('gateway')}/  http://{plan.address('gateway-2')}/")
            say(f'Clients:  eval "$(.venv/bin/python -m deploy.local.cluster env)"; logs in {plan.layout.logs()}/')
        elif options.command == "down":
            system.down(say)
        elif options.command == "status":
            system.status(say)
        elif options.command == "env":
            for key, value in {**settings_env(plan.settings()), **plan.client_addresses()}.items():
                say(f"export {key}='{value}'")
        else:
            memory_report(plan, say)
    except (StartFailed, FetchFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
