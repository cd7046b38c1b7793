"""WatchTally's fan-out: one feed per watched petition per process.

A feed reads the petition's tally once per interval (through the reader's
coalescing cache, so GetTally and watchers share reads) and pushes it to
every watcher when the counts changed. However many people watch a counter,
Redis sees one read of that petition per interval per process.

Each watcher holds a one-slot mailbox that keeps only the newest tally: a
slow watcher skips intermediate values instead of queueing them, so memory
stays bounded by the number of watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from servicekit.errors import DomainError, ErrorKind
from servicekit.mailbox import LatestOnly
from services.tally.metric_defs import WATCHED_PETITIONS, WATCHERS
from services.tally.reader import TallySnapshot

log = structlog.get_logger()

ReadTally = Callable[[str], Awaitable[TallySnapshot]]
Mailbox = LatestOnly[TallySnapshot | DomainError]

RETRY_AFTER_SECONDS = 1.0


def tally_unavailable(why: str) -> DomainError:
    return DomainError(
        ErrorKind.UNAVAILABLE, "TALLY_UNAVAILABLE", f"{why}; watch again", retry_after_seconds=RETRY_AFTER_SECONDS
    )


def too_many_watchers(limit: int) -> DomainError:
    return DomainError(
        ErrorKind.RESOURCE_EXHAUSTED,
        "TOO_MANY_WATCHERS",
        f"this tally process serves at most {limit} watchers; retry, or poll GetTally",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


@dataclass(eq=False)
class _Feed:
    petition_id: str
    latest: TallySnapshot
    mailboxes: set[Mailbox] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def publish(self, item: TallySnapshot | DomainError) -> None:
        for mailbox in self.mailboxes:
            mailbox.put(item)


class TallyFeeds:
    """Every petition's feed in this process, and the bound on watchers."""

    def __init__(self, read: ReadTally, interval_seconds: float, max_watchers: int):
        self._read = read
        self._interval = interval_seconds
        self._max_watchers = max_watchers
        self._feeds: dict[str, _Feed] = {}
        self._watchers = 0
        self._closed = False

    async def watch(self, petition_id: str) -> AsyncIterator[TallySnapshot]:
        """The petition's tally now, then each change, at most once per
        interval. Raises the reader's errors (bad id, unknown petition) before
        the first value, and UNAVAILABLE when the tally cannot be read or the
        process is stopping."""
        if self._closed:
            raise tally_unavailable("the tally process is stopping")
        if self._watchers >= self._max_watchers:
            raise too_many_watchers(self._max_watchers)
        first = await self._read(petition_id)
        feed = self._feeds.get(petition_id) or self._open(first)
        mailbox: Mailbox = LatestOnly()
        feed.mailboxes.add(mailbox)
        self._watchers += 1
        WATCHERS.inc()
        try:
            yield first
            while True:
                item = await mailbox.get()
                if isinstance(item, DomainError):
                    raise item
                yield item
        finally:
            self._watchers -= 1
            WATCHERS.dec()
            feed.mailboxes.discard(mailbox)
            if not feed.mailboxes:
                self._retire(feed)

    def _open(self, first: TallySnapshot) -> _Feed:
        feed = _Feed(first.petition_id, first)
        feed.task = asyncio.create_task(self._follow(feed), name=f"watch-{first.petition_id}")
        self._feeds[feed.petition_id] = feed
        WATCHED_PETITIONS.set(len(self._feeds))
        return feed

    def _retire(self, feed: _Feed) -> None:
        if feed.task is not None and feed.task is not asyncio.current_task():
            feed.task.cancel()
        if self._feeds.get(feed.petition_id) is feed:
            del self._feeds[feed.petition_id]
        WATCHED_PETITIONS.set(len(self._feeds))

    async def _follow(self, feed: _Feed) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                snapshot = await self._read(feed.petition_id)
            except DomainError as error:
                feed.publish(error)
                self._retire(feed)
                return
            except Exception as error:
                # A store is down: tell the watchers now, rather than leave
                # them looking at a counter that silently stopped moving.
                log.warning("watch feed cannot read the tally", petition_id=feed.petition_id, error=repr(error))
                feed.publish(tally_unavailable("the tally cannot be read right now"))
                self._retire(feed)
                return
            if not snapshot.same_counts(feed.latest):
                feed.latest = snapshot
                feed.publish(snapshot)

    def close(self) -> None:
        """Ends every watch with UNAVAILABLE (clients reconnect to another
        process) and refuses new ones; called before the server drains."""
        self._closed = True
        for feed in list(self._feeds.values()):
            feed.publish(tally_unavailable("the tally process is stopping"))
            self._retire(feed)
