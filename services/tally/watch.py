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
from dataclasses import dataclass

import structlog

from servicekit.errors import DomainError, ErrorKind
from servicekit.feeds import Feed, Feeds
from services.tally.metric_defs import WATCHED_PETITIONS, WATCHERS
from services.tally.reader import TallySnapshot

log = structlog.get_logger()

ReadTally = Callable[[str], Awaitable[TallySnapshot]]

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


@dataclass(eq=False, kw_only=True)
class _Feed(Feed[TallySnapshot | DomainError]):
    latest: TallySnapshot


class TallyFeeds:
    """Every petition's feed in this process, and the bound on watchers."""

    def __init__(self, read: ReadTally, interval_seconds: float, max_watchers: int):
        self._read = read
        self._interval = interval_seconds
        self._max_watchers = max_watchers
        self._feeds: Feeds[_Feed] = Feeds(WATCHED_PETITIONS)
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
        feed = self._feeds.get(petition_id) or self._feeds.open(
            _Feed(key=petition_id, latest=first), self._follow, f"watch-{petition_id}"
        )
        mailbox = feed.join()
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
            self._feeds.leave(feed, mailbox)

    async def _follow(self, feed: _Feed) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                snapshot = await self._read(feed.key)
            except DomainError as error:
                feed.publish(error)
                self._feeds.retire(feed)
                return
            except Exception as error:
                # A store is down: tell the watchers now, rather than leave
                # them looking at a counter that silently stopped moving.
                log.warning("watch feed cannot read the tally", petition_id=feed.key, error=repr(error))
                feed.publish(tally_unavailable("the tally cannot be read right now"))
                self._feeds.retire(feed)
                return
            if not snapshot.same_counts(feed.latest):
                feed.latest = snapshot
                feed.publish(snapshot)

    def close(self) -> None:
        """Ends every watch with UNAVAILABLE (clients reconnect to another
        process) and refuses new ones; called before the server drains."""
        self._closed = True
        for feed in self._feeds.all():
            feed.publish(tally_unavailable("the tally process is stopping"))
            self._feeds.retire(feed)
