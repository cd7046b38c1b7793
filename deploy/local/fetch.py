"""Brings the stack's software onto the machine: the official Kafka and
Cassandra jars from Maven Central (through mvn, into a cache), and Debian's
packages: redis-server, and prometheus (deploy/local/prometheus.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy.local import versions
from deploy.local.layout import Layout

HERE = Path(__file__).resolve().parent
COMPLETE_MARKER = ".complete"

# Each server's jars go into a directory of their own: two slf4j bindings on
# one classpath would pick one at random.
POMS: dict[str, tuple[str, dict[str, str]]] = {
    "kafka": (
        versions.KAFKA,
        {"kafka.version": versions.KAFKA, "log4j.version": versions.LOG4J},
    ),
    "cassandra": (versions.CASSANDRA, {"cassandra.version": versions.CASSANDRA}),
}


class FetchFailed(Exception):
    pass


def jar_dir(layout: Layout, component: str) -> Path:
    version, _ = POMS[component]
    return layout.jar_cache / f"{component}-{version}"


def fetch_jars(layout: Layout, component: str) -> Path:
    """The directory holding the component's jars, fetched if not complete."""
    target = jar_dir(layout, component)
    if (target / COMPLETE_MARKER).exists():
        return target
    if shutil.which("mvn") is None:
        raise FetchFailed("mvn is not on PATH; install Maven (apt-get install maven)")
    _, properties = POMS[component]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(HERE / component / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
        # Flat file names: the classpath is "<dir>/*", which does not descend.
        "-Dmdep.useRepositoryLayout=false",
        *(f"-D{key}={value}" for key, value in properties.items()),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchFailed(f"fetching {component} jars failed ({' '.join(command)}):\n{result.stdout}{result.stderr}")
    (partial / COMPLETE_MARKER).write_text(" ".join(command) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def ensure_redis_server() -> str:
    """The path of redis-server, installing Debian's package if needed."""
    return ensure_debian_package("redis-server", "redis-server")


# Where Debian puts programs, whatever the caller's PATH (a non-root PATH
# often lacks the sbin directories).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Another apt (a second test session installing the same package, or the
# machine's own updates) holds the dpkg lock for a while; wait rather than fail.
APT_LOCK_WAIT_SECONDS = 300
APT_TIMEOUT_SECONDS = 900


def which_system_program(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=SYSTEM_PATH)


def ensure_debian_package(package: str, program: str, *, recommends: bool = False) -> str:
    """The path of program, installing Debian's package when it is missing:
    `apt-get update` once (a fresh machine has no package lists, an old one
    may list versions the mirror no longer has), then `apt-get install`,
    without recommended packages unless asked."""
    found = which_system_program(program)
    if found:
        return found
    if shutil.which("apt-get", path=SYSTEM_PATH) is None:
        raise FetchFailed(f"{program} is missing and apt-get is not available to install Debian's {package}")
    sudo = [] if _is_root() else ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": SYSTEM_PATH}
    lock_wait = f"DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}"
    leaner = [] if recommends else ["--no-install-recommends"]
    for command in (
        ["apt-get", "-q", "-o", lock_wait, "update"],
        ["apt-get", "-q", "-y", "-o", lock_wait, "install", *leaner, package],
    ):
        result = subprocess.run(
            [*sudo, *command], capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_SECONDS, check=False
        )
        if result.returncode != 0:
            raise FetchFailed(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    found = which_system_program(program)
    if found is None:
        raise FetchFailed(f"Debian's {package} is installed but {program} is not on {SYSTEM_PATH}")
    return found


def _is_root() -> bool:
    return os.geteuid() == 0
