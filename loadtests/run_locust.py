"""Runs one Locust scenario against a running system and checks it.

    .venv/bin/python -m loadtests.run_locust --scenario national-peak --seconds 30 [--workers 2]

1. Creates the scenario's petitions (fresh ids) through the admin API.
2. Runs Locust headless on loadtests/locustfile.py: one process, or with
   --workers N a master and N workers (distributed mode, on this machine).
   Stats CSV (PREFIX_stats.csv …) and an HTML report go to the run's
   directory under loadtests/results/.
3. SLO check from the stats CSV: Sign p99 and the error ratio (failed RPCs /
   all RPCs) within --max-sign-p99-ms and --max-error-ratio.
4. Tally check: waits until the tally has applied the whole log (lag_messages
   0 and the totals unchanged over consecutive reads), then each petition's
   tally total must equal the ACCEPTED answers the users recorded.

Exit 0 when both checks pass, 1 otherwise. The addresses and the secrets
directory come from PETITIONS_SIGNING_ADDRESS, PETITIONS_TALLY_ADDRESS and
PETITIONS_SECRETS_DIR (defaults: the `make up` system) or the flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc

from loadtests.bench_signing import create_petition
from loadtests.scenarios import RESULTS_DIR, SCENARIOS, LoadTestSettings, Scenario
from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.settings import REPO_ROOT
from tests.harness import free_port

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
# Users finish the call they are in when the run ends, rather than being
# killed mid-call: a Sign the service accepted but the user never saw
# answered would make the tally check disagree.
STOP_TIMEOUT_SECONDS = 15
# Three reads in a row with no lag and the same totals, this far apart (the
# tally caches a snapshot and its lag for about a second).
SETTLED_READS = 3
SETTLE_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class Run:
    scenario: Scenario
    settings: LoadTestSettings
    workers: int
    directory: Path

    @property
    def csv_prefix(self) -> Path:
        return self.directory / "locust"

    @property
    def html_report(self) -> Path:
        return self.directory / "report.html"


def locust_environment(run: Run) -> dict[str, str]:
    """What every Locust process of the run reads (LoadTestSettings)."""
    s = run.settings
    return {
        **os.environ,
        # The locustfile imports loadtests.* from the repository.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
        "PETITIONS_SIGNING_ADDRESS": s.signing_address,
        "PETITIONS_TALLY_ADDRESS": s.tally_address,
        "PETITIONS_SECRETS_DIR": str(s.secrets_dir),
        "PETITIONS_LOADTEST_SCENARIO": run.scenario.name,
        "PETITIONS_LOADTEST_RUN_ID": s.loadtest_run_id,
        "PETITIONS_LOADTEST_PETITIONS": json.dumps(list(s.loadtest_petitions)),
        "PETITIONS_LOADTEST_USERS": str(s.loadtest_users),
        "PETITIONS_LOADTEST_SECONDS": str(s.loadtest_seconds),
        "PETITIONS_LOADTEST_RUN_DIR": str(run.directory),
        "PETITIONS_LOADTEST_RPC_TIMEOUT": str(s.loadtest_rpc_timeout),
    }


def run_locust(run: Run) -> int:
    """Runs Locust to the end of the scenario's shape; its exit code."""
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
    # Locust's own exit code says only "some request failed"; the SLO check
    # below decides.
    reporting = ["--headless", "--only-summary", "--exit-code-on-error", "0"]
    outputs = ["--csv", str(run.csv_prefix), "--html", str(run.html_report)]
    stopping = ["--stop-timeout", str(STOP_TIMEOUT_SECONDS)]
    env = locust_environment(run)
    timeout = run.settings.loadtest_seconds + STOP_TIMEOUT_SECONDS + 120
    if run.workers <= 0:
        command = [*base, *reporting, *outputs, *stopping, *run.scenario.user_classes]
        return subprocess.run(command, env=env, cwd=REPO_ROOT, timeout=timeout, check=False).returncode
    port = free_port()
    master_command = [
        *base,
        *reporting,
        *outputs,
        *stopping,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(run.workers),
        *run.scenario.user_classes,
    ]
    worker_command = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    master = subprocess.Popen(master_command, env=env, cwd=REPO_ROOT)
    workers = [subprocess.Popen(worker_command, env=env, cwd=REPO_ROOT) for _ in range(run.workers)]
    try:
        return master.wait(timeout)
    finally:
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.terminate()
                worker.wait(10)
        if master.poll() is None:
            master.terminate()
            master.wait(10)


