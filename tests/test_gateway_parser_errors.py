"""Requests aiohttp's parser refuses before any handler runs (control
characters in a header, a negative Content-Length, an over-long line, TLS on
the plain port, a broken chunk): each still gets the documented JSON error
body and the security headers, over HTTP/1.1, and never an echo of what was
sent. Sent as raw bytes over a socket: an HTTP client would refuse to send
most of them."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from tests.gateway_http import assert_error
from tests.system import SystemClient

pytestmark = pytest.mark.stack

# Would be a credential or a cookie in real life: never to be seen again in
# an answer.
MARKER = b"echo-marker-7f3a"
READ_SECONDS = 10


@dataclass(frozen=True)
class RawAnswer:
    status_line: str
    headers: dict[str, str]
    body: bytes


async def _send_raw(port: int, request: bytes) -> RawAnswer:
    """Sends bytes as they are and reads the answer until the gateway closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(READ_SECONDS):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status_line, headers, body)


def _case(name: str, request: bytes, reason: str) -> Any:
    return pytest.param(request, reason, id=name)


GET = b"GET /api/v1/petitions HTTP/1.1\r\nHost: gateway\r\n"
CASES = [
    _case("control-char-in-header", GET + b"X-Probe: " + MARKER + b"\x01x\r\n\r\n", "MALFORMED_REQUEST"),
    _case("bare-cr-in-header", GET + b"X-Probe: " + MARKER + b"\rx\r\n\r\n", "MALFORMED_REQUEST"),
    _case("nul-in-header", GET + b"X-Probe: " + MARKER + b"\x00x\r\n\r\n", "MALFORMED_REQUEST"),
    _case(
        "negative-content-length",
        b"POST /api/v1/petitions/demo/signatures HTTP/1.1\r\nHost: gateway\r\nX-Probe: "
        + MARKER
        + b"\r\nContent-Length: -1\r\n\r\n",
        "MALFORMED_REQUEST",
    ),
    _case(
        "bad-chunk-size",
        b"POST /api/v1/petitions/demo/signatures HTTP/1.1\r\nHost: gateway\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + MARKER + b"\r\n",
        "MALFORMED_REQUEST",
    ),
    _case("header-line-over-8-kib", GET + b"X-Probe: " + MARKER * 600 + b"\r\n\r\n", "LINE_TOO_LONG"),
    _case("request-line-over-8-kib", b"GET /" + MARKER * 600 + b" HTTP/1.1\r\nHost: gateway\r\n\r\n", "LINE_TOO_LONG"),
    _case("tls-on-the-plain-port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARKER, "MALFORMED_REQUEST"),
]


@pytest.mark.parametrize(("request_bytes", "reason"), CASES)
async def test_a_request_the_parser_refuses_gets_the_documented_error(
    system: SystemClient, request_bytes: bytes, reason: str
) -> None:
    answer = await _send_raw(system.namespace.ports["gateway"], request_bytes)
    assert answer.status_line == "HTTP/1.1 400 Bad Request", answer
    assert answer.headers["content-type"] == "application/json; charset=utf-8", answer
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    # The request could not be read: the connection cannot carry another.
    assert answer.headers["connection"] == "close"
    error = assert_error(400, json.loads(answer.body), 400, reason)
    assert MARKER.decode() not in error["message"]
    assert MARKER not in answer.body, answer.body


def _parser_refusals(metrics: str) -> float:
    pattern = r'^petitions_gateway_http_requests_total\{(?=[^}]*route="unparsed")(?=[^}]*status="400")[^}]*\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, re.MULTILINE))


async def test_parser_refusals_are_counted_as_400s(system: SystemClient) -> None:
    metrics_url = f"http://127.0.0.1:{system.namespace.ports['gateway-metrics']}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            return str(response.read().decode())

    before = _parser_refusals(await asyncio.to_thread(scrape))
    answer = await _send_raw(system.namespace.ports["gateway"], GET + b"X-Probe: \x01\r\n\r\n")
    assert answer.status_line.startswith("HTTP/1.1 400"), answer
    # Counted before the answer is written: no waiting needed.
    assert _parser_refusals(await asyncio.to_thread(scrape)) == before + 1


async def test_a_body_that_cannot_be_decoded_is_a_400_not_a_bug(system: SystemClient) -> None:
    # Headers the parser accepts; the body fails only as the handler reads
    # it (not gzip at all), after routing.
    body = b"0123456789"
    answer = await _send_raw(
        system.namespace.ports["gateway"],
        b"POST /api/v1/petitions/demo/signatures HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
    )
    assert answer.status_line == "HTTP/1.1 400 Bad Request", answer
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert_error(400, json.loads(answer.body), 400, "MALFORMED_REQUEST")
