"""Waiting for a state instead of sleeping for a time.

`eventually` polls a condition until it is truthy and returns that value; on
timeout it raises AssertionError with the message and the last value seen, so
a failure says what the test waited for and what it saw instead. The async
twin polls from a coroutine without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

Message = str | Callable[[], str]


def _text(message: Message) -> str:
    return message() if callable(message) else message


def eventually(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.1,
    message: Message = "condition never held",
) -> T:
    """condition()'s first truthy value within timeout seconds.

    The condition is always tried once more at the deadline, so a slow last
    poll still counts; exceptions from it propagate (a condition that may fail
    transiently catches them itself and returns a falsy value).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{_text(message)} (after {timeout:g} s; last seen: {value!r})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@overload
async def eventually_async(
    condition: Callable[[], Awaitable[T | None]],
    timeout: float,  # noqa: ASYNC109
    *,
    interval: float = ...,
    message: Message = ...,
) -> T: ...


@overload
async def eventually_async(
    condition: Callable[[], T | None],
    timeout: float,  # noqa: ASYNC109
    *,
    interval: float = ...,
    message: Message = ...,
) -> T: ...


async def eventually_async(
    condition: Callable[[], Any],
    # A deadline of its own rather than asyncio.timeout: on expiry the failure
    # names what was awaited and the last value seen, not a bare cancellation.
    timeout: float,  # noqa: ASYNC109
    *,
    interval: float = 0.1,
    message: Message = "condition never held",
) -> Any:
    """The async twin of eventually: condition is a coroutine function or a
    plain one (a check of state the event loop's other tasks change)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{_text(message)} (after {timeout:g} s; last seen: {value!r})")
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
