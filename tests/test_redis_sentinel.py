"""Redis behind Sentinel: a primary, a replica and three sentinels of the
test's own (deploy.local.components, in a tmp run directory on free ports),
and what a failover costs.

A client from servicekit.stores.redis_client follows the failover without
being recreated, Lua scripts included (the new primary's script cache is
empty: Redis 7 does not replicate SCRIPT LOAD); a real signing process
keeps signing through a kill -9 of the primary, and the figures of what the
fast-path ledger and the rate limits lost are printed (run with -s)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from redis.exceptions import RedisError

from deploy.local.components import Redis, RedisSentinel
from deploy.local.layout import Layout
from deploy.local.stack import Stack
from petitions.v1 import signing_pb2, signing_pb2_grpc
from servicekit.redis_pipelining import AutoPipeline
from servicekit.settings import CommonSettings
from servicekit.stores import RedisLoginRefused, redis_client, redis_connection
from tests.harness import free_port, run_module, start_service, wait_serving
from tests.system import SystemClient
from tests.waiting import eventually, eventually_async

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(600)]

SERVICE = "petitions"

# Counts, and answers the count: a write whose acknowledgement we keep.
_COUNT = "return redis.call('INCR', KEYS[1])"


@dataclass(frozen=True)
class SentinelSet:
    stack: Stack
    ports: dict[str, int]
    sentinels: tuple[int, ...]
    # The set's password, which its sentinels require too; None: none.
    password: str | None = None

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinels]

    def settings(self, *, sentinel_auth: bool = True) -> CommonSettings:
        """What a service is given; with a password, it asks the sentinels
        with it too unless sentinel_auth is False."""
        login = f":{self.password}@" if self.password else ""
        return CommonSettings(
            # The database number and the password only: the sentinels name the host.
            redis_url=f"redis://{login}127.0.0.1:1/0",
            redis_sentinels=tuple(self.sentinel_addresses),
            redis_sentinel_service=SERVICE,
            redis_sentinel_auth=bool(self.password) and sentinel_auth,
        )

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=1, socket_connect_timeout=1)

    def primary_port(self) -> int:
        """The primary as the first sentinel that answers names it."""
        for port in self.sentinels:
            client = self.sentinel(port)
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
                if isinstance(address, tuple | list):
                    return int(address[1])
            except RedisError:
                continue
            finally:
                client.close()
        raise AssertionError("no sentinel names a primary")

    def primary(self) -> str:
        port = self.primary_port()
        return next(name for name, p in self.ports.items() if p == port)

    def server(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], password=self.password, socket_timeout=2, socket_connect_timeout=2)

    def is_replica_of(self, name: str, primary: str) -> bool:
        try:
            info = self.server(name).info("replication")
        except RedisError:
            return False
        return bool(
            info.get("role") == "slave"
            and int(info.get("master_port", 0)) == self.ports[primary]
            and info.get("master_link_status") == "up"
        )


@contextmanager
def started_set(tmp_path_factory: pytest.TempPathFactory, password: str | None = None) -> Iterator[SentinelSet]:
    default = Layout.from_environment()
    layout = Layout(tmp_path_factory.mktemp("redis-sentinel"), default.jar_cache, default.ports)
    primary, replica = free_port(), free_port()
    sentinels = tuple(free_port() for _ in range(3))
    components: dict[str, Redis | RedisSentinel] = {
        "redis-a": Redis("redis-a", port=primary, password=password),
        "redis-b": Redis("redis-b", port=replica, replica_of=primary, password=password),
    }
    for number, port in enumerate(sentinels, 1):
        components[f"sentinel-{number}"] = RedisSentinel(
            f"sentinel-{number}", port, primary, service=SERVICE, password=password
        )
    stack = Stack(layout, components)
    names = list(components)
    try:
        began = time.monotonic()
        stack.up(names)
        print(f"\nsentinel set ready in {time.monotonic() - began:.1f} s")
        yield SentinelSet(stack, {"redis-a": primary, "redis-b": replica}, sentinels, password)
    finally:
        stack.down(names)


@pytest.fixture
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with started_set(tmp_path_factory) as started:
        yield started


@pytest.fixture
def protected_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """Servers and sentinels that all require the password, as the
    Kubernetes RedisReplication and RedisSentinel run."""
    with started_set(tmp_path_factory, password=f"pw-{uuid.uuid4().hex}") as started:
        yield started


def test_a_sentinel_set_comes_up_with_its_replica_and_sentinels(sentinel_set: SentinelSet) -> None:
    assert sentinel_set.primary() == "redis-a"
    assert sentinel_set.is_replica_of("redis-b", "redis-a")
    for port in sentinel_set.sentinels:
        state = sentinel_set.sentinel(port).sentinel_master(SERVICE)
        assert isinstance(state, dict)
        assert (state["num-other-sentinels"], state["num-slaves"], state["quorum"]) == (2, 1, 2), state


async def _write_through(sentinel_set: SentinelSet, fault: str, writers: int = 4) -> tuple[float, list[str], int, int]:
    """Counts with a registered script from `writers` tasks while `fault`
    ("kill" = kill -9 of the primary, "failover" = SENTINEL FAILOVER of a
    live one) happens; the same client throughout. Returns the seconds from
    the fault to the first write acknowledged by the new primary, the errors
    callers saw, the last count acknowledged before the fault, and the count
    the new primary went on from."""
    client = redis_client(sentinel_set.settings())
    script = client.register_script(_COUNT)
    key = f"failover:{uuid.uuid4().hex}"
    old = sentinel_set.primary()
    acknowledged: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            try:
                value = await script(keys=[key])
            except RedisError as error:
                errors.append(repr(error))
                continue
            acknowledged.append((time.monotonic(), int(value)))

    tasks = [asyncio.create_task(write()) for _ in range(writers)]
    try:
        await eventually_async(lambda: len(acknowledged) >= 500, 30, message="no writes before the fault")
        # The new primary has never seen the script: after the failover it
        # answers NOSCRIPT, and redis-py's Script loads it again.
        new = next(name for name in sentinel_set.ports if name != old)
        assert sentinel_set.server(new).script_exists(script.sha) == [False]
        if fault == "kill":
            # In a thread, so the loop meanwhile takes in the replies the
            # primary sent before it died: writes acknowledged after the
            # kill returned are the new primary's.
            assert await asyncio.to_thread(sentinel_set.stack.kill, old)
        else:
            assert sentinel_set.server(new).info("replication")["master_link_status"] == "up"
            sentinel_set.sentinel(sentinel_set.sentinels[0]).sentinel_failover(SERVICE)
        faulted_at = time.monotonic()
        before = max(value for at, value in acknowledged if at <= faulted_at)
        # A planned failover is asynchronous: writes go on to the old
        # primary until the sentinels switch to the new one.
        await eventually_async(lambda: sentinel_set.primary() == new, 60, interval=0.05, message="no new primary")
        switched_at = time.monotonic()
        await eventually_async(
            lambda: sum(1 for at, _ in acknowledged if at > switched_at) >= 200,
            60,
            message=lambda: f"writes did not resume after the {fault}; errors: {errors[-3:]}",
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        assert sentinel_set.primary() == new
        # The ledger's path: EVALSHA through the implicit pipeline, on a
        # primary that had not the script either.
        pipelined = await AutoPipeline(client).run_script(client.register_script(_COUNT), [f"{key}:p"], [])
        assert int(pipelined) == 1
    finally:
        await client.aclose()
    after = [value for at, value in acknowledged if at > faulted_at]
    first_after = min(at for at, _ in acknowledged if at > faulted_at)
    return first_after - faulted_at, errors, before, min(after) - 1


def test_a_client_follows_a_kill_9_of_the_primary_without_being_recreated(sentinel_set: SentinelSet) -> None:
    recovered, errors, before, resumed_from = asyncio.run(_write_through(sentinel_set, "kill"))
    print(
        f"\nkill -9 of the primary: first write on the new primary after {recovered:.2f} s;"
        f" callers saw {len(errors)} errors; {max(0, before - resumed_from)} acknowledged writes lost"
        f" (last acknowledged {before}, the new primary went on from {resumed_from})"
    )
    # Calls in flight waited for the promotion (the client's retries span
    # it) rather than failing.
    assert errors == []
    assert sentinel_set.primary() == "redis-b"


def test_writes_ride_out_the_demotion_of_a_live_primary(sentinel_set: SentinelSet) -> None:
    """SENTINEL FAILOVER demotes a primary that stays up: connections to it
    are dropped or answered READONLY, and the client must ask the sentinels
    again rather than fail or keep writing to a replica."""
    recovered, errors, before, resumed_from = asyncio.run(_write_through(sentinel_set, "failover"))
    print(f"\nSENTINEL FAILOVER: first write on the new primary after {recovered:.2f} s; {len(errors)} errors")
    assert errors == []
    # A planned failover waits for the replica to catch up: nothing is lost.
    assert resumed_from == before
    eventually(lambda: sentinel_set.is_replica_of("redis-a", "redis-b"), 30, message="redis-a was not demoted")


def test_sentinels_that_require_the_password_are_asked_with_it(protected_set: SentinelSet) -> None:
    """PETITIONS_REDIS_SENTINEL_AUTH (what the Kubernetes config sets): the
    client logs in to the sentinels with the Redis password and follows a
    kill -9 of the primary, which the sentinels, logged in to each other,
    vote on."""
    recovered, errors, _, _ = asyncio.run(_write_through(protected_set, "kill"))
    print(f"\nkill -9 of a password-protected primary: first write on the new primary after {recovered:.2f} s")
    assert errors == []
    assert protected_set.primary() == "redis-b"


def test_sentinels_that_require_the_password_refuse_a_client_without_it(
    protected_set: SentinelSet, system: SystemClient
) -> None:
    """Without PETITIONS_REDIS_SENTINEL_AUTH the sentinels answer NOAUTH: a
    service stops at start, saying which setting to set (redis-py alone
    says "No master found"), and nothing is written. With a wrong password,
    it says that instead."""

    async def start(settings: CommonSettings) -> None:
        async with redis_connection(settings) as client:
            await client.set("never", "written")

    with pytest.raises(RedisLoginRefused) as refused:
        asyncio.run(start(protected_set.settings(sentinel_auth=False)))
    message = str(refused.value)
    print(f"\nwithout sentinel auth: {message}")
    assert f"sentinel 127.0.0.1:{protected_set.sentinels[0]} refused the login" in message
    assert "PETITIONS_REDIS_SENTINEL_AUTH=true" in message

    wrong = protected_set.settings().model_copy(update={"redis_url": "redis://:not-the-password@127.0.0.1:1/0"})
    with pytest.raises(RedisLoginRefused, match="refused the password of PETITIONS_REDIS_URL") as refused:
        asyncio.run(start(wrong))
    assert "not-the-password" not in str(refused.value)
    # Without sentinels, the server itself.
    primary = protected_set.ports["redis-a"]
    direct = CommonSettings(redis_url=f"redis://:not-the-password@127.0.0.1:{primary}/0")
    with pytest.raises(RedisLoginRefused, match=f"Redis at 127.0.0.1:{primary} refused the login"):
        asyncio.run(start(direct))
    assert protected_set.server("redis-a").exists("never") == 0

    # A service process: the reason on stderr, not a traceback.
    login = f"redis://:{protected_set.password}@127.0.0.1:1/0"
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_REDIS_SENTINELS": json.dumps(protected_set.sentinel_addresses),
        "PETITIONS_REDIS_SENTINEL_SERVICE": SERVICE,
        "PETITIONS_REDIS_URL": login,
        "PETITIONS_GRPC_ADDRESS": "127.0.0.1:0",
        "PETITIONS_METRICS_PORT": "0",
    }
    result = run_module("services.signing", env, timeout=180)
    assert result.returncode != 0, result.stdout
    assert "PETITIONS_REDIS_SENTINEL_AUTH=true" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert str(protected_set.password) not in result.stderr + result.stdout


def _sign_once(
    stub: signing_pb2_grpc.SigningStub, request: signing_pb2.SignRequest
) -> signing_pb2.SignResponse | grpc.StatusCode:
    try:
        receipt: signing_pb2.SignResponse = stub.Sign(request, timeout=30)
    except grpc.RpcError as error:
        return error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    return receipt


@dataclass(frozen=True)
class Snapshot:
    """What the primary held just before it was killed, and when."""

    ledger: dict[bytes, bytes]
    buckets: dict[bytes, float]
    at: float


def _ledger(server: redis.Redis, petition_id: str) -> dict[bytes, bytes]:
    keys = list(server.scan_iter(match=f"signed:{petition_id}:*", count=1000))
    values = server.mget(keys) if keys else []
    return {k: v for k, v in zip(keys, values, strict=True) if isinstance(v, bytes)}


def _buckets(server: redis.Redis) -> dict[bytes, float]:
    """Each rate-limit bucket's last update (its `at`, Redis time)."""
    found: dict[bytes, float] = {}
    for key in server.scan_iter(match="ratelimit:*", count=1000):
        at = server.hget(key, "at")
        if at is not None:
            found[key] = float(at)
    return found


