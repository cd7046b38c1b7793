"""Runs the whole test suite against the real local stack.

Starts the stack if it is not running, runs pytest, and stops the stack
again only if this script started it, so a developer's running system is
left as it was and a CI machine is left clean. Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploy.local.browser import ensure_browser  # noqa: E402
from deploy.local.fetch import FetchFailed  # noqa: E402
from deploy.local.layout import Layout  # noqa: E402
from deploy.local.processes import StartFailed  # noqa: E402
from deploy.local.prometheus import ensure_prometheus  # noqa: E402
from deploy.local.stack import ORDER, Stack  # noqa: E402

NO_TESTS_COLLECTED = 5
CLUSTER_TEST_REDIS_DB = "2"


def main(pytest_args: list[str]) -> int:
    # Debian's programs some tests drive, installed if missing: chromium for
    # the browser test; promtool and a Prometheus server for the rules and
    # the scrape test.
    try:
        ensure_browser()
        ensure_prometheus()
    except FetchFailed as error:
        print(f"error: a program the tests need could not be installed:\n{error}", file=sys.stderr)
        return 1
    stack = Stack(Layout.from_environment())
    already_running = all(item.pid is not None for item in stack.status())
    began = time.monotonic()
    try:
        for name, line in stack.up(ORDER).items():
            print(f"{name:10} {line}", flush=True)
    except StartFailed as error:
        print(f"error: the local stack did not start:\n{error}", file=sys.stderr)
        return 1
    print(f"stack ready in {time.monotonic() - began:.1f} s", flush=True)
    try:
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        return run_pytest(artifacts, pytest_args)
    finally:
        if not already_running:
            for name, line in stack.down(ORDER).items():
                print(f"{name:10} {line}", flush=True)


def run_pytest(artifacts: Path, pytest_args: list[str]) -> int:
    """The whole suite, or what pytest_args select. The whole suite runs as
    two pytest processes side by side: the cluster fault tests (marker
    `cluster`: a cluster profile of their own, nine JVMs, minutes of
    starting and of nodes coming back) beside everything else on the single
    stack. They share nothing but the machine, and most of the cluster's
    time is waiting, so the suite takes about as long as the longer of the
    two instead of their sum."""
    pytest = [sys.executable, "-m", "pytest"]
    if pytest_args:
        return _collected(subprocess.run([*pytest, f"--junitxml={artifacts / 'junit.xml'}", *pytest_args], cwd=REPO))
    cluster_log = artifacts / "pytest-cluster.log"
    with cluster_log.open("w") as log:
        cluster = subprocess.Popen(
            [*pytest, "-m", "cluster", f"--junitxml={artifacts / 'junit-cluster.xml'}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own Redis database on the shared Redis, should it touch it.
            env={**os.environ, "PETITIONS_TEST_REDIS_DB": CLUSTER_TEST_REDIS_DB},
        )
        try:
            print(f"cluster fault tests running beside the rest (pid {cluster.pid}); output: {cluster_log}", flush=True)
            rest = _collected(
                subprocess.run([*pytest, "-m", "not cluster", f"--junitxml={artifacts / 'junit.xml'}"], cwd=REPO)
            )
            cluster_code = cluster.wait()
        finally:
            if cluster.poll() is None:
                cluster.terminate()
                cluster.wait()
    print(f"\n===== the cluster fault tests (tests marked cluster), exit {cluster_code} =====", flush=True)
    print(cluster_log.read_text(), flush=True)
    return rest or _collected_code(cluster_code)


def _collected(result: subprocess.CompletedProcess[bytes]) -> int:
    return _collected_code(result.returncode)


def _collected_code(code: int) -> int:
    if code == NO_TESTS_COLLECTED:
        print("error: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
