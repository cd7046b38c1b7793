"""Process lifecycle: start a service, run it until SIGTERM (or until a
background part of it dies), then stop it gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from servicekit.grpc_server import ServiceServer
from servicekit.logs import configure_logging
from servicekit.metrics_http import serve_metrics

# The exit status of a service whose background work died: the supervisor
# (Kubernetes, or `make up` on a laptop) sees a crash and restarts it.
EXIT_BACKGROUND_FAILURE = 70


class ProcessSettings(Protocol):
    """What run_service reads: every service's settings have these, whether
    it serves gRPC or HTTP."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> str: ...

    @property
    def metrics_port(self) -> int: ...

    @property
    def metrics_host(self) -> str: ...

    @property
    def listen_address(self) -> str: ...


class ServiceApp(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def port(self) -> int: ...

    async def until_failed(self) -> BaseException | None:
        """Returns when background work (a consume loop) has died."""
        ...


async def wait_for_termination_signal() -> None:
    """Returns when the process receives SIGTERM or SIGINT, so the caller can
    drain in-flight work before exiting."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_service(name: str, settings: ProcessSettings, build: Callable[[], ServiceApp]) -> None:
    """Builds the app inside the running event loop (grpc.aio and the
    clients bind to the loop they are created on), serves it, stops it."""
    log = configure_logging(name, settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    app = build()
    await app.start()
    log.info(f"{name} serving", address=settings.listen_address, port=app.port)
    signalled = asyncio.create_task(wait_for_termination_signal())
    failed = asyncio.create_task(app.until_failed())
    await asyncio.wait([signalled, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        # A process whose background work died must not look healthy while
        # doing nothing: exit, and let the supervisor restart it.
        log.critical(f"{name} background work died", error=repr(failed.result()))
        await app.stop()
        raise SystemExit(EXIT_BACKGROUND_FAILURE)
    log.info(f"{name} stopping")
    failed.cancel()
    await app.stop()


class BackgroundTasks:
    """Background loops of a service built by a factory: started with
    start(), cancelled and awaited when the factory's exit stack unwinds;
    until_failed returns when one of them ends."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def until_failed(self) -> BaseException | None:
        if not self._tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        if task.cancelled():
            return None
        return task.exception() or RuntimeError(f"{task.get_name()} ended")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def background_tasks() -> AsyncIterator[BackgroundTasks]:
    """A factory's background loops, cancelled and awaited when the block
    ends: entered after the stores the loops use, so they stop before those
    close."""
    tasks = BackgroundTasks()
    try:
        yield tasks
    finally:
        await tasks.stop()


@contextlib.asynccontextmanager
async def serving(server: ServiceServer, grace_seconds: float) -> AsyncIterator[ServiceServer]:
    """A started gRPC server, stopped (NOT_SERVING, then in-flight RPCs
    drained within grace_seconds) when the block ends. A factory enters it
    last on its exit stack, so the server drains first, while every store an
    RPC in flight still needs is open."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_seconds)


@dataclass(frozen=True)
class RunningServer:
    """What a service factory yields: a server that is already serving."""

    port: int
    background: BackgroundTasks

    async def until_failed(self) -> BaseException | None:
        return await self.background.until_failed()


class FactoryApp:
    """Adapts a factory (an async context manager yielding a RunningServer)
    to run_service: start enters it, stop leaves it, so shutdown runs the
    factory's exit stack in reverse order of construction."""

    def __init__(self, factory: Callable[[], contextlib.AbstractAsyncContextManager[RunningServer]]):
        self._factory = factory
        self._context: contextlib.AbstractAsyncContextManager[RunningServer] | None = None
        self._running: RunningServer | None = None

    async def start(self) -> None:
        self._context = self._factory()
        self._running = await self._context.__aenter__()

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)

    @property
    def port(self) -> int:
        assert self._running is not None, "not started"
        return self._running.port

    async def until_failed(self) -> BaseException | None:
        assert self._running is not None, "not started"
        return await self._running.until_failed()
