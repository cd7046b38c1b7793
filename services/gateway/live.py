"""Live tallies: one WatchTally per petition per gateway process, fanned out
to every browser watching it.

The first browser to watch a petition opens a *feed*: one WatchTally stream
to tally. Every update is rendered once, as a Server-Sent Events frame, and
handed to each browser's one-slot mailbox, which keeps only the newest: a
slow browser skips counts instead of queueing them, so memory stays bounded
by the number of browsers. The last browser leaving closes the stream. So
tally sees one stream per petition per gateway process, however many
people watch the counter.

A feed whose stream breaks (tally restarting) tells its browsers the counter
is paused and reconnects; a petition that does not exist ends the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from petitions.v1 import tally_pb2
from servicekit.feeds import Feed, Feeds
from servicekit.mailbox import LatestOnly
from services.gateway.backends import Backend
from services.gateway.http_errors import ApiError, error_body, from_rpc_error, internal_error
from services.gateway.inputs import to_json
from services.gateway.metric_defs import LIVE_CLIENTS, LIVE_FEEDS

if TYPE_CHECKING:
    from petitions.v1.tally_pb2_grpc import TallyAsyncStub

log = structlog.get_logger()

WatchTally = Callable[[str], AsyncIterator[tally_pb2.PetitionTally]]

# Errors after which watching again cannot help.
DEFINITIVE = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
MAX_RECONNECT_PAUSE_SECONDS = 5.0


@dataclass(frozen=True)
class LiveEvent:
    """One Server-Sent Events frame, rendered once for every browser.

    tally: the petition's counts; paused: tally cannot be reached, the
    counter will resume by itself; ended: the stream is over (final)."""

    name: str
    frame: bytes
    final: bool = False


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines, so the data is always one `data:` line.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def tally_event(tally: tally_pb2.PetitionTally) -> LiveEvent:
    return LiveEvent("tally", sse_frame("tally", to_json(tally)))


def paused_event(error: ApiError) -> LiveEvent:
    return LiveEvent("paused", sse_frame("paused", error_body(error)))


def ended_event(error: ApiError) -> LiveEvent:
    return LiveEvent("ended", sse_frame("ended", error_body(error)), final=True)


def closing_event(error: ApiError) -> LiveEvent:
    """Ends the stream as a pause: the browser's EventSource reconnects by
    itself, to another gateway behind the load balancer."""
    return LiveEvent("paused", sse_frame("paused", error_body(error)), final=True)


def stopping() -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        "GATEWAY_STOPPING",
        "this gateway is stopping; reconnect",
        retry_after_seconds=1.0,
    )


def too_many_clients(limit: int) -> ApiError:
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_LIVE_CLIENTS",
        f"this gateway serves at most {limit} live counters; retry, or poll the tally",
        retry_after_seconds=5.0,
    )


def watch_with(backend: Backend[TallyAsyncStub]) -> WatchTally:
    """Opens WatchTally streams on the tally backend's healthy channels."""

    async def watch(petition_id: str) -> AsyncIterator[tally_pb2.PetitionTally]:
        call = backend.stub().WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition_id))
        try:
            async for tally in call:
                yield tally
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, backend.name) from None
        finally:
            call.cancel()

    return watch


@dataclass(eq=False, kw_only=True)
class _Feed(Feed[LiveEvent]):
    started: asyncio.Future[None]
    latest: LiveEvent | None = None


class Subscription:
    """One browser's view of a feed: the newest event now, then each change."""

    def __init__(self, first: LiveEvent, mailbox: LatestOnly[LiveEvent]):
        self.first = first
        self._mailbox = mailbox
        self._last = first

    async def next(self) -> LiveEvent:
        while True:
            event = await self._mailbox.get()
            # The same frame object reaches the mailbox when it was published
            # while this browser was joining; it has it already.
            if event is not self._last:
                self._last = event
                return event


class LiveTallies:
    """Every petition's feed in this process, and the bound on browsers."""

    def __init__(self, watch: WatchTally, max_clients: int):
        self._watch = watch
        self._max_clients = max_clients
        self._feeds: Feeds[_Feed] = Feeds(LIVE_FEEDS)
        self._clients = 0
        self._closed = False

    @property
    def feeds(self) -> int:
        return len(self._feeds)

    @contextlib.asynccontextmanager
    async def subscribe(self, petition_id: str, first_within_seconds: float) -> AsyncIterator[Subscription]:
        """The petition's live tally. Raises the API error of the first read
        (unknown petition, tally unavailable) before anything is streamed."""
        if self._closed:
            raise stopping()
        if self._clients >= self._max_clients:
            raise too_many_clients(self._max_clients)
        feed = self._feeds.get(petition_id) or self._open(petition_id)
        mailbox = feed.join()
        self._clients += 1
        LIVE_CLIENTS.inc()
        try:
            try:
                async with asyncio.timeout(first_within_seconds):
                    await asyncio.shield(feed.started)
            except TimeoutError:
                raise ApiError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "the tally did not answer in time"
                ) from None
            assert feed.latest is not None
            yield Subscription(feed.latest, mailbox)
        finally:
            self._clients -= 1
            LIVE_CLIENTS.dec()
            self._feeds.leave(feed, mailbox)

    def _open(self, petition_id: str) -> _Feed:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Marks a failure retrieved even if every browser left before it.
        started.add_done_callback(lambda done: done.cancelled() or done.exception())
        return self._feeds.open(_Feed(key=petition_id, started=started), self._follow, f"live-{petition_id}")

    async def _follow(self, feed: _Feed) -> None:
        pause = 0.5
        while True:
            try:
                async for tally in self._watch(feed.key):
                    feed.latest = tally_event(tally)
                    if not feed.started.done():
                        feed.started.set_result(None)
                    feed.publish(feed.latest)
                    pause = 0.5
            except ApiError as error:
                if self._ended(feed, error):
                    return
            except Exception:
                log.exception("live tally feed failed", petition_id=feed.key)
                if self._ended(feed, internal_error()):
                    return
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RECONNECT_PAUSE_SECONDS)

    def _ended(self, feed: _Feed, error: ApiError) -> bool:
        """Tells the browsers what happened; True when the feed is over."""
        if not feed.started.done():
            # Nothing was streamed yet: each browser gets the error as its answer.
            feed.started.set_exception(error)
            self._feeds.retire(feed)
            return True
        if error.code in DEFINITIVE:
            feed.publish(ended_event(error))
            self._feeds.retire(feed)
            return True
        log.info("live tally paused", petition_id=feed.key, reason=error.reason)
        feed.publish(paused_event(error))
        return False

    def close(self) -> None:
        """Ends every stream (browsers reconnect, to another gateway) and
        refuses new ones; called before the server drains."""
        self._closed = True
        for feed in self._feeds.all():
            feed.publish(closing_event(stopping()))
            self._feeds.retire(feed)