# --- the SLO check --------------------------------------------------------------


@dataclass(frozen=True)
class RpcStats:
    """One row of Locust's PREFIX_stats.csv."""

    name: str
    requests: int
    failures: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float


def read_stats(prefix: Path) -> dict[str, RpcStats]:
    """Locust's stats CSV by row name (the RPC names and "Aggregated")."""
    with Path(f"{prefix}_stats.csv").open(newline="") as file:
        return {
            row["Name"]: RpcStats(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                requests_per_second=float(row["Requests/s"]),
                p50_ms=float(row["50%"]) if row["50%"] != "N/A" else 0.0,
                p99_ms=float(row["99%"]) if row["99%"] != "N/A" else 0.0,
            )
            for row in csv.DictReader(file)
        }


def check_slo(stats: dict[str, RpcStats], max_p99_ms: float, max_error_ratio: float) -> bool:
    sign = stats.get("Sign")
    total = stats.get("Aggregated")
    if sign is None or total is None or not sign.requests:
        print("SLO: FAILED, no Sign was recorded")
        return False
    error_ratio = total.failures / max(total.requests, 1)
    p99_ok = sign.p99_ms <= max_p99_ms
    errors_ok = error_ratio <= max_error_ratio
    print(
        f"SLO: Sign p99 {sign.p99_ms:.0f} ms (limit {max_p99_ms:g}) {'ok' if p99_ok else 'EXCEEDED'};"
        f" errors {total.failures}/{total.requests} = {error_ratio:.2%} (limit {max_error_ratio:.2%})"
        f" {'ok' if errors_ok else 'EXCEEDED'}"
    )
    return p99_ok and errors_ok


# --- the tally check ------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What the users saw, per petition, summed over the Locust processes'
    ledger files: ACCEPTED, ALREADY_SIGNED, and Signs whose outcome stayed
    unknown after every retry."""

    accepted: Counter[str]
    already_signed: Counter[str]
    unresolved: Counter[str]


def recorded_outcomes(directory: Path) -> Recorded:
    recorded = Recorded(Counter(), Counter(), Counter())
    for path in sorted(directory.glob("accepted-*.json")):
        ledger = json.loads(path.read_text())
        recorded.accepted.update(ledger["accepted"])
        recorded.already_signed.update(ledger["already_signed"])
        recorded.unresolved.update(ledger["unresolved"])
    return recorded


def settled_totals(address: str, petitions: list[str], timeout: float) -> dict[str, int] | None:
    """Each petition's total once the tally has applied the whole log, or
    None when it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    previous: dict[str, int] | None = None
    quiet = 0
    with grpc.insecure_channel(address) as channel:
        stub = tally_pb2_grpc.TallyStub(channel)
        while time.monotonic() < deadline:
            replies = [stub.GetTally(tally_pb2.GetTallyRequest(petition_id=p), timeout=10) for p in petitions]
            totals = {reply.petition_id: reply.total for reply in replies}
            lagging = any(reply.lag_messages for reply in replies)
            quiet = quiet + 1 if not lagging and totals == previous else 0
            if quiet >= SETTLED_READS - 1:
                return totals
            previous = totals
            time.sleep(SETTLE_INTERVAL_SECONDS)
    return None


