"""A steady signing load around a fault, and the check that it lost nothing.

The fault tests (tests/test_cluster_faults.py) kill a store node or a
service process while people keep signing, then ask two questions: how long
were signatures refused, and was any acknowledged signature lost? This
module answers both, through the public interfaces only (identity and the dev
provider to mint credentials, Signing.Sign, Tally.GetTally and
SelectSignatures, the signatures topic, `petitions recount`).

Usage::

    load = SteadyLoad(system, [hot.id, other.id], rate=25)
    with load:                               # mints a pool, then signs until the block ends
        load.wait_accepted(50)               # warmed up
        load.mark_fault("kill -9 signing")   # the instant of the fault, then make it
        kill_it()
        load.wait_recovered("kill -9 signing", timeout=60)
        restart_it()
        load.wait_accepted(load.accepted + 50)
    report = load.report()                   # every signature, every call, each fault
    print(report.summary())                  # recovery time and calls refused per fault
    check_no_loss(system, report.signatures, [hot.id, other.id])

SteadyLoad starts a new signature every 1/rate seconds, each by a DISTINCT
person (a fresh dev persona whose signer credential identity issued: a pool
of `prefill_seconds` of the load is minted before the first Sign and kept
full by three background threads; about 25 mints/s on this 2-core machine
when it is busy, and the report says if a signature ever had to wait for
one), with territories taken in turn from `territories`;
`hot_share` of them go to the first petition, the rest spread over the
others. A signature is one idempotency key and one client address: on
UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED the SAME request is
sent again after a backoff (0.1 s doubling to 1.5 s: the test limits allow
5 Signs from one address at once, then 1 a second), until ACCEPTED /
ALREADY_SIGNED, a definite refusal, or `give_up_after` seconds (then it is
UNRESOLVED: it may or may not have been recorded). At most `in_flight`
signatures are under way at once; a tick that finds them all busy starts
none and is counted as skipped, so an outage slows the load rather than
piling up a burst for the moment it ends. Every Sign call is recorded
(Attempt: when it began and ended, its gRPC code, outcome, reason).

A fault's report (FaultReport): from the instant given to mark_fault, the
time to the first ACCEPTED answer of a call started after it, and the number
of calls that ended refused (any non-OK code) between the fault and that
answer. mark_fault may be called before or just after the fault is made;
call it before, so that the refusals it causes are all counted.

check_no_loss(system, signatures, petition_ids) raises NoLossError naming
everything missing, or returns a NoLossSummary, after checking that:
- every ACCEPTED (and ALREADY_SIGNED) signature is in the namespace's
  signatures topic (read whole), as a SignatureAccepted of that id for that
  petition and signer, and an ACCEPTED receipt's log position holds it;
- the tally has applied the whole log, and then its live counts equal the
  distinct signers of the petition, in total and per territory (the signers
  the load was answered for, plus those of unresolved signatures found in
  the topic: a call whose answer was lost may still have been recorded);
- the system of record holds every one of those signers (Tally's
  SelectSignatures, asked as an administrator, so no test knows the table);
- `petitions recount <ids>` exits 0 and says "no difference" for each.
The signatures given must be all that were made on those petitions (the
union of every load's report): the tally is compared with them.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from google.protobuf.message import DecodeError

from petitions.v1 import events_pb2, identity_pb2, signing_pb2, signing_pb2_grpc, tally_pb2
from tests.harness import run_cli
from tests.system import SystemClient
from tests.waiting import eventually

ACCEPTED = "ACCEPTED"
ALREADY_SIGNED = "ALREADY_SIGNED"
# A definite answer that recorded nothing (e.g. FAILED_PRECONDITION).
REFUSED = "REFUSED"
# Every attempt failed with an answer that leaves the outcome open.
UNRESOLVED = "UNRESOLVED"
SIGNED = frozenset({ACCEPTED, ALREADY_SIGNED})

# Answers after which the same request is sent again with the same key, as
# the Signing API asks (RESOURCE_EXHAUSTED: a limit or an overload, both
# with a retry-after; retrying shows the refusal in the report rather than
# ending the signature).
RETRIED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 1.5
# SelectSignatures takes at most this many signers per call.
SELECT_BATCH = 10_000


@dataclass(frozen=True)
class Attempt:
    """One Sign call. Times are time.monotonic()."""

    started: float
    ended: float
    code: str  # a grpc.StatusCode name; "OK" when answered
    outcome: str = ""  # ACCEPTED / ALREADY_SIGNED when OK
    reason: str = ""  # the error's details when not OK

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass
class Signature:
    """One person's signature: one idempotency key, every call made for it,
    and how it ended (ACCEPTED, ALREADY_SIGNED, REFUSED, UNRESOLVED; "" while
    under way)."""

    petition_id: str
    signer: str
    territory: str
    idempotency_key: str
    client_ip: str
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = ""
    signature_id: str = ""
    # The receipt's log position (ACCEPTED only).
    partition: int = -1
    offset: int = -1

    def describe(self) -> str:
        codes = ", ".join(a.outcome or a.code for a in self.attempts)
        return (
            f"signature {self.signature_id or '(no id)'} of signer {self.signer[:16]}… on {self.petition_id}"
            f" (territory {self.territory or '-'}, key {self.idempotency_key}, {self.outcome or 'under way'}"
            f" after {len(self.attempts)} call(s): {codes})"
        )


@dataclass(frozen=True)
class FaultReport:
    name: str
    at: float  # time.monotonic() of mark_fault
    # From the fault to the first ACCEPTED of a call started after it; None
    # when none came.
    recovery_seconds: float | None
    # Calls that ended non-OK between the fault and that first ACCEPTED (to
    # the end of the load when none came).
    refused_calls: int
    refused_codes: Mapping[str, int]

    def line(self) -> str:
        recovered = (
            f"first ACCEPTED after {self.recovery_seconds:.2f} s"
            if self.recovery_seconds is not None
            else "no ACCEPTED since"
        )
        codes = ", ".join(f"{code} {count}" for code, count in sorted(self.refused_codes.items())) or "none"
        return f"{self.name}: {recovered}; {self.refused_calls} call(s) refused meanwhile ({codes})"


@dataclass(frozen=True)
class LoadReport:
    signatures: list[Signature]
    faults: list[FaultReport]
    seconds: float
    skipped_ticks: int
    minted: int
    # The first pool: how many, minted in how long.
    prefilled: int
    prefill_seconds: float
    mint_failures: int
    # Signatures that had to wait for a credential (minting paced the load).
    credential_waits: int

    def outcomes(self) -> Counter[str]:
        return Counter(s.outcome for s in self.signatures)

    def calls(self) -> list[Attempt]:
        return [a for s in self.signatures for a in s.attempts]

    def fault(self, name: str) -> FaultReport:
        for fault in self.faults:
            if fault.name == name:
                return fault
        raise KeyError(f"no fault named {name!r} (marked: {[f.name for f in self.faults]})")

    def summary(self) -> str:
        outcomes = self.outcomes()
        calls = self.calls()
        refused = Counter(a.code for a in calls if not a.ok)
        lines = [
            f"steady load: {len(self.signatures)} signatures in {self.seconds:.1f} s"
            f" ({len(self.signatures) / max(self.seconds, 1e-9):.1f}/s started), {len(calls)} calls;"
            f" {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))};"
            f" refused calls: {', '.join(f'{k} {v}' for k, v in sorted(refused.items())) or 'none'};"
            f" ticks skipped (all busy): {self.skipped_ticks}; credentials minted: {self.minted}"
            f" (the first {self.prefilled} in {self.prefill_seconds:.1f} s), {self.mint_failures} mint failures,"
            f" {self.credential_waits} signatures waited for a credential",
            *(f"  {fault.line()}" for fault in self.faults),
        ]
        return "\n".join(lines)


def fault_report(name: str, at: float, calls: Iterable[Attempt]) -> FaultReport:
    """What a fault at `at` cost, from every call recorded."""
    calls = list(calls)
    recovered = [a.ended for a in calls if a.outcome == ACCEPTED and a.started >= at]
    first = min(recovered, default=None)
    refused = Counter(a.code for a in calls if not a.ok and a.ended >= at and (first is None or a.ended <= first))
    return FaultReport(name, at, None if first is None else first - at, sum(refused.values()), dict(refused))


class CredentialPool:
    """Signer credentials of distinct, new dev personas, minted ahead by
    background threads through the dev provider and identity (as a person's
    browser would get one), so that a Sign never waits for a mint. A mint
    that fails (identity being killed, say) is counted and retried."""

    def __init__(self, system: SystemClient, territories: Sequence[str], *, ahead: int, minters: int = 3):
        self._system = system
        self._territories = list(territories)
        self._ahead = ahead
        self._ready: list[identity_pb2.SignerCredential] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._asked = 0
        self._minted = 0
        self.failures = 0
        self.empty_takes = 0
        # How long the first pool took, for the report's mint rate.
        self.prefilled = 0
        self.prefill_seconds = 0.0
        self._threads = [
            threading.Thread(target=self._mint_loop, name=f"credential-pool-{n}", daemon=True) for n in range(minters)
        ]

    def start(self, prefill: int, timeout: float) -> None:
        began = time.monotonic()
        for thread in self._threads:
            thread.start()
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._ready) >= prefill or self._stopping, timeout):
                raise AssertionError(
                    f"minted only {len(self._ready)} of {prefill} credentials in {timeout:g} s"
                    f" ({self.failures} mint failures)"
                )
        self.prefilled, self.prefill_seconds = prefill, time.monotonic() - began

    @property
    def minted(self) -> int:
        return self._minted

    def take(self, timeout: float) -> identity_pb2.SignerCredential | None:
        with self._condition:
            if not self._ready:
                # The load outran the minting: the report says how often.
                self.empty_takes += 1
            if not self._condition.wait_for(lambda: self._ready or self._stopping, timeout) or not self._ready:
                return None
            credential = self._ready.pop(0)
            self._condition.notify_all()
            return credential

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(30)

    def _mint_loop(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or len(self._ready) < self._ahead)
                if self._stopping:
                    return
                territory = self._territories[self._asked % len(self._territories)]
                self._asked += 1
            try:
                credential = self._system.credential(f"load-{uuid.uuid4().hex[:12]}", "FR", territory)
            except (grpc.RpcError, OSError):
                self.failures += 1
                with self._condition:
                    # Waits on the stop signal, not a bare sleep, so stop() is prompt.
                    self._condition.wait_for(lambda: self._stopping, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            with self._condition:
                self._minted += 1
                self._ready.append(credential)
                self._condition.notify_all()


class SteadyLoad:
    """Signs at a steady rate with distinct persons until stopped; see the
    module docstring. Use as a context manager (start on entry, stop on
    exit), or call start() and stop() yourself."""

    def __init__(
        self,
        system: SystemClient,
        petition_ids: Sequence[str],
        *,
        rate: float = 25.0,
        signing_address: str = "",
        territories: Sequence[str] = ("13", "75", "2A", "971"),
        hot_share: float = 0.8,
        in_flight: int = 96,
        connections: int = 4,
        call_timeout: float = 10.0,
        give_up_after: float = 120.0,
        prefill_seconds: float = 5.0,
    ):
        if not petition_ids:
            raise ValueError("a load needs at least one petition")
        self._system = system
        self._petitions = list(petition_ids)
        self._rate = rate
        self._address = signing_address or system.namespace.address("signing")
        self._hot_share = hot_share if len(petition_ids) > 1 else 1.0
        self._call_timeout = call_timeout
        self._give_up_after = give_up_after
        self._prefill = max(1, int(rate * prefill_seconds))
        self._credentials = CredentialPool(system, territories, ahead=self._prefill)
        self._slots = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="steady-load")
        # One connection each (a subchannel pool of its own), so several
        # processes sharing the signing port (SO_REUSEPORT) all get calls.
        self._channels = [
            grpc.insecure_channel(self._address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(connections)
        ]
        self._stubs = [signing_pb2_grpc.SigningStub(channel) for channel in self._channels]
        self._lock = threading.Lock()
        self._signatures: list[Signature] = []
        self._faults: list[tuple[str, float]] = []
        self._futures: list[Future[None]] = []
        self._stopping = threading.Event()
        self._skipped = 0
        self._started_at = 0.0
        self._stopped_at = 0.0
        self._random = random.Random()
        self._scheduler = threading.Thread(target=self._schedule, name="steady-load-scheduler", daemon=True)

    # life

    def start(self, mint_timeout: float = 120.0) -> SteadyLoad:
        """Mints the first pool of credentials, then starts signing."""
        self._credentials.start(self._prefill, mint_timeout)
        self._started_at = time.monotonic()
        self._scheduler.start()
        return self

    def stop(self) -> LoadReport:
        """Starts no new signature, lets those under way finish (each ends
        within give_up_after), and returns the report."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._scheduler.join()
            for future in list(self._futures):
                future.result()
            self._stopped_at = time.monotonic()
            self._pool.shutdown()
            self._credentials.stop()
            for channel in self._channels:
                channel.close()
        return self.report()

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # faults and waiting

    def mark_fault(self, name: str) -> None:
        """Notes that the fault `name` happens now."""
        with self._lock:
            if any(known == name for known, _ in self._faults):
                raise ValueError(f"fault {name!r} is already marked")
            self._faults.append((name, time.monotonic()))

    @property
    def accepted(self) -> int:
        with self._lock:
            return sum(1 for s in self._signatures if s.outcome == ACCEPTED)

    def wait_accepted(self, count: int, timeout: float = 60.0) -> None:
        """Waits until `count` signatures in all were ACCEPTED."""
        eventually(
            lambda: self.accepted >= count,
            timeout,
            interval=0.05,
            message=lambda: f"the load had {self.accepted} ACCEPTED signatures, not {count}",
        )

    def wait_recovered(self, name: str, timeout: float = 120.0) -> FaultReport:
        """Waits for the first ACCEPTED of a call started after the fault
        `name`; its report so far."""

        def recovered() -> FaultReport | None:
            report = self._fault_report(name)
            return report if report.recovery_seconds is not None else None

        return eventually(
            recovered,
            timeout,
            interval=0.05,
            message=lambda: f"no ACCEPTED after the fault {name!r}: {self._fault_report(name).line()}",
        )

    def report(self) -> LoadReport:
        with self._lock:
            signatures = list(self._signatures)
            faults = list(self._faults)
        calls = [a for s in signatures for a in s.attempts]
        end = self._stopped_at or time.monotonic()
        return LoadReport(
            signatures,
            [fault_report(name, at, calls) for name, at in faults],
            end - self._started_at if self._started_at else 0.0,
            self._skipped,
            self._credentials.minted,
            self._credentials.prefilled,
            self._credentials.prefill_seconds,
            self._credentials.failures,
            self._credentials.empty_takes,
        )

    def _fault_report(self, name: str) -> FaultReport:
        with self._lock:
            at = dict(self._faults).get(name)
            if at is None:
                raise KeyError(f"no fault named {name!r}")
            calls = [a for s in self._signatures for a in s.attempts]
        return fault_report(name, at, calls)

    # signing

    def _schedule(self) -> None:
        interval = 1.0 / self._rate
        tick = time.monotonic()
        while not self._stopping.is_set():
            if self._slots.acquire(blocking=False):
                self._futures.append(self._pool.submit(self._sign_one))
            else:
                with self._lock:
                    self._skipped += 1
            tick += interval
            # Waits on the stop signal until the next tick (a steady rate, not
            # a pause: stop() ends the wait at once).
            self._stopping.wait(max(0.0, tick - time.monotonic()))

    def _petition(self) -> str:
        if len(self._petitions) == 1 or self._random.random() < self._hot_share:
            return self._petitions[0]
        return self._random.choice(self._petitions[1:])

    def _sign_one(self) -> None:
        try:
            credential = self._credentials.take(timeout=60)
            if credential is None:
                return
            r = self._random
            signature = Signature(
                petition_id=self._petition(),
                signer=credential.claims.signer,
                territory=credential.claims.territory,
                idempotency_key=uuid.uuid4().hex,
                client_ip=f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}",
            )
            with self._lock:
                self._signatures.append(signature)
            self._sign(signature, credential.token)
        finally:
            self._slots.release()

    def _sign(self, signature: Signature, token: str) -> None:
        request = signing_pb2.SignRequest(
            credential=token,
            petition_id=signature.petition_id,
            idempotency_key=signature.idempotency_key,
            client_ip=signature.client_ip,
        )
        stub = self._stubs[hash(signature.idempotency_key) % len(self._stubs)]
        deadline = time.monotonic() + self._give_up_after
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            started = time.monotonic()
            try:
                reply: signing_pb2.SignResponse = stub.Sign(request, timeout=self._call_timeout)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = error.details() if isinstance(error, grpc.Call) else repr(error)
                self._record(signature, Attempt(started, time.monotonic(), code.name, reason=details or ""))
                if code not in RETRIED:
                    self._finish(signature, REFUSED)
                    return
                if time.monotonic() + backoff > deadline:
                    self._finish(signature, UNRESOLVED)
                    return
                # The API's backoff between retries of one request (not a
                # wait for a state): the same key, after a pause.
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            outcome = signing_pb2.SignResponse.Outcome.Name(reply.outcome).removeprefix("OUTCOME_")
            self._record(signature, Attempt(started, time.monotonic(), "OK", outcome))
            with self._lock:
                signature.signature_id = reply.signature_id
                if reply.HasField("position"):
                    signature.partition, signature.offset = reply.position.partition, reply.position.offset
            self._finish(signature, outcome)
            return

    def _record(self, signature: Signature, attempt: Attempt) -> None:
        with self._lock:
            signature.attempts.append(attempt)

    def _finish(self, signature: Signature, outcome: str) -> None:
        with self._lock:
            signature.outcome = outcome


