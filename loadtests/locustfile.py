"""The Locust users of the petition load tests. Run through the runner,
which creates the petitions and sets the scenario:

    .venv/bin/python -m loadtests.run_locust --scenario national-peak --seconds 30 [--workers 2]

SignerUser signs as real, distinct people: each Sign carries a signer
credential minted here with identity's key (as bench_signing does), for a
person who has not signed before (or, in duplicate-storm, one of a fixed
crowd), living in a département weighted like France's or a few percent
abroad. ReaderUser only reads a counter (GetTally), as most visitors of a
viral petition do. ScenarioShape brings the users in (a flash crowd in
seconds for national-peak) and ends the run.

Each Locust process that runs users counts, per petition, the Signs begun
and how each ended (see Ledger), and writes them once, as it quits, to
ledger-<role>-<pid>.json in the run directory; the runner checks that every
such process wrote one, sums them and compares them with the tally.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections import Counter
from typing import Any

# Imported first: it makes grpcio cooperate with gevent before any channel exists.
from loadtests.grpc_locust import GrpcUser  # isort: skip

import grpc
from locust import LoadTestShape, constant_throughput, events, task
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner

from loadtests.bench_signing import signing_key
from loadtests.population import Population
from loadtests.scenarios import LEDGER_GLOB, RETRY_AFTER_SECONDS, SCENARIOS, SIGN_ATTEMPTS, LoadTestSettings
from petitions.v1 import signing_pb2, signing_pb2_grpc, tally_pb2, tally_pb2_grpc
from servicekit import signer_credential, territories
from servicekit.signer_credential import SignerClaims

SETTINGS = LoadTestSettings()
SCENARIO = SCENARIOS[SETTINGS.loadtest_scenario]
PETITIONS = SETTINGS.loadtest_petitions or ("demo",)
USERS = SETTINGS.loadtest_users or SCENARIO.users
# Long enough for any test run: credentials are minted once per person.
CREDENTIAL_TTL_SECONDS = 3600
# Sign answers that mean "try again with the same idempotency key".
RETRIED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class Ledger:
    """What this Locust process's users saw, per petition (one per process:
    the users are greenlets of it). Every Sign begun ends in exactly one of
    accepted, already_signed, refused (a definite answer that wrote
    nothing) or unknown (every attempt failed with an answer that leaves the
    outcome open), or is still in flight when the process stops: killed by
    Locust past the stop timeout, its answer never seen."""

    def __init__(self) -> None:
        self.begun: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.already_signed: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.written = False

    def in_flight(self) -> Counter[str]:
        ended = self.accepted + self.already_signed + self.refused + self.unknown
        return Counter({p: n - ended[p] for p, n in self.begun.items() if n > ended[p]})

    def write(self, role: str) -> None:
        SETTINGS.loadtest_run_dir.mkdir(parents=True, exist_ok=True)
        path = SETTINGS.loadtest_run_dir / LEDGER_GLOB.replace("*", f"{role}-{os.getpid()}")
        # Written whole then renamed, so the runner never reads half a file.
        partial = path.with_suffix(".tmp")
        partial.write_text(
            json.dumps(
                {
                    "role": role,
                    "pid": os.getpid(),
                    "begun": self.begun,
                    "accepted": self.accepted,
                    "already_signed": self.already_signed,
                    "refused": self.refused,
                    "unknown": self.unknown,
                    "in_flight": self.in_flight(),
                }
            )
        )
        partial.replace(path)
        self.written = True


LEDGER = Ledger()


@events.quitting.add_listener
def write_ledger(environment: Environment, **_: Any) -> None:
    """Once, as the process quits: by then Locust has stopped every user
    (each finished its task within the stop timeout, or was killed), so no
    answer can arrive after the ledger is written. The master runs no users
    and writes none; a worker or a single process writes exactly one."""
    runner = environment.runner
    if isinstance(runner, MasterRunner) or LEDGER.written:
        return
    LEDGER.write("worker" if isinstance(runner, WorkerRunner) else "local")


# The crowd's homes: only codes identity would accept.
TERRITORIES = territories.codes()


class Persons:
    """Who signs: new people, or a fixed crowd shared by every process of
    the run (their pseudonyms derive from the run id, so all workers agree)."""

    def __init__(self) -> None:
        self._key = signing_key(SETTINGS.secrets_dir)
        self._population = Population(random.randrange(1 << 30))

    def credential(self) -> str:
        if SCENARIO.persons:
            index = random.randrange(SCENARIO.persons)
            signer = hashlib.sha256(f"{SETTINGS.loadtest_run_id}:{index}".encode()).hexdigest()
            # The crowd lives in one place each: the index picks it.
            country, territory = "FR", TERRITORIES[index % len(TERRITORIES)]
        else:
            signer = secrets.token_hex(32)  # the shape of identity's HMAC pseudonym
            country, territory = self._population.place()
        claims = SignerClaims(signer, "oidc", "loadtest", country, territory, True)
        return signer_credential.issue(self._key, claims, CREDENTIAL_TTL_SECONDS)[0]


PERSONS = Persons()
# The long tail: the n-th other petition gets 1/n of the others' Signs.
TAIL_WEIGHTS = [1 / rank for rank in range(1, len(PETITIONS))]


def pick_petition() -> str:
    if len(PETITIONS) == 1 or random.random() < SCENARIO.hot_share:
        return PETITIONS[0]
    return random.choices(PETITIONS[1:], weights=TAIL_WEIGHTS)[0]


class SignerUser(GrpcUser):
    """A stream of people signing: each Sign is a person arriving."""

    weight = SCENARIO.signer_weight
    wait_time = constant_throughput(SCENARIO.sign_rate)

    def on_start(self) -> None:
        self.stub = signing_pb2_grpc.SigningStub(self.channel(SETTINGS.signing_address))

    @task
    def sign(self) -> None:
        petition = pick_petition()
        # One idempotency key per person and petition, kept across retries,
        # as the API asks: an UNAVAILABLE Sign may still have reached Kafka
        # (the broker acknowledged late), and only a retry with the same key
        # tells this person's outcome, so the tally check can be exact.
        request = signing_pb2.SignRequest(
            credential=PERSONS.credential(), petition_id=petition, idempotency_key=secrets.token_hex(16)
        )
        LEDGER.begun[petition] += 1
        for attempt in range(SIGN_ATTEMPTS):
            try:
                reply = self.stub.Sign(request, timeout=SETTINGS.loadtest_rpc_timeout)
            except grpc.RpcError as error:
                # Each failed attempt is already a Locust failure (the interceptor).
                if error.code() not in RETRIED:
                    LEDGER.refused[petition] += 1
                    return
                if attempt == SIGN_ATTEMPTS - 1:
                    LEDGER.unknown[petition] += 1
                    return
                time.sleep(RETRY_AFTER_SECONDS)  # gevent-patched: yields to the other users
                continue
            if reply.outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED:
                LEDGER.accepted[petition] += 1
            else:
                LEDGER.already_signed[petition] += 1
            return


class ReaderUser(GrpcUser):
    """A visitor watching the hot petition's counter."""

    # Locust refuses a weight of 0; a scenario without readers leaves this
    # class out (Scenario.user_classes).
    weight = max(SCENARIO.reader_weight, 1)
    wait_time = constant_throughput(SCENARIO.read_rate)

    def on_start(self) -> None:
        self.stub = tally_pb2_grpc.TallyStub(self.channel(SETTINGS.tally_address))
        self.request = tally_pb2.GetTallyRequest(petition_id=PETITIONS[0])

    @task
    def read(self) -> None:
        try:
            self.stub.GetTally(self.request, timeout=SETTINGS.loadtest_rpc_timeout)
        except grpc.RpcError:
            return  # reported to Locust as a failure by the interceptor


