"""Every petition's latest state, folded from the compacted petition-state
topic into a local view that signing and tally read without any I/O.

The petitions service is the only writer of petitions. After every change it
publishes the whole `petitions.v1.Petition` on `{prefix}petition-state`, keyed
by the petition id; the topic is compacted, so it always holds at least the
latest state of every petition, and a tombstone (null value) removes one.
Each signing and tally process reads every partition of that topic from the
beginning (no consumer group: every process needs every petition), folds it
into a dict, and keeps following it.

Why a compacted topic rather than GetPetition behind a cache: signing must
keep signing while the petitions service is down, and a state change (opened,
closed, classed) must reach every signing process within a second, without a
read on the Sign path. A cache would either call the petitions service on a
miss (and fail with it) or serve stale states for its whole lifetime; a
cache invalidated by events needs the events and a read after each. The log
is already the durable bus every process reads: folding it gives each process
the whole catalogue in memory, a change within one fetch wait
(`fetch_max_wait_ms`, 100 ms) of its publication, and nothing to ask anybody
when a petition is read. While Kafka is unreachable the view keeps what it
has (signing goes on); `petitions_petition_view_age_seconds` says how old
that is.

`PetitionView.open(settings)` returns the view only once it has read the
whole topic up to the end offsets seen when it started, so a process that
serves with it never answers "no such petition" for one created before it
started.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from google.protobuf.message import DecodeError

from petitions.v1 import identity_pb2, petition_pb2
from servicekit.errors import DomainError, ErrorKind
from servicekit.metric_defs import (
    PETITION_VIEW_AGE,
    PETITION_VIEW_CAUGHT_UP,
    PETITION_VIEW_PETITIONS,
    PETITION_VIEW_RECORDS,
)
from servicekit.petition_ids import PETITION_ID
from servicekit.settings import CommonSettings
from servicekit.stores import kafka_options, start_kafka_client

T = TypeVar("T")
log = structlog.get_logger()

# How long a fetch waits at the broker for new records before answering
# empty; a new record is answered at once, so this bounds the delay of a
# change only when the fetch was sent just before it. 100 ms keeps a close
# well inside the 1 s every signing process must see it in.
FETCH_MAX_WAIT_MS = 100
# How long one getmany waits for records; the loop comes back this often to
# refresh the view's age while nothing changes.
POLL_TIMEOUT_MS = 500
# The longest a read of a petition the view does not hold waits for the view
# to read what the topic holds (then the answer is "no such petition").
SYNC_TIMEOUT_SECONDS = 1.0
# Waits between attempts while Kafka (or the topic) is not there at start.
_FIRST_RETRY_SECONDS = 0.2
_MAX_RETRY_SECONDS = 5.0

_PROTO_STATE_PREFIX = "PETITION_STATE_"


class PetitionState(enum.Enum):
    """petitions.v1.PetitionState, named as the proto names it (lower case,
    without its prefix); UNSPECIFIED also stands for a value this process
    does not know yet (a newer writer), which accepts no signatures."""

    UNSPECIFIED = "unspecified"
    DRAFT = "draft"
    GATHERING_SPONSORS = "gathering_sponsors"
    SUBMITTED = "submitted"
    OPEN = "open"
    REJECTED = "rejected"
    CLOSED = "closed"
    CLASSED = "classed"
    RESPONDED = "responded"
    DEBATED = "debated"
    ARCHIVED = "archived"


# The verification methods as signer credentials name them (claim `mth`).
METHOD_NAMES: Mapping[int, str] = {
    identity_pb2.VERIFICATION_METHOD_OIDC: "oidc",
    identity_pb2.VERIFICATION_METHOD_EMAIL: "email",
}


@dataclass(frozen=True)
class ViewThreshold:
    id: str
    label: str
    signatures: int
    min_territories: int = 0


@dataclass(frozen=True)
class ViewEligibility:
    # ISO 3166-1 alpha-2 countries; empty = anyone.
    countries: frozenset[str] = frozenset()
    adults_only: bool = False
    # "oidc", "email"; empty = any method.
    methods: frozenset[str] = frozenset()
    accept_declared_adults: bool = False


@dataclass(frozen=True)
class ViewPetition:
    """What signing and tally need of a petition, in plain types."""

    id: str
    state: PetitionState
    # Seconds since the epoch; None means no bound.
    opens_at: float | None
    closes_at: float | None
    thresholds: tuple[ViewThreshold, ...] = ()
    eligibility: ViewEligibility = ViewEligibility()
    type: str = ""
    version: int = 0

    def accepts_signatures_at(self, now: float) -> bool:
        """Open, and inside its opening window."""
        if self.state is not PetitionState.OPEN:
            return False
        if self.opens_at is not None and now < self.opens_at:
            return False
        return self.closes_at is None or now < self.closes_at


class UnusableRecord(ValueError):
    """A petition-state record the view cannot apply."""


def petition_not_found(petition_id: str) -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, "PETITION_NOT_FOUND", f"petition {petition_id!r} does not exist")


def view_petition(message: petition_pb2.Petition) -> ViewPetition:
    """The plain view of a Petition message."""
    name = petition_pb2.PetitionState.Name(message.state) if message.state in _KNOWN_STATES else ""
    state = PetitionState.__members__.get(name.removeprefix(_PROTO_STATE_PREFIX), PetitionState.UNSPECIFIED)
    rules = message.eligibility
    return ViewPetition(
        id=message.id,
        state=state,
        opens_at=message.opens_at.ToNanoseconds() / 1e9 if message.HasField("opens_at") else None,
        closes_at=message.closes_at.ToNanoseconds() / 1e9 if message.HasField("closes_at") else None,
        thresholds=tuple(
            ViewThreshold(t.id, t.label, t.signatures, t.min_territories)
            for t in sorted(message.thresholds, key=lambda t: t.signatures)
        ),
        eligibility=ViewEligibility(
            countries=frozenset(rules.countries),
            adults_only=rules.adults_only,
            methods=frozenset(METHOD_NAMES[m] for m in rules.methods if m in METHOD_NAMES),
            accept_declared_adults=rules.accept_declared_adults,
        ),
        type=message.type,
        version=message.version,
    )


_KNOWN_STATES = frozenset(petition_pb2.PetitionState.values())


def decode_record(key: bytes | None, value: bytes | None) -> tuple[str, ViewPetition | None]:
    """The petition id a record is about and its new state (None for a
    tombstone); raises UnusableRecord for anything else."""
    try:
        petition_id = (key or b"").decode()
    except UnicodeDecodeError:
        raise UnusableRecord("the key is not UTF-8") from None
    if not PETITION_ID.fullmatch(petition_id):
        raise UnusableRecord(f"the key {petition_id[:80]!r} is not a petition id")
    if value is None:
        return petition_id, None
    try:
        message = petition_pb2.Petition.FromString(value)
    except DecodeError as error:
        raise UnusableRecord(f"the value is not a Petition message: {error}") from None
    if message.id != petition_id:
        raise UnusableRecord(f"the value is petition {message.id[:80]!r}, not {petition_id!r}")
    return petition_id, view_petition(message)


class PetitionView:
    """The fold of the petition-state topic. Use `PetitionView.open`."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._petitions: dict[str, ViewPetition] = {}
        self._clock = clock
        self._caught_up = False
        # When every partition was last known read up to its end.
        self._fresh_at = 0.0
        self._follower: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        # The next offset to read, per partition, and an event set (and
        # replaced) whenever the follower has moved them on.
        self._positions: dict[TopicPartition, int] = {}
        self._moved = asyncio.Event()
        # The end-offset probe of `sync`, shared by the callers it can serve.
        self._probe: asyncio.Future[dict[TopicPartition, int]] | None = None
        self._probe_started = 0.0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: CommonSettings, *, topic: str = "") -> AsyncIterator[PetitionView]:
        """A view that has read the whole topic (settings.petition_state_topic
        unless `topic` names another) up to its end offsets at start, and
        keeps following it until the block ends. Waits for Kafka and for the
        topic when they are not there yet."""
        topic = topic or settings.petition_state_topic
        view = cls()
        partitions = await _partitions_of(settings, topic)
        consumer = AIOKafkaConsumer(
            **kafka_options(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await start_kafka_client(consumer, settings, "consumer")
        view._consumer, view._partitions = consumer, partitions
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            await view._catch_up(consumer, partitions)
            view._follower = asyncio.create_task(view._follow(consumer, partitions), name="petition-view")
            try:
                yield view
            finally:
                view._follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view._follower
        finally:
            await consumer.stop()

    # Reads: get() is synchronous and never does I/O; get_current() does
    # only for a petition the view does not hold.

    def get(self, petition_id: str) -> ViewPetition | None:
        return self._petitions.get(petition_id)

    def ids(self) -> list[str]:
        return sorted(self._petitions)

    def __len__(self) -> int:
        return len(self._petitions)

    async def get_current(self, petition_id: str) -> ViewPetition | None:
        """get(), but for a petition the view does not hold, only after the
        view has read what the topic held when this call began (waiting at
        most SYNC_TIMEOUT_SECONDS): a petition whose creation Kafka had
        acknowledged before a Sign arrived is found, even a millisecond
        later. A petition held costs no I/O; a miss costs one end-offset
        request, shared by the concurrent misses."""
        held = self._petitions.get(petition_id)
        if held is None and await self.sync():
            held = self._petitions.get(petition_id)
        return held

    async def sync(self) -> bool:
        """Waits until the view has read everything the topic held when this
        call began; False when that took longer than SYNC_TIMEOUT_SECONDS (or
        Kafka could not be asked), and the view is as it is."""
        asked = time.monotonic()
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
                ends = await self._end_offsets_since(asked)
                while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
                    await self._moved.wait()
        except (TimeoutError, KafkaError) as error:
            log.warning("petition view could not catch up with the topic", error=repr(error))
            return False
        return True

    async def _end_offsets_since(self, asked: float) -> dict[TopicPartition, int]:
        """The topic's end offsets, from a request sent after `asked`. One
        request at a time: callers that arrive while one is in flight share
        the next, so a flood of unknown ids costs one request per round trip."""
        if self._consumer is None:
            raise RuntimeError("the view is not open")
        while True:
            probe = self._probe
            if probe is not None and self._probe_started >= asked:
                return await asyncio.shield(probe)
            if probe is not None and not probe.done():
                await asyncio.wait([probe])
                continue
            self._probe_started = time.monotonic()
            self._probe = asyncio.ensure_future(self._consumer.end_offsets(self._partitions))

    @property
    def caught_up(self) -> bool:
        """True once the view has read everything the topic held when it
        opened (always, for a view `open` returned)."""
        return self._caught_up

    def age_seconds(self) -> float:
        """Seconds since every partition was last known read to its end."""
        return max(0.0, self._clock() - self._fresh_at)

    async def followed(self) -> None:
        """Returns (or raises) only if following the topic stopped for
        another reason than the view being closed: a service runs it as a
        background task, so a dead view ends the process."""
        if self._follower is None:
            raise RuntimeError("the view is not open")
        await asyncio.shield(self._follower)
        raise RuntimeError("the petition view stopped following its topic")

    # The fold.

    def apply(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            self.apply_one(record.key, record.value, where=f"{record.partition}:{record.offset}")
        PETITION_VIEW_PETITIONS.set(len(self._petitions))

    def apply_one(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        try:
            petition_id, petition = decode_record(key, value)
        except UnusableRecord as error:
            # One bad record must not stop every later petition change.
            PETITION_VIEW_RECORDS.labels("skipped").inc()
            log.error("petition-state record skipped", record=where, error=str(error))
            return
        if petition is None:
            self._petitions.pop(petition_id, None)
            PETITION_VIEW_RECORDS.labels("removed").inc()
            return
        held = self._petitions.get(petition_id)
        if held is not None and petition.version < held.version:
            # An older state published again (a retried publication) after
            # a newer one: the newer one stands.
            PETITION_VIEW_RECORDS.labels("stale").inc()
            return
        self._petitions[petition_id] = petition
        PETITION_VIEW_RECORDS.labels("applied").inc()

    async def _catch_up(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        ends = await _retrying("end offsets of the petition-state topic", lambda: consumer.end_offsets(partitions))
        started = time.monotonic()
        behind = set(partitions)
        while True:
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
            if not behind:
                break
            self.apply(_flatten(await consumer.getmany(*behind, timeout_ms=POLL_TIMEOUT_MS)))
        await self._note_positions(consumer, partitions)
        self._caught_up = True
        self._fresh_at = self._clock()
        PETITION_VIEW_CAUGHT_UP.set(1)
        PETITION_VIEW_AGE.set(0)
        PETITION_VIEW_PETITIONS.set(len(self._petitions))
        log.info(
            "petition view caught up",
            petitions=len(self._petitions),
            seconds=round(time.monotonic() - started, 3),
        )

    async def _follow(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            except KafkaError as error:
                # The view keeps what it has; aiokafka reconnects by itself.
                log.warning("petition-state topic not readable; the view keeps its petitions", error=repr(error))
                await asyncio.sleep(_MAX_RETRY_SECONDS)
                continue
            self.apply(_flatten(batches))
            await self._note_positions(consumer, partitions)
            self._note_freshness(consumer, partitions)

    async def _note_positions(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions[tp] = await consumer.position(tp)
        # Wakes every sync() waiting for the view to move.
        self._moved.set()
        self._moved = asyncio.Event()

    def _note_freshness(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        polled = []
        for tp in partitions:
            highwater = consumer.highwater(tp)
            at = consumer.last_poll_timestamp(tp)
            if highwater is None or at is None or self._positions.get(tp, 0) < highwater:
                break
            polled.append(at / 1000)
        else:
            # Every partition's last fetch answered with nothing after what
            # the view holds: the view was current as of the oldest of them.
            self._fresh_at = max(self._fresh_at, min(polled, default=self._clock()))
        PETITION_VIEW_AGE.set(self.age_seconds())


def _flatten(
    batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
) -> list[ConsumerRecord[bytes, bytes]]:
    # Records of one petition share a partition, so their order is kept.
    return [record for records in batches.values() for record in records]


async def _partitions_of(settings: CommonSettings, topic: str) -> list[TopicPartition]:
    """The topic's partitions, waiting for Kafka and for the topic (which
    `petitions migrate` creates) as long as it takes."""

    async def describe() -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(**kafka_options(settings))
        await start_kafka_client(admin, settings, "admin client")
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"]) for d in described for p in d["partitions"]]
        if not partitions:
            raise _TopicMissing(f"topic {topic!r} does not exist (yet): run `petitions migrate`")
        return sorted(partitions, key=lambda tp: tp.partition)

    return await _retrying(f"partitions of {topic}", describe)


class _TopicMissing(Exception):
    pass


async def _retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    delay = _FIRST_RETRY_SECONDS
    while True:
        try:
            return await attempt()
        except (KafkaError, OSError, _TopicMissing) as error:
            log.warning("petition view waiting for Kafka", step=what, error=str(error) or repr(error))
        # A retry pause while Kafka is away, not a wait for a condition.
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_RETRY_SECONDS)
