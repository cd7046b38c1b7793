"""Where the local stack keeps things and which ports it uses.

Everything comes from the environment with project defaults, so a second,
isolated stack (a test of the stack itself) only needs another run
directory and other ports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Ports:
    redis: int
    kafka: int
    kafka_controller: int
    cassandra: int
    cassandra_storage: int
    cassandra_jmx: int


@dataclass(frozen=True)
class Layout:
    run_dir: Path
    jar_cache: Path
    ports: Ports

    @classmethod
    def from_environment(cls) -> Layout:
        env = os.environ

        def port(name: str, default: int) -> int:
            return int(env.get(f"PETITIONS_{name}_PORT", default))

        return cls(
            run_dir=Path(env.get("PETITIONS_RUN_DIR", REPO / ".run")).resolve(),
            jar_cache=Path(
                env.get("PETITIONS_JAR_CACHE", Path.home() / ".cache" / "petition-intake" / "jars")
            ).resolve(),
            ports=Ports(
                redis=port("REDIS", 16379),
                kafka=port("KAFKA", 19092),
                kafka_controller=port("KAFKA_CONTROLLER", 19093),
                cassandra=port("CASSANDRA", 19042),
                cassandra_storage=port("CASSANDRA_STORAGE", 19000),
                cassandra_jmx=port("CASSANDRA_JMX", 19199),
            ),
        )

    def logs(self) -> Path:
        return self.run_dir / "logs"

    def pids(self) -> Path:
        return self.run_dir / "pids"

    def data(self, component: str) -> Path:
        return self.run_dir / "data" / component

    def conf(self, component: str) -> Path:
        return self.run_dir / "conf" / component

    def log_file(self, component: str) -> Path:
        return self.logs() / f"{component}.log"

    def service_env(self) -> dict[str, str]:
        """What the project's services need to find this stack."""
        return {
            "PETITIONS_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports.kafka}",
            "PETITIONS_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "PETITIONS_CASSANDRA_PORT": str(self.ports.cassandra),
        }
