"""The Locust load test runs end to end against this session's services: a
few seconds of the steady scenario, the SLO check and the tally check."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from servicekit.settings import REPO_ROOT
from tests.system import SystemClient

pytestmark = pytest.mark.stack

# Kept after the run, with the services' logs (make test copies those here too).
ARTIFACTS = REPO_ROOT / "test-artifacts" / "locust"


@pytest.mark.timeout(90)
def test_a_short_steady_run_passes_its_checks(system: SystemClient) -> None:
    namespace = system.namespace
    env = namespace.env(system.stack)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.run_locust",
            "--scenario",
            "steady",
            "--seconds",
            "5",
            "--users",
            "8",
            "--signing",
            namespace.address("signing"),
            "--tally",
            namespace.address("tally"),
            "--secrets-dir",
            str(namespace.secrets_dir),
            "--results-dir",
            str(ARTIFACTS),
            # A loose bound: the suite's other tests share the 2 cores.
            "--max-sign-p99-ms",
            "2000",
            "--settle-timeout",
            "30",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "tally check: PASSED" in output
    assert "0 in flight at stop)" in output, output
    csv_line = next(line for line in result.stdout.splitlines() if line.startswith("CSV "))
    stats_csv = csv_line.split()[1].rstrip(",")
    with open(stats_csv, newline="") as file:
        rows = {row["Name"]: row for row in csv.DictReader(file)}
    assert int(rows["Sign"]["Request Count"]) > 0
