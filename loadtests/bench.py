"""`make bench`: the issue's figures in one table, from one run against the
running local system (`make up`).

    .venv/bin/python -m loadtests.bench [--seconds 10] [--locust-seconds 15]

Composes the existing pieces, in this order:

1. Locust, scenario national-peak (loadtests.run_locust): what the scenario
   tool sustains, with its SLO-free figures and the tally check.
2. Sign capacity with bench_signing's asyncio driver (closed loop,
   --concurrency calls in flight, a new person per call), then the same
   driver against its bare grpc.aio echo service: the ceiling of this
   client on this machine.
3. bench_tally's live phase: --rate Sign/s offered (open loop) while
   --read-concurrency GetTally loops run in another process: ack→counted
   latency and reads/s while signing, then the same loops against the echo
   service.

Locust (gevent, the synchronous grpcio client, one core per process) cannot
offer the target's thousands of calls per second on 2 cores shared with
the whole stack; when its Sign rate falls short of what its users offered
while the asyncio driver does more, the table says Locust was the
bottleneck, and the headline figures are the asyncio driver's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from functools import partial

from loadtests.bench_signing import (
    SECRETS,
    bench_echo,
    bench_signing,
    echo_service,
    mint_credentials,
    percentiles,
)
from loadtests.bench_tally import (
    LATENCY_P99_TARGET,
    READS_TARGET,
    TALLY,
    TALLY_METRICS_PORT,
    ChildLoad,
    Outcome,
    Row,
    echo_ceiling,
    get_tally_load,
    live_phase,
    millis,
    per_second,
    print_table,
    rate_row,
    say,
)
from loadtests.petition_admin import create_petition
from loadtests.run_locust import RpcStats, check_tally, prepare, read_stats, run_locust
from loadtests.scenarios import RESULTS_DIR, SCENARIOS, LoadTestSettings
from servicekit.dev_processes import free_port
from servicekit.settings import CommonSettings

SIGNING_RATE_TARGET = 2_000.0  # accepted signatures/s
SIGN_P99_TARGET = 0.050  # seconds
LOCUST_SCENARIO = "national-peak"
# Below this share of its offered Sign rate, Locust did not keep up with its
# own schedule.
KEEPING_UP = 0.9
# A Locust process this busy is the limit itself (gevent: one thread).
LOCUST_BOUND_CORES = 0.8


@dataclass(frozen=True)
class LocustResult:
    stats: dict[str, RpcStats]
    offered: float  # Sign/s its users would send if every answer came at once
    cores: float  # CPU cores the Locust process used, over its whole life
    matched: bool  # the tally check


def children_cpu_seconds() -> float:
    """CPU time of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def locust_phase(seconds: float, users: int) -> LocustResult:
    """Runs the Locust scenario in one process (so one core at most: gevent
    runs every user on one thread)."""
    scenario = SCENARIOS[LOCUST_SCENARIO]
    run = prepare(scenario, seconds, users, 0, LoadTestSettings(), RESULTS_DIR)
    say(f"== Locust {scenario.name}, {seconds:g} s, {users} users (results in {run.directory})")
    cpu_before, began = children_cpu_seconds(), time.perf_counter()
    if run_locust(run) != 0:
        raise RuntimeError("locust failed")
    cores = (children_cpu_seconds() - cpu_before) / (time.perf_counter() - began)
    signers = users * scenario.signer_weight / (scenario.signer_weight + scenario.reader_weight)
    return LocustResult(read_stats(run.csv_prefix), signers * scenario.sign_rate, cores, check_tally(run.record, 120))


def signing_phase(seconds: float, concurrency: int) -> tuple[Outcome, Outcome]:
    """bench_signing's measurement: Sign, then the echo ceiling."""
    say(f"== asyncio driver: Sign, {concurrency} in flight, {seconds:g} s; then echo")
    credentials = mint_credentials(int(seconds * 4000))
    petition = create_petition()
    sign = asyncio.run(bench_signing(seconds, concurrency, credentials, petition))
    with echo_service(free_port()) as port:
        echo = asyncio.run(bench_echo(seconds, concurrency, port, credentials[0].encode() + petition.encode()))
    return sign, echo