# The no-loss check


class NoLossError(AssertionError):
    """What is missing, every check's findings in one message."""


@dataclass(frozen=True)
class NoLossSummary:
    per_petition: Mapping[str, int]
    by_territory: Mapping[str, Mapping[str, int]]
    topic_records: int
    recount: str
    # How long each check took (kafka, tally, cassandra, recount).
    seconds: Mapping[str, float]

    def line(self) -> str:
        counts = ", ".join(f"{p} {n}" for p, n in self.per_petition.items())
        took = ", ".join(f"{check} {seconds:.1f} s" for check, seconds in self.seconds.items())
        recount = "; ".join(self.recount.splitlines())
        return f"no loss: {counts} signatures in Kafka, Cassandra and the live tally; recount: {recount} ({took})"


@dataclass(frozen=True)
class _Logged:
    petition_id: str
    signer: str
    territory: str
    partition: int
    offset: int


def check_no_loss(
    system: SystemClient,
    signatures: Iterable[Signature],
    petition_ids: Sequence[str],
    *,
    settle_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> NoLossSummary:
    """See the module docstring. `env` is the environment `petitions
    recount` runs with (by default the namespace's on system.stack)."""
    wanted = set(petition_ids)
    mine = [s for s in signatures if s.petition_id in wanted]
    problems: list[str] = []
    seconds: dict[str, float] = {}
    began = time.monotonic()

    def took(check: str) -> None:
        nonlocal began
        seconds[check] = time.monotonic() - began
        began = time.monotonic()

    logged = _accepted_in_topic(system)
    logged_signers = {(e.petition_id, e.signer) for e in logged.values()}
    for signature in mine:
        if signature.outcome not in SIGNED:
            continue
        entry = logged.get(signature.signature_id)
        if entry is None:
            problems.append(f"Kafka: {system.signatures_topic} has no SignatureAccepted for {signature.describe()}")
        elif (entry.petition_id, entry.signer) != (signature.petition_id, signature.signer):
            problems.append(
                f"Kafka: {signature.signature_id} is logged for {entry.petition_id}/{entry.signer[:16]}…,"
                f" not for {signature.describe()}"
            )
        elif signature.outcome == ACCEPTED and (entry.partition, entry.offset) != (
            signature.partition,
            signature.offset,
        ):
            problems.append(
                f"Kafka: the receipt says partition {signature.partition} offset {signature.offset}, the"
                f" signature is at {entry.partition}/{entry.offset}: {signature.describe()}"
            )

    # Who the tally must count: the signers the load was answered for, and
    # those whose answer never came but whose signature reached the log.
    expected: dict[str, dict[str, str]] = {p: {} for p in petition_ids}
    for signature in mine:
        if signature.outcome in SIGNED or (signature.petition_id, signature.signer) in logged_signers:
            expected[signature.petition_id][signature.signer] = signature.territory
    took("kafka")

    problems += _tally_problems(system, expected, settle_timeout)
    took("tally")
    problems += _stored_problems(system, expected)
    took("cassandra")
    recount = run_cli(dict(env) if env is not None else system.namespace.env(system.stack), "recount", *petition_ids)
    took("recount")
    recount_text = (recount.stdout + recount.stderr).strip()
    lines = recount_text.splitlines()
    quiet = [p for p in petition_ids if not any(ln.startswith(f"{p}:") and "no difference" in ln for ln in lines)]
    if recount.returncode != 0 or quiet:
        problems.append(f"recount exited {recount.returncode}, without 'no difference' for {quiet}: {recount_text}")
    if problems:
        raise NoLossError(f"{len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in problems))
    return NoLossSummary(
        {p: len(signers) for p, signers in expected.items()},
        {p: dict(Counter(t for t in signers.values() if t)) for p, signers in expected.items()},
        len(logged),
        recount_text,
        seconds,
    )


def _accepted_in_topic(system: SystemClient) -> dict[str, _Logged]:
    """Every SignatureAccepted of the namespace's signatures topic, by id.
    Records that are not a SignatureEvent are skipped: the dead-letter tests
    put poison messages on the session's topic on purpose (the tally sets
    them aside), and no receipt can point at one."""
    found: dict[str, _Logged] = {}
    for record in system.all_records():
        try:
            event = events_pb2.SignatureEvent.FromString(record.value)
        except DecodeError:
            continue
        if event.WhichOneof("event") != "accepted":
            continue
        accepted = event.accepted
        found.setdefault(
            accepted.signature_id,
            _Logged(accepted.petition_id, accepted.signer, accepted.territory, record.partition, record.offset),
        )
    return found


def _tally_problems(system: SystemClient, expected: Mapping[str, Mapping[str, str]], timeout: float) -> list[str]:
    try:
        eventually(system.applied_everything, timeout, interval=0.2, message="the tally has not applied the whole log")
    except AssertionError as error:
        return [f"tally: {error}"]
    problems = []
    for petition_id, signers in expected.items():
        want = _Counts(len(signers), dict(Counter(t for t in signers.values() if t)))
        seen: list[_Counts] = []

        def matches(petition_id: str = petition_id, want: _Counts = want, seen: list[_Counts] = seen) -> bool:
            tally = system.fresh_tally(petition_id)
            seen[:] = [_Counts(tally.total, {t: n for t, n in tally.by_territory.items() if n})]
            return seen[0] == want

        # Counts are read from a short-lived cache over counters the
        # consumers may still be flushing: wait for them, and report the
        # last difference seen.
        try:
            eventually(matches, timeout, interval=0.2, message=f"tally of {petition_id}")
        except AssertionError:
            problems.append(f"tally of {petition_id}: {seen[0].against(want) if seen else 'never read'}")
    return problems


@dataclass(frozen=True)
class _Counts:
    total: int
    by_territory: dict[str, int]

    def against(self, want: _Counts) -> str:
        found = []
        if self.total != want.total:
            found.append(f"total {self.total}, the load's distinct signers {want.total}")
        for territory in sorted(set(self.by_territory) | set(want.by_territory)):
            got, expected = self.by_territory.get(territory, 0), want.by_territory.get(territory, 0)
            if got != expected:
                found.append(f"territory {territory}: {got}, expected {expected}")
        return "; ".join(found)


def _select_signatures(
    system: SystemClient, petition_id: str, signers: list[str]
) -> tally_pb2.SelectSignaturesResponse:
    """SelectSignatures, asked again while it is UNAVAILABLE (a Cassandra
    node just killed: a read at LOCAL_QUORUM can time out until the
    coordinators mark it down), as any client of a retryable status would."""

    def ask() -> tally_pb2.SelectSignaturesResponse | None:
        try:
            reply: tally_pb2.SelectSignaturesResponse = system.tally.SelectSignatures(
                tally_pb2.SelectSignaturesRequest(petition_id=petition_id, signers=signers),
                metadata=system.admin(),
                timeout=60,
            )
            return reply
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE:
                return None
            raise

    found: tally_pb2.SelectSignaturesResponse = eventually(
        ask, timeout=120, interval=2, message=f"SelectSignatures of {petition_id} kept answering UNAVAILABLE"
    )
    return found


def _stored_problems(system: SystemClient, expected: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Every expected signer in the system of record, asked of the tally
    (SelectSignatures), which owns the table and its layout."""
    problems = []
    for petition_id, signers in expected.items():
        wanted = sorted(signers)
        stored: set[str] = set()
        for start in range(0, len(wanted), SELECT_BATCH):
            reply = _select_signatures(system, petition_id, wanted[start : start + SELECT_BATCH])
            stored.update(s.signer for s in reply.signatures)
        missing = [s for s in wanted if s not in stored]
        if missing:
            problems.append(
                f"Cassandra: {len(missing)} of {len(wanted)} signers of {petition_id} not stored: "
                + ", ".join(f"{s[:16]}…" for s in missing[:20])
            )
    return problems
