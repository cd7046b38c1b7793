"""An answer the gateway cannot send (here a header aiohttp refuses to
write, found only after the handler returned) is logged as an error, counted
as a 500, and answered as a 500 with the documented body, instead of a
closed connection that the access log and the metrics call a 200.

Pure HTTP layer, no stack: a one-route app with the gateway's middlewares,
response signal and runner, over a real TCP socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.gateway.protocol import GatewayRunner
from services.gateway.request_context import middlewares, response_headers
from services.gateway.settings import GatewaySettings
from tests.gateway_http import assert_error

ROUTE = "/unsendable"


async def _unsendable(request: web.Request) -> web.Response:
    # A newline in a header value: aiohttp refuses it while writing the
    # headers, after the handler (and every middleware's own code) is done.
    return web.json_response({"ok": True}, headers={"X-Note": "first line\nsecond line"})


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    settings = GatewaySettings()
    app = web.Application(middlewares=middlewares(settings))
    app.on_response_prepare.append(response_headers(settings))
    app.router.add_get(ROUTE, _unsendable)
    runner = GatewayRunner(app, settings, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _answered(status: int) -> float:
    labels = {"route": ROUTE, "method": "GET", "status": str(status)}
    return REGISTRY.get_sample_value("petitions_gateway_http_requests_total", labels) or 0.0


async def test_an_answer_that_cannot_be_sent_is_logged_counted_and_answered_as_a_500(gateway_url: str) -> None:
    ok_before, failed_before = _answered(200), _answered(500)
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http, http.get(gateway_url + ROUTE) as response:
            body = await response.json()
            status = response.status
            headers = response.headers
    assert_error(status, body, 500, "INTERNAL_ERROR")
    assert "X-Note" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (_answered(200), _answered(500)) == (ok_before, failed_before + 1)
    failures = [entry for entry in logs if entry["event"] == "answer could not be sent"]
    assert [(entry["log_level"], entry["route"], entry["status"]) for entry in failures] == [("error", ROUTE, 200)]
    access = [entry for entry in logs if entry["event"] == "http request"]
    assert [(entry["route"], entry["status"]) for entry in access] == [(ROUTE, 500)]
