"""The web page, the OpenAPI document, and the probes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from services.gateway.backends import Backends

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
OPENAPI_FILE = HERE / "openapi.json"
# Revalidated on every load (a 304 when unchanged), so a deploy is seen at once.
REVALIDATE = {"Cache-Control": "no-cache"}


class Pages:
    def __init__(self, backends: Backends, stopping: Callable[[], bool]):
        self._backends = backends
        self._stopping = stopping

    async def page(self, request: web.Request) -> web.FileResponse:
        """One page for the list and for each petition; the script reads the path."""
        return web.FileResponse(STATIC_DIR / "index.html", headers={**REVALIDATE, "Content-Type": "text/html"})

    async def openapi(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(OPENAPI_FILE, headers={**REVALIDATE, "Content-Type": "application/json"})

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive: the process answers. Never depends on a backend, so a
        backend outage does not get every gateway restarted."""
        return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready for traffic: every backend signing needs has a serving
        connection and the gateway is not stopping. The petitions service is
        reported but not required: with it down, petition reads and changes
        answer 503 while signing and counting go on, and a gateway taken out
        of the load balancer would stop them too."""
        backends = self._backends.serving()
        needed = [backend.serving for backend in self._backends.needed_to_sign()]
        ready = all(needed) and not self._stopping()
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "backends": backends},
            status=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )
