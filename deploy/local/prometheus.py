"""Debian's Prometheus server and promtool: promtool checks and unit-tests the
alerting rules in deploy/observability/, and the observability test runs the
server against a test session's services.

    python -m deploy.local.prometheus      install if missing, print the paths

Debian's package also brings a system service (a Prometheus scraping its
own defaults on port 9090). The project never wants it: whatever the
installation started is stopped at once, and disabled where systemd runs.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.local.fetch import FetchFailed, ensure_debian_package, which_system_program

PACKAGE = "prometheus"
# The package's service runs as this system user, which the package creates;
# the Prometheus servers the tests start run as whoever runs the tests, so
# they are never mistaken for it.
SERVICE_USER = "prometheus"
SERVICE_STOP_SECONDS = 10.0


@dataclass(frozen=True)
class PrometheusTools:
    server: Path
    promtool: Path


def ensure_prometheus() -> PrometheusTools:
    """The paths of prometheus and promtool, installing Debian's package if
    either is missing (and stopping the service the package starts)."""
    server, promtool = which_system_program("prometheus"), which_system_program("promtool")
    if server and promtool:
        return PrometheusTools(Path(server), Path(promtool))
    before = service_pids()
    ensure_debian_package(PACKAGE, "promtool")
    stop_packaged_service(before)
    server, promtool = which_system_program("prometheus"), which_system_program("promtool")
    if not (server and promtool):
        raise FetchFailed(f"Debian's {PACKAGE} is installed but prometheus or promtool is not on the PATH")
    return PrometheusTools(Path(server), Path(promtool))


def service_pids() -> set[int]:
    """Prometheus processes running as the package's service user."""
    try:
        uid = pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return set()  # the package never ran its postinst here
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            owner = entry.stat().st_uid
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ...": a zombie has ended, its parent just has not reaped it.
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        if name == "prometheus" and owner == uid and not rest.startswith("Z"):
            found.add(int(entry.name))
    return found


def stop_packaged_service(before: set[int]) -> list[int]:
    """Stops the service the package's installation started (and keeps it
    from starting at boot under systemd); returns the pids it had to end.
    Only processes that appeared during the installation are touched."""
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if Path("/run/systemd/system").is_dir():
        subprocess.run(
            [*as_root, "systemctl", "disable", "--now", "prometheus.service"], capture_output=True, check=False
        )
    # Without systemd (a container), the package's init script may still
    # have started the daemon, unless a policy-rc.d refused it.
    started = sorted(service_pids() - before)
    for pid in started:
        _end(pid, as_root)
    return started


def _end(pid: int, as_root: list[str]) -> None:
    subprocess.run([*as_root, "kill", "-TERM", str(pid)], capture_output=True, check=False)
    deadline = time.monotonic() + SERVICE_STOP_SECONDS
    while pid in service_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid in service_pids():
        subprocess.run([*as_root, "kill", f"-{signal.SIGKILL.value}", str(pid)], capture_output=True, check=False)


def main() -> int:
    try:
        tools = ensure_prometheus()
    except FetchFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"prometheus {tools.server}\npromtool   {tools.promtool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
