"""The live counter over Server-Sent Events: the tally at once, then each
change; a crowd of browsers on one petition served by one WatchTally per
gateway process, each browser seeing a new signature within two seconds."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.gateway_http import assert_error
from tests.harness import free_port, gateway_env, start_service, wait_ready
from tests.system import SystemClient
from tests.waiting import eventually_async

pytestmark = pytest.mark.stack

CROWD = 2000
# Opening connections at once beyond this only fills the listen backlog.
CONNECTING_AT_ONCE = 200
MAX_DELAY_SECONDS = 2.0


@dataclass(frozen=True)
class Event:
    name: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """Parses an event stream (the fields this API uses: event, data)."""
    name, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield Event(name, "\n".join(data))
            name, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


async def tally_reaching(stream: AsyncIterator[Event], total: int) -> dict[str, Any]:
    async for event in stream:
        if event.name == "tally" and int(event.json()["total"]) >= total:
            tally: dict[str, Any] = event.json()
            return tally
    raise AssertionError("the stream ended")


def _live_url(system: SystemClient, petition_id: str) -> str:
    return f"{system.namespace.gateway_url}/api/v1/petitions/{petition_id}/tally/live"


async def _sign_one(system: SystemClient, petition_id: str, territory: str = "75") -> None:
    credential = await asyncio.to_thread(system.credential, f"live-{uuid.uuid4().hex[:8]}", "FR", territory)
    await asyncio.to_thread(system.sign, credential.token, petition_id)


async def _metric(system: SystemClient, service: str, sample: str) -> float:
    return await asyncio.to_thread(system.metric_value, service, sample)


async def _until_metric(system: SystemClient, service: str, sample: str, value: float, seconds: float = 10.0) -> None:
    seen: float | None = None

    async def reached() -> bool:
        nonlocal seen
        seen = await _metric(system, service, sample)
        return seen == value

    await eventually_async(reached, seconds, message=lambda: f"{sample} is {seen}, expected {value}")


async def test_a_browser_sees_the_tally_at_once_then_each_change(system: SystemClient) -> None:
    petition = await asyncio.to_thread(system.create_petition, "Live")
    feeds_before = await _metric(system, "gateway", "petitions_gateway_live_feeds")
    async with aiohttp.ClientSession() as http, http.get(_live_url(system, petition.id)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache, no-transform"
        stream = events(response)
        first = await asyncio.wait_for(anext(stream), 10)
        assert (first.name, first.json()["petition_id"], first.json()["total"]) == ("tally", petition.id, "0")
        await _until_metric(system, "gateway", "petitions_gateway_live_feeds", feeds_before + 1)
        await _sign_one(system, petition.id, "2A")
        update = await asyncio.wait_for(tally_reaching(stream, 1), 20)
        assert update["by_territory"] == {"2A": "1"}
    # The last browser gone, the gateway lets go of its WatchTally.
    await _until_metric(system, "gateway", "petitions_gateway_live_feeds", feeds_before)


@pytest.mark.parametrize(
    ("petition_id", "status", "reason"),
    [("never-created-x", 404, "PETITION_NOT_FOUND"), ("Not_An_Id", 400, "INVALID_FIELD")],
)
async def test_watching_what_is_not_a_petition_is_an_error_before_any_stream(
    system: SystemClient, petition_id: str, status: int, reason: str
) -> None:
    async with aiohttp.ClientSession() as http, http.get(_live_url(system, petition_id)) as response:
        assert response.content_type == "application/json"
        assert_error(response.status, await response.json(), status, reason)


@dataclass
class Watcher:
    """One browser of the crowd: when it connected, when it saw the signature."""

    connected: asyncio.Event
    seen_at: float | None = None


async def _watch(http: aiohttp.ClientSession, url: str, gate: asyncio.Semaphore, watcher: Watcher) -> None:
    async with gate:
        response = await http.get(url)
    async with response:
        assert response.status == 200, await response.text()
        stream = events(response)
        await tally_reaching(stream, 0)
        watcher.connected.set()
        await tally_reaching(stream, 1)
        watcher.seen_at = time.monotonic()


@pytest.mark.timeout(180)
async def test_two_thousand_browsers_see_a_signature_within_two_seconds_over_one_watch(system: SystemClient) -> None:
    petition = await asyncio.to_thread(system.create_petition, "Watched by a crowd of browsers")
    watchers_before = await _metric(system, "tally", "petitions_tally_watchers")
    feeds_before = await _metric(system, "gateway", "petitions_gateway_live_feeds")
    url = _live_url(system, petition.id)
    crowd = [Watcher(asyncio.Event()) for _ in range(CROWD)]
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        began = time.monotonic()
        tasks = [asyncio.create_task(_watch(http, url, gate, watcher)) for watcher in crowd]
        try:
            # Until every browser has its first tally, or one of them failed.
            connecting: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*(watcher.connected.wait() for watcher in crowd))
            )
            await asyncio.wait([connecting, *tasks], timeout=90, return_when=asyncio.FIRST_COMPLETED)
            connecting.cancel()
            failed = [task for task in tasks if task.done() and task.exception() is not None]
            assert not failed, f"a browser failed: {failed[0].exception()!r}"
            assert all(watcher.connected.is_set() for watcher in crowd), "not every browser connected in 90 s"
            connected_in = time.monotonic() - began

            # One WatchTally for the whole crowd, seen from both sides.
            assert await _metric(system, "gateway", "petitions_gateway_live_feeds") == feeds_before + 1
            assert await _metric(system, "gateway", "petitions_gateway_live_clients") >= CROWD
            assert await _metric(system, "tally", "petitions_tally_watchers") == watchers_before + 1

            await _sign_one(system, petition.id)
            acknowledged = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    delays = sorted(watcher.seen_at - acknowledged for watcher in crowd if watcher.seen_at is not None)
    arrivals = [watcher.seen_at for watcher in crowd if watcher.seen_at is not None]
    print(
        f"\n{CROWD} SSE browsers connected in {connected_in:.1f} s; after Sign was acknowledged, the update "
        f"reached them in p50 {statistics.median(delays):.3f} s, p99 {delays[int(len(delays) * 0.99)]:.3f} s, "
        f"max {delays[-1]:.3f} s; first to last browser: {max(arrivals) - min(arrivals):.3f} s"
    )
    assert len(delays) == CROWD
    assert delays[-1] <= MAX_DELAY_SECONDS, f"the slowest browser saw the signature after {delays[-1]:.2f} s"
    await _until_metric(system, "tally", "petitions_tally_watchers", watchers_before, seconds=15)


async def test_a_stopping_gateway_ends_its_streams_and_exits(system: SystemClient) -> None:
    """On SIGTERM the gateway ends every live stream with a last `paused`
    event (the browsers' EventSource reconnects, to another gateway), then
    drains and exits cleanly."""
    petition = await asyncio.to_thread(system.create_petition, "Live while the gateway stops")
    namespace = system.namespace
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = {
        **gateway_env(namespace),
        "PETITIONS_HTTP_PORT": str(port),
        "PETITIONS_METRICS_PORT": "0",
        "PETITIONS_PUBLIC_URL": url,
    }
    gateway = start_service(
        "gateway-stopping", "services.gateway", [], namespace.env(system.stack), extra, namespace.work_dir / "logs"
    )
    try:
        await asyncio.to_thread(wait_ready, gateway, f"{url}/readyz")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/api/v1/petitions/{petition.id}/tally/live") as response,
        ):
            stream = events(response)
            assert (await asyncio.wait_for(anext(stream), 10)).name == "tally"
            gateway.process.terminate()
            rest = await asyncio.wait_for(_all(stream), 10)
        assert [event.name for event in rest] == ["paused"]
        assert rest[0].json()["error"]["reason"] == "GATEWAY_STOPPING"
        assert await asyncio.to_thread(gateway.process.wait, 15) == 0
    finally:
        gateway.stop()


async def _all(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]
