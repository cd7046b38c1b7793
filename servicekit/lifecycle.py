"""Process lifecycle: how a service learns it must stop."""

from __future__ import annotations

import asyncio
import signal


async def wait_for_termination_signal() -> None:
    """Returns when the process receives SIGTERM or SIGINT, so the caller can
    drain in-flight work before exiting."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