def table(
    seconds: float,
    concurrency: int,
    locust: LocustResult,
    sign: Outcome,
    sign_echo: Outcome,
    live_rows: list[Row],
) -> list[Row]:
    stats = locust.stats
    sign_rate = sign[0] / seconds
    echo_rate = sign_echo[0] / seconds
    cuts = percentiles(sign[1])
    echo_cuts = percentiles(sign_echo[1])
    rows: list[Row] = [
        rate_row(f"Sign accepted ({concurrency} in flight, asyncio)", sign_rate, SIGNING_RATE_TARGET),
        ("Sign p50", millis(cuts[49]), "", ""),
        ("Sign p99", millis(cuts[98]), f"< {millis(SIGN_P99_TARGET)}", f"{cuts[98] / SIGN_P99_TARGET:.2f}"),
        ("Sign failures", f"{sign[2]}", "0", ""),
        ("echo calls (same driver, same load)", per_second(echo_rate), "", ""),
        ("echo p50 / p99", f"{millis(echo_cuts[49])} / {millis(echo_cuts[98])}", "", ""),
        ("Sign / echo", f"{sign_rate / echo_rate:.2f}", "", ""),
        *live_rows,
    ]
    locust_sign = stats.get("Sign")
    locust_reads = stats.get("GetTally")
    if locust_sign:
        rows += [
            (f"Locust {LOCUST_SCENARIO}: Sign", per_second(locust_sign.requests_per_second), "", ""),
            ("Locust Sign offered by its users", per_second(locust.offered), "", ""),
            ("Locust Sign p50 / p99", f"{locust_sign.p50_ms:.0f} ms / {locust_sign.p99_ms:.0f} ms", "", ""),
            ("Locust Sign / asyncio Sign", f"{locust_sign.requests_per_second / sign_rate:.2f}", "", ""),
            ("Locust tally check", "passed" if locust.matched else "FAILED", "passed", ""),
        ]
    if locust_reads:
        rows.append((f"Locust {LOCUST_SCENARIO}: GetTally", per_second(locust_reads.requests_per_second), "", ""))
    rows.append(("Locust process CPU (1 core at most)", f"{locust.cores:.2f} cores", "", ""))
    return rows


def locust_verdict(locust: LocustResult, asyncio_rate: float) -> str:
    sign = locust.stats.get("Sign")
    achieved = sign.requests_per_second if sign else 0.0
    if locust.cores >= LOCUST_BOUND_CORES:
        return (
            f"Locust was the bottleneck: its process kept {locust.cores:.2f} of its one core busy and sent"
            f" {achieved:,.0f} of the {locust.offered:,.0f} Sign/s its users offered, while the asyncio driver got"
            f" {asyncio_rate:,.0f}/s accepted; the figures against the targets are the asyncio driver's (Locust"
            " stays the scenario tool)."
        )
    if achieved < KEEPING_UP * locust.offered:
        return (
            f"Locust sent {achieved:,.0f} of the {locust.offered:,.0f} Sign/s its users offered with"
            f" {locust.cores:.2f} cores busy: the service's latency held its users back (each waits for its"
            " answer), not Locust; the figures against the targets are the asyncio driver's."
        )
    return f"Locust kept up with its scenario ({achieved:,.0f} of {locust.offered:,.0f} Sign/s offered)."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="each asyncio measurement (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="Sign calls in flight (default 64)")
    parser.add_argument("--rate", type=float, default=200.0, help="Sign/s offered in the live phase (default 200)")
    parser.add_argument("--read-concurrency", type=int, default=64, help="GetTally loops (default 64)")
    parser.add_argument("--locust-seconds", type=float, default=15.0, help="the Locust scenario (default 15)")
    parser.add_argument("--locust-users", type=int, default=200, help="Locust users (default 200)")
    options = parser.parse_args()
    if not (SECRETS / "ip-hash.key").exists():
        say("run `make up` first", file=sys.stderr)
        return 1
    began = time.perf_counter()

    locust = locust_phase(options.locust_seconds, options.locust_users)
    sign, sign_echo = signing_phase(options.seconds, options.concurrency)

    say(f"== asyncio driver: {options.rate:g} Sign/s offered with {options.read_concurrency} GetTally loops")
    credentials = mint_credentials(int(options.rate * options.seconds))
    petition = create_petition()
    reads = ChildLoad(partial(get_tally_load, TALLY, petition, options.seconds, options.read_concurrency))
    try:
        live = asyncio.run(
            live_phase(
                CommonSettings(),
                TALLY,
                TALLY_METRICS_PORT,
                petition,
                credentials,
                options.rate,
                options.seconds,
                0.002,
                30.0,
                reads,
            )
        )
    finally:
        reads.stop()
    read_echo = echo_ceiling(options.seconds, options.read_concurrency, live.tally_bytes)

    ack_cuts = percentiles(live.ack_to_counted)
    read_rate = live.reads[0] / options.seconds if live.reads else 0.0
    read_echo_rate = read_echo[0] / options.seconds
    live_rows: list[Row] = [
        (
            f"ack→counted p99 ({options.rate:g} Sign/s offered)",
            millis(ack_cuts[98]),
            f"< {millis(LATENCY_P99_TARGET)}",
            f"{ack_cuts[98] / LATENCY_P99_TARGET:.2f}",
        ),
        ("receipts never seen counted", f"{live.uncounted}", "0", ""),
        rate_row(f"GetTally reads while signing ({options.read_concurrency} loops)", read_rate, READS_TARGET),
        ("GetTally failures", f"{live.reads[2] if live.reads else 0}", "0", ""),
        ("echo reads (same driver, same load)", per_second(read_echo_rate), "", ""),
        ("GetTally / echo", f"{read_rate / read_echo_rate:.2f}", "", ""),
    ]
    print_table(table(options.seconds, options.concurrency, locust, sign, sign_echo, live_rows))
    say()
    say(locust_verdict(locust, sign[0] / options.seconds))
    say(
        f"machine: {multiprocessing.cpu_count()} cores, shared with the whole stack; runtime"
        f" {time.perf_counter() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