# The latest stats report from each worker, as the master received it.
WORKER_REPORTS: dict[str, float] = {}


@events.worker_report.add_listener
def note_worker_report(client_id: str, **_: Any) -> None:
    WORKER_REPORTS[client_id] = time.monotonic()


class ScenarioShape(LoadTestShape):
    """All users arrive within the scenario's ramp (a flash crowd for
    national-peak) and stay for the configured seconds. Then the run drains
    before it ends: every user is stopped (finishing the call it is in,
    within the stop timeout), and a master also waits until each worker has
    reported its stats since, so the stats CSV holds every call; only then
    does the run end (and each process write its ledger as it quits)."""

    def __init__(self) -> None:
        super().__init__()
        self._drained_at: float | None = None

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() < SETTINGS.loadtest_seconds:
            return USERS, USERS / SCENARIO.ramp_seconds
        runner = self.runner
        # Stopping all users at once (a rate well above their number).
        draining = 0, float(max(USERS, 1) * 100)
        if runner is not None and runner.user_count > 0:
            return draining
        if self._drained_at is None:
            self._drained_at = time.monotonic()
        if isinstance(runner, MasterRunner):
            drained_at = self._drained_at
            waiting = [w for w in runner.clients if WORKER_REPORTS.get(w, float("-inf")) <= drained_at]
            # A worker that stopped reporting must not hold the run forever.
            if waiting and time.monotonic() - drained_at < 3 * WORKER_REPORT_INTERVAL:
                return draining
            if waiting:
                logging.warning("ending without a final stats report from worker(s) %s", ", ".join(waiting))
        return None
