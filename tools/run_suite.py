"""Runs the whole test suite against the real local stack.

Starts the stack if it is not running, runs pytest, and stops the stack
again only if this script started it, so a developer's running system is
left as it was and a CI machine is left clean. Extra arguments go to pytest.
"""

from __future__ import annotations

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
        command = [sys.executable, "-m", "pytest", f"--junitxml={artifacts / 'junit.xml'}", *pytest_args]
        code = subprocess.run(command, cwd=REPO, check=False).returncode
        if code == NO_TESTS_COLLECTED:
            print("error: pytest collected no tests", file=sys.stderr)
            code = 1
        return code
    finally:
        if not already_running:
            for name, line in stack.down(ORDER).items():
                print(f"{name:10} {line}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
