"""Brings the stack's software onto the machine: the official Kafka and
Cassandra jars from Maven Central (through mvn, into a cache), and Debian's
redis-server package."""

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
        {"kafka.version": versions.KAFKA, "slf4j.version": versions.SLF4J, "reload4j.version": versions.RELOAD4J},
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
    found = shutil.which("redis-server")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise FetchFailed("redis-server is missing and apt-get is not available to install it")
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    sudo = [] if _is_root() else ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    first = subprocess.run([*sudo, *install], capture_output=True, text=True, env=env, check=False)
    if first.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run([*sudo, "apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        second = subprocess.run([*sudo, *install], capture_output=True, text=True, env=env, check=False)
        if second.returncode != 0:
            raise FetchFailed(f"apt-get install redis-server failed:\n{second.stdout}{second.stderr}")
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return found


def _is_root() -> bool:
    return os.geteuid() == 0