def check_tally(run: Run, timeout: float) -> bool:
    recorded = recorded_outcomes(run.directory)
    petitions = list(run.settings.loadtest_petitions)
    totals = settled_totals(run.settings.tally_address, petitions, timeout)
    if totals is None:
        print(f"tally check: FAILED, the tally did not settle within {timeout:g} s")
        return False
    matched = True
    for petition in petitions:
        accepted = recorded.accepted[petition]
        same = totals[petition] == accepted
        matched &= same
        unknown = recorded.unresolved[petition]
        print(
            f"  {petition}: tally {totals[petition]:,}, accepted by the load test {accepted:,}"
            f" ({recorded.already_signed[petition]:,} ALREADY_SIGNED"
            + (f", {unknown:,} unresolved after retries" if unknown else "")
            + f"){'' if same else '  <-- MISMATCH'}"
        )
    print(f"tally check: {'MATCHED' if matched else 'FAILED'}")
    return matched


# --- main -----------------------------------------------------------------------


def parse_arguments(defaults: LoadTestSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="national-peak")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the run (default 30)")
    parser.add_argument("--workers", type=int, default=0, help="Locust workers; 0 runs one process (default 0)")
    parser.add_argument("--users", type=int, default=0, help="peak virtual users (default: the scenario's)")
    parser.add_argument("--signing", default=defaults.signing_address, help="signing's gRPC address")
    parser.add_argument("--tally", default=defaults.tally_address, help="tally's gRPC address")
    parser.add_argument("--secrets-dir", type=Path, default=defaults.secrets_dir, help="admin token, identity keys")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=f"default {RESULTS_DIR}")
    parser.add_argument("--max-sign-p99-ms", type=float, default=200.0, help="SLO (default 200)")
    parser.add_argument("--max-error-ratio", type=float, default=0.01, help="SLO (default 0.01)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, help="wait for the tally (default 120 s)")
    return parser.parse_args()


def prepare(
    scenario: Scenario, seconds: float, users: int, workers: int, target: LoadTestSettings, results_dir: Path
) -> Run:
    """Creates the scenario's petitions on `target`'s signing service and
    resolves the run's settings."""
    run_id = uuid.uuid4().hex[:8]
    petitions = tuple(
        create_petition(target.signing_address, target.secrets_dir, prefix=f"lt-{run_id}-{n}")
        for n in range(scenario.petitions)
    )
    settings = target.model_copy(
        update={
            "loadtest_scenario": scenario.name,
            "loadtest_run_id": run_id,
            "loadtest_petitions": petitions,
            "loadtest_users": users,
            "loadtest_seconds": seconds,
        }
    )
    directory = results_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{scenario.name}-{run_id}"
    directory.mkdir(parents=True, exist_ok=True)
    return Run(scenario, settings, workers, directory)


def main() -> int:
    options = parse_arguments(LoadTestSettings())
    target = LoadTestSettings(
        signing_address=options.signing, tally_address=options.tally, secrets_dir=options.secrets_dir
    )
    run = prepare(
        SCENARIOS[options.scenario], options.seconds, options.users, options.workers, target, options.results_dir
    )
    mode = f"{run.workers} workers" if run.workers else "one process"
    print(f"scenario {run.scenario.name}: {run.scenario.description}", flush=True)
    print(
        f"{options.seconds:g} s, {options.users or run.scenario.users} users, {mode};"
        f" petitions {', '.join(run.settings.loadtest_petitions)}; results in {run.directory}",
        flush=True,
    )
    code = run_locust(run)
    if code != 0:
        print(f"locust exited with {code}")
        return 1
    stats = read_stats(run.csv_prefix)
    for row in stats.values():
        print(
            f"  {row.name:10} {row.requests:8,} calls  {row.requests_per_second:8.1f}/s  p50 {row.p50_ms:5.0f} ms"
            f"  p99 {row.p99_ms:5.0f} ms  failures {row.failures:,}"
        )
    slo_ok = check_slo(stats, options.max_sign_p99_ms, options.max_error_ratio)
    tally_ok = check_tally(run, options.settle_timeout)
    print(f"CSV {run.csv_prefix}_stats.csv, report {run.html_report}")
    return 0 if slo_ok and tally_ok else 1


if __name__ == "__main__":
    sys.exit(main())
