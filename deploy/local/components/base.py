"""What every server of the stack is: the Component protocol, and helpers they share."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Protocol

from deploy.local.fetch import fetch_jars
from deploy.local.layout import Layout


class Component(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def start_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...

    def fetch(self, layout: Layout) -> None: ...

    def prepare(self, layout: Layout) -> list[str]:
        """Writes configuration, initialises storage; returns the argv."""
        ...

    def ready(self, layout: Layout) -> bool: ...

    def port(self, layout: Layout) -> int: ...


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise SystemExit("java is not on PATH and JAVA_HOME is not set; install a JDK 17")
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def java_server_directories(layout: Layout, name: str, software: str = "") -> tuple[Path, Path, Path]:
    """The server's jars (fetched if needed), and its config and data
    directories (created if needed)."""
    jars = fetch_jars(layout, software or name)
    conf, data = layout.conf(name), layout.data(name)
    conf.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    return jars, conf, data
