"""Running the project's processes on this machine: the small kit that both
the tests' harness and the load tests use.

It is here, not in tests/harness.py or deploy/, because the load tests may
import only the contracts and servicekit (the import contract
"loadtests-public" in pyproject.toml): a benchmark starts a service the same
way the tests do, without reaching into the test suite. Processes are named
by module ("services.tally"), never imported, so servicekit still imports no
service.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit.settings import REPO_ROOT


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """A process started by start_service, with the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within timeout; its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_module(
    module: str, env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m module ARGS` to its end with exactly env, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `petitions ARGS` (services.cli) with exactly env, its output captured."""
    return run_module("services.cli", env, *args, timeout=timeout)


def start_service(
    name: str, module: str, args: list[str], env: Mapping[str, str], extra_env: Mapping[str, str], log_dir: Path
) -> ServiceProcess:
    """Starts `python -m module ARGS` with env and extra_env, its output in log_dir/name.log."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env={**env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, process, log_path)