def test_signing_through_a_kill_9_of_the_primary(
    sentinel_set: SentinelSet, system: SystemClient, tmp_path: Path
) -> None:
    """A signing process on the sentinel set signs distinct persons (each
    retrying UNAVAILABLE with its idempotency key) while the primary dies.
    What the failover cost the ledger and the rate limits is measured; a
    person whose receipt was lost signs again, is ACCEPTED again (the ledger
    forgot), and the tally still counts each person once."""
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_REDIS_SENTINELS": json.dumps(sentinel_set.sentinel_addresses),
        "PETITIONS_REDIS_SENTINEL_SERVICE": SERVICE,
        "PETITIONS_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    address = f"127.0.0.1:{free_port()}"
    signing = start_service(
        "signing-sentinel",
        "services.signing",
        [],
        env,
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        tmp_path,
    )
    petition = system.create_petition("Signed while Redis fails over")
    people = 240
    credentials = [system.credential(f"rs-{uuid.uuid4().hex[:8]}").token for _ in range(people)]
    old = sentinel_set.primary()
    # Per person: (when the answered call began, when it was answered, the answer).
    receipts: dict[int, list[tuple[float, float, signing_pb2.SignResponse]]] = {}
    refused: list[float] = []
    snapshots: list[Snapshot] = []
    promoted: list[Snapshot] = []
    lock = threading.Lock()

    def watch_promotion() -> None:
        """What the new primary holds as soon as the sentinels name it
        (before the rate-limit buckets would expire by themselves)."""

        def new_primary() -> str | None:
            name = sentinel_set.primary()
            return name if name != old else None

        name = eventually(new_primary, 60, interval=0.05, message="the sentinels promoted no replica")
        server = sentinel_set.server(name)
        promoted.append(Snapshot(_ledger(server, petition.id), _buckets(server), time.monotonic()))

    try:
        wait_serving(signing, address)
        with grpc.insecure_channel(address) as channel:
            stub = signing_pb2_grpc.SigningStub(channel)

            def sign(person: int) -> None:
                request = signing_pb2.SignRequest(
                    credential=credentials[person], petition_id=petition.id, idempotency_key=uuid.uuid4().hex
                )
                deadline = time.monotonic() + 90
                while True:
                    began = time.monotonic()
                    receipt = _sign_once(stub, request)
                    if isinstance(receipt, signing_pb2.SignResponse):
                        break
                    assert receipt == grpc.StatusCode.UNAVAILABLE, f"person {person}: {receipt}"
                    assert time.monotonic() < deadline, f"person {person} still refused"
                    with lock:
                        refused.append(time.monotonic())
                    time.sleep(0.2)  # the client's pause before it retries with the same key
                with lock:
                    receipts.setdefault(person, []).append((began, time.monotonic(), receipt))
                    if len(receipts) == people // 3 and not snapshots:
                        # What the primary holds, then at once the kill.
                        server = sentinel_set.server(old)
                        ledger, buckets = _ledger(server, petition.id), _buckets(server)
                        assert sentinel_set.stack.kill(old)
                        snapshots.append(Snapshot(ledger, buckets, time.monotonic()))
                        watcher.start()

            watcher = threading.Thread(target=watch_promotion)
            with ThreadPoolExecutor(max_workers=12) as pool:
                list(pool.map(sign, range(people)))
            assert snapshots, "the primary was never killed"
            watcher.join(60)
            snapshot, first_seen = snapshots[0], promoted[0]
            new = sentinel_set.primary()
            assert new != old

            # What the new primary lost of what the old one held at the kill.
            server = sentinel_set.server(new)
            after = _ledger(server, petition.id)
            lost_entries = sorted(set(snapshot.ledger) - set(first_seen.ledger))
            lost_buckets = [
                k for k, at in snapshot.buckets.items() if k not in first_seen.buckets or first_seen.buckets[k] < at
            ]
            # Receipts the clients held before the kill whose ledger entry is gone.
            held = {r.signature_id for answers in receipts.values() for _, at, r in answers if at <= snapshot.at}
            in_ledger = {value.split(b"|")[1].decode() for value in after.values()}
            lost_receipts = held - in_ledger
            # The first ACCEPTED of a call made after the kill.
            first_again = min(at for answers in receipts.values() for began, at, _ in answers if began > snapshot.at)
            refused_meanwhile = sum(1 for at in refused if at > snapshot.at)

            # People whose receipt the failover lost, and (asynchronous
            # replication loses little on one host, often nothing) a few
            # whose receipts are deleted as a failover would lose them.
            lost_people = [
                p for p, answers in receipts.items() if any(r.signature_id in lost_receipts for _, _, r in answers)
            ]
            forgotten = [p for p in receipts if p not in lost_people][: max(0, 5 - len(lost_people))]
            for person in forgotten:
                signature_id = receipts[person][-1][2].signature_id
                server.delete(*[k for k, v in after.items() if v.split(b"|")[1].decode() == signature_id])
            # They sign again: ACCEPTED anew (the ledger forgot them), and the
            # tally still counts each person once.
            resigned = [
                stub.Sign(
                    signing_pb2.SignRequest(
                        credential=credentials[p], petition_id=petition.id, idempotency_key=uuid.uuid4().hex
                    ),
                    timeout=30,
                )
                for p in lost_people + forgotten
            ]
            # One whose receipt survived is ALREADY_SIGNED.
            survivor = next(p for p in receipts if p not in lost_people + forgotten)
            again = stub.Sign(
                signing_pb2.SignRequest(
                    credential=credentials[survivor], petition_id=petition.id, idempotency_key=uuid.uuid4().hex
                ),
                timeout=30,
            )
    finally:
        signing.stop()

    print(
        f"\nkill -9 of the Redis primary under signing load ({people} persons, 12 clients):"
        f" first ACCEPTED {first_again - snapshot.at:.2f} s after the kill (sentinels named the new primary"
        f" after {first_seen.at - snapshot.at:.2f} s); {refused_meanwhile} calls refused"
        f" UNAVAILABLE meanwhile; ledger entries lost {len(lost_entries)} of {len(snapshot.ledger)};"
        f" acknowledged receipts lost from the ledger {len(lost_receipts)} of {len(held)};"
        f" rate-limit buckets rolled back or lost {len(lost_buckets)} of {len(snapshot.buckets)}"
    )
    assert len(receipts) == people, "every person got an answer"
    # Calls in flight waited for the promotion instead of failing.
    assert refused_meanwhile == 0
    assert [r.outcome for r in resigned] == [signing_pb2.SignResponse.OUTCOME_ACCEPTED] * len(resigned)
    assert again.outcome == signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED
    tally = system.settled_tally(petition.id)
    assert tally.total == people, f"the tally counts {tally.total} for {people} persons"
    assert dict(tally.by_territory) == {"75": people}
