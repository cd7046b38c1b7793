"""Runs one Locust scenario against a running system and checks it.

    .venv/bin/python -m loadtests.run_locust --scenario national-peak --seconds 30 [--workers 2]

1. Creates the scenario's petitions (fresh ids) as an administrator of the petitions service.
2. Runs Locust headless on loadtests/locustfile.py: one process, or with
   --workers N a master and N workers (distributed mode, on this machine).
   Stats CSV (PREFIX_stats.csv …) and an HTML report go to the run's
   directory under loadtests/results/.
3. SLO check from the stats CSV: Sign p99 and the error ratio (failed RPCs /
   all RPCs) within --max-sign-p99-ms and --max-error-ratio.
4. Tally check: every Locust process that ran users must have written its
   ledger (what its users saw); once the tally has applied the whole log
   (lag_messages 0 and the totals unchanged over consecutive reads), each
   petition's total must lie between the ACCEPTED answers and those plus the
   Signs whose answer nobody saw (in flight when the run stopped, or failed
   with an open outcome after every retry). The users are given time to
   finish every call (--stop-timeout, by default the longest a Sign task can
   take), so normally nothing is in flight and the bounds are equal.

    .venv/bin/python -m loadtests.run_locust --check loadtests/results/<run>

checks a finished run again from its directory (run.json and the ledgers).

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

from loadtests.petition_admin import create_petition
from loadtests.scenarios import LEDGER_GLOB, RESULTS_DIR, SCENARIOS, LoadTestSettings, Scenario, sign_task_bound
from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.dev_processes import free_port
from servicekit.settings import REPO_ROOT

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
RUN_RECORD = "run.json"
# Three reads in a row with no lag and the same totals, this far apart (the
# tally caches a snapshot and its lag for about a second).
SETTLED_READS = 3
SETTLE_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class RunRecord:
    """What the checks need to know of a run, kept in its directory."""

    directory: Path
    petitions: list[str]
    processes: int  # the Locust processes that run users: the workers, or 1
    tally_address: str

    def save(self) -> None:
        record = {"petitions": self.petitions, "processes": self.processes, "tally_address": self.tally_address}
        (self.directory / RUN_RECORD).write_text(json.dumps(record, indent=2))

    @classmethod
    def load(cls, directory: Path) -> RunRecord:
        record = json.loads((directory / RUN_RECORD).read_text())
        return cls(directory, list(record["petitions"]), int(record["processes"]), str(record["tally_address"]))


@dataclass(frozen=True)
class Run:
    scenario: Scenario
    settings: LoadTestSettings
    workers: int
    directory: Path
    # How long users may take to finish the call they are in when the run
    # ends, before Locust kills them (their calls then count as in flight).
    stop_timeout: float

    @property
    def record(self) -> RunRecord:
        petitions = list(self.settings.loadtest_petitions)
        return RunRecord(self.directory, petitions, max(self.workers, 1), self.settings.tally_address)

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
    stopping = ["--stop-timeout", f"{run.stop_timeout:g}"]
    env = locust_environment(run)
    timeout = run.settings.loadtest_seconds + run.stop_timeout + 120
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
        # The master quits half a second after telling its workers to; each
        # worker then stops its users (within the stop timeout) and writes
        # its ledger as it exits.
        for worker in workers:
            try:
                worker.wait(run.stop_timeout + 30)
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

OUTCOMES = ("begun", "accepted", "already_signed", "refused", "unknown", "in_flight")


@dataclass(frozen=True)
class Recorded:
    """What the users saw, per petition, summed over the Locust processes'
    ledgers: Signs begun, and how each ended (see the locustfile's Ledger)."""

    ledgers: list[Path]
    counts: dict[str, Counter[str]]

    def __getitem__(self, outcome: str) -> Counter[str]:
        return self.counts[outcome]


class LedgersIncomplete(Exception):
    """A Locust process that ran users left no ledger: the tally cannot be
    checked against what its users saw."""


def recorded_outcomes(directory: Path, processes: int) -> Recorded:
    """The ledgers of a run that had `processes` Locust processes running
    users (its workers, or the single local process)."""
    ledgers = sorted(directory.glob(LEDGER_GLOB))
    if len(ledgers) != processes:
        found = ", ".join(path.name for path in ledgers) or "none"
        raise LedgersIncomplete(
            f"{processes} Locust process(es) ran users but {len(ledgers)} ledger(s) were written ({found})"
        )
    counts: dict[str, Counter[str]] = {outcome: Counter() for outcome in OUTCOMES}
    for path in ledgers:
        ledger = json.loads(path.read_text())
        for outcome in OUTCOMES:
            counts[outcome].update(ledger[outcome])
    return Recorded(ledgers, counts)


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


def check_tally(run: RunRecord, timeout: float) -> bool:
    """Every Sign answered ACCEPTED is counted, and nothing else is counted
    but Signs whose answer the users never saw (in flight when their process
    stopped, or failed with an open outcome after every retry):

        accepted <= tally <= accepted + in flight + unknown

    With the default stop timeout every call finishes, so in flight is 0."""
    try:
        recorded = recorded_outcomes(run.directory, run.processes)
    except LedgersIncomplete as error:
        print(f"tally check: FAILED, {error}")
        return False
    totals = settled_totals(run.tally_address, run.petitions, timeout)
    if totals is None:
        print(f"tally check: FAILED, the tally did not settle within {timeout:g} s")
        return False
    print(f"  ledgers: {', '.join(path.name for path in recorded.ledgers)}")
    matched = True
    for petition in run.petitions:
        accepted = recorded["accepted"][petition]
        open_ = recorded["in_flight"][petition] + recorded["unknown"][petition]
        total = totals[petition]
        within = accepted <= total <= accepted + open_
        matched &= within
        verdict = ""
        if total < accepted:
            verdict = f"  <-- FAILED: {accepted - total:,} ACCEPTED signature(s) not counted"
        elif not within:
            verdict = f"  <-- FAILED: {total - accepted - open_:,} more counted than the load test can account for"
        print(
            f"  {petition}: tally {total:,}; load test: {recorded['begun'][petition]:,} begun,"
            f" {accepted:,} accepted, {recorded['already_signed'][petition]:,} ALREADY_SIGNED,"
            f" {recorded['refused'][petition]:,} refused, {recorded['unknown'][petition]:,} unknown after retries,"
            f" {recorded['in_flight'][petition]:,} in flight at stop{verdict}"
        )
    in_flight = sum(recorded["in_flight"].values())
    print(
        f"tally check: {'PASSED' if matched else 'FAILED'}"
        f" (accepted <= tally <= accepted + in flight + unknown; {in_flight:,} in flight at stop)"
    )
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
    parser.add_argument("--secrets-dir", type=Path, default=defaults.secrets_dir, help="identity keys")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=f"default {RESULTS_DIR}")
    parser.add_argument("--max-sign-p99-ms", type=float, default=200.0, help="SLO (default 200)")
    parser.add_argument("--max-error-ratio", type=float, default=0.01, help="SLO (default 0.01)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, help="wait for the tally (default 120 s)")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=None,
        help="seconds users may take to finish their call at the end (default: the longest a Sign can take, so no"
        " call is left in flight; 0 kills them at once)",
    )
    parser.add_argument("--check", type=Path, metavar="RUN_DIR", help="only check a finished run's tally again")
    return parser.parse_args()


