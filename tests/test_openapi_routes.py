"""The OpenAPI document and the router agree: every operation of the
document is served by the gateway's app, built as the server builds it,
at that path and method, and every route the app serves is an operation
of the document, but for the web page and the document itself. Needs no
stack: the app is only built and its router asked, never started."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.gateway import openapi
from services.gateway.backends import Backends
from services.gateway.live import LiveTallies, watch_with
from services.gateway.server import web_application
from services.gateway.settings import COOKIE_SECRET_FILE, GatewaySettings

# Served for browsers, not operations of the API.
PAGES = (("GET", "/"), ("GET", "/petitions/demo"), ("GET", "/openapi.json"))
Served = tuple[str, str]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    (tmp_path / COOKIE_SECRET_FILE).write_bytes(b"k" * 32)
    settings = GatewaySettings(secrets_dir=tmp_path)
    backends = Backends(settings)
    live = LiveTallies(watch_with(backends.tally), settings.max_live_clients)
    async with aiohttp.ClientSession() as http:
        yield web_application(settings, http, backends, live, lambda: False)


def _served(route: web.AbstractRoute) -> Served:
    """A route as the router matches it: its method and its path, with
    each placeholder's pattern (open-data.{format:json} is not .csv)."""
    info = route.resource.get_info() if route.resource is not None else {}
    pattern = info["pattern"].pattern if "pattern" in info else str(info.get("path", info.get("prefix")))
    return route.method, pattern


async def _route_for(app: web.Application, method: str, path: str) -> Served:
    concrete = re.sub(r"\{[^}]+\}", "demo", path)
    match = await app.router.resolve(make_mocked_request(method, concrete, app=app))
    assert match.http_exception is None, f"{method} {path} is documented but not served: {match.http_exception!r}"
    assert match.route.method == method
    return _served(match.route)


async def test_every_documented_operation_is_served_and_every_served_route_documented(
    app: web.Application,
) -> None:
    documented = [
        (method.upper(), path) for path, operations in openapi.document()["paths"].items() for method in operations
    ]
    assert documented, "the document has no operation"
    reached = {await _route_for(app, method, path) for method, path in documented}
    pages = {await _route_for(app, method, path) for method, path in PAGES}
    served = {
        _served(route)
        for route in app.router.routes()
        # HEAD comes with each GET; /static/ is the page's files.
        if route.method != "HEAD" and not isinstance(route.resource, web.StaticResource)
    }
    assert served - pages == reached, (
        f"served, not documented: {sorted(served - pages - reached)}; documented twice or a page: "
        f"{sorted(reached - (served - pages))}"
    )
    # One operation per route: two documented paths never lead to one route.
    assert len(reached) == len(documented)
