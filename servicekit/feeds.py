"""One upstream feed per key in a process, fanned out to many readers.

A live counter is read once per petition however many people watch it: the
first reader opens the petition's feed, a task follows the upstream and
publishes each value to every reader's one-slot mailbox, and the last reader
to leave (or the feed's own end) cancels the task and drops the feed. The
tally's WatchTally and the gateway's SSE live counter are both this, with
their own upstream and their own rules for errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import Gauge

from servicekit.mailbox import LatestOnly

T = TypeVar("T")


@dataclass(eq=False, kw_only=True)
class Feed(Generic[T]):
    """One key's upstream: its readers' mailboxes, and the task following it."""

    key: str
    mailboxes: set[LatestOnly[T]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def join(self) -> LatestOnly[T]:
        mailbox: LatestOnly[T] = LatestOnly()
        self.mailboxes.add(mailbox)
        return mailbox

    def publish(self, item: T) -> None:
        for mailbox in self.mailboxes:
            mailbox.put(item)


F = TypeVar("F", bound=Feed[Any])


class Feeds(Generic[F]):
    """The open feeds by key, their number kept in a gauge."""

    def __init__(self, gauge: Gauge):
        self._open: dict[str, F] = {}
        self._gauge = gauge

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: str) -> F | None:
        return self._open.get(key)

    def all(self) -> list[F]:
        return list(self._open.values())

    def open(self, feed: F, follow: Callable[[F], Coroutine[Any, Any, None]], task_name: str) -> F:
        feed.task = asyncio.create_task(follow(feed), name=task_name)
        self._open[feed.key] = feed
        self._gauge.set(len(self._open))
        return feed

    def leave(self, feed: F, mailbox: LatestOnly[Any]) -> None:
        """A reader is gone; the feed goes with its last reader."""
        feed.mailboxes.discard(mailbox)
        if not feed.mailboxes:
            self.retire(feed)

    def retire(self, feed: F) -> None:
        """Stops following the upstream (unless called from the feed's own
        task, which is ending anyway) and drops the feed; a later reader
        opens a new one."""
        if feed.task is not None and feed.task is not asyncio.current_task():
            feed.task.cancel()
        if self._open.get(feed.key) is feed:
            del self._open[feed.key]
        self._gauge.set(len(self._open))