def prepare(
    scenario: Scenario,
    seconds: float,
    users: int,
    workers: int,
    target: LoadTestSettings,
    results_dir: Path,
    stop_timeout: float | None = None,
) -> Run:
    """Creates the scenario's petitions on `target`'s signing service and
    resolves the run's settings."""
    run_id = uuid.uuid4().hex[:8]
    petitions = tuple(create_petition(target, prefix=f"lt-{run_id}-{n}") for n in range(scenario.petitions))
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
    run = Run(
        scenario, settings, workers, directory, sign_task_bound(settings) if stop_timeout is None else stop_timeout
    )
    run.record.save()
    return run


def main() -> int:
    options = parse_arguments(LoadTestSettings())
    if options.check is not None:
        return 0 if check_tally(RunRecord.load(options.check), options.settle_timeout) else 1
    target = LoadTestSettings(
        signing_address=options.signing, tally_address=options.tally, secrets_dir=options.secrets_dir
    )
    run = prepare(
        SCENARIOS[options.scenario],
        options.seconds,
        options.users,
        options.workers,
        target,
        options.results_dir,
        options.stop_timeout,
    )
    mode = f"{run.workers} workers" if run.workers else "one process"
    print(f"scenario {run.scenario.name}: {run.scenario.description}", flush=True)
    print(
        f"{options.seconds:g} s, {options.users or run.scenario.users} users, {mode};"
        f" petitions {', '.join(run.settings.loadtest_petitions)}; users get {run.stop_timeout:g} s to finish"
        f" their call at the end; results in {run.directory}",
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
    tally_ok = check_tally(run.record, options.settle_timeout)
    print(f"CSV {run.csv_prefix}_stats.csv, report {run.html_report}")
    return 0 if slo_ok and tally_ok else 1


if __name__ == "__main__":
    sys.exit(main())
