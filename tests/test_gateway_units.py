"""The gateway's pure parts, without the stack: error mapping, client
address, signed cookies, ETags, the one-slot mailbox, the dev provider's
code rules, and the documents kept in the repo (OpenAPI, translations)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from aiohttp import web

from petitions.v1 import tally_pb2
from servicekit.errors import DomainError, ErrorKind, FieldViolation
from servicekit.grpc_server import status_for
from servicekit.mailbox import LatestOnly
from services.devidp.authorization import (
    AuthorizationRefused,
    CodeStore,
    GrantRefused,
    authorization_request,
    sign_in_form,
)
from services.gateway import openapi
from services.gateway.caching import etag_matches
from services.gateway.client_ip import ClientAddress
from services.gateway.http_errors import (
    HTTP_STATUS,
    ApiError,
    backend_unavailable,
    error_body,
    error_response,
    from_http_exception,
    from_rpc_error,
)
from services.gateway.inputs import Deadline
from services.gateway.live import LiveTallies, Subscription
from services.gateway.oidc_flow import SealedCookie, safe_return_path
from services.gateway.pages import OPENAPI_FILE, STATIC_DIR
from services.gateway.settings import GatewaySettings
from tests.gateway_http import ERROR_SCHEMA
from tests.waiting import eventually_async


def _rpc_error(error: DomainError) -> grpc.aio.AioRpcError:
    """What a gateway receives when a backend raised this domain error."""
    status = status_for(error)
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details=status.details
    )


def test_a_backend_error_keeps_its_reason_violations_and_retry_advice() -> None:
    domain = DomainError(
        ErrorKind.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "too many requests for this person; retry in 3 s",
        violations=(FieldViolation("credential", "is used too often"),),
        retry_after_seconds=2.5,
    )
    error = from_rpc_error(_rpc_error(domain), "signing")
    assert (error.http_status, error.code, error.reason) == (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    body = error_body(error)
    assert ERROR_SCHEMA.is_valid(body)
    assert body["error"]["field_violations"] == [{"field": "credential", "description": "is used too often"}]
    assert body["error"]["retry_after_seconds"] == 2.5
    response = error_response(error)
    # Whole seconds, rounded up: never invite a retry before the advice.
    assert response.headers["Retry-After"] == "3"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.INVALID_ARGUMENT, 400),
        (ErrorKind.UNAUTHENTICATED, 401),
        (ErrorKind.PERMISSION_DENIED, 403),
        (ErrorKind.NOT_FOUND, 404),
        (ErrorKind.ALREADY_EXISTS, 409),
        (ErrorKind.FAILED_PRECONDITION, 400),
        (ErrorKind.RESOURCE_EXHAUSTED, 429),
        (ErrorKind.UNAVAILABLE, 503),
        (ErrorKind.UNIMPLEMENTED, 501),
    ],
)
def test_each_domain_error_kind_has_its_http_status(kind: ErrorKind, status: int) -> None:
    error = from_rpc_error(_rpc_error(DomainError(kind, "SOME_REASON", "words")), "tally")
    assert error.http_status == status
    assert error.reason == "SOME_REASON"


def test_a_transport_failure_says_which_backend_without_its_internals() -> None:
    bare = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="failed to connect to all addresses; last error: ipv4:10.1.2.3:50063: Connection refused",
    )
    body = error_body(from_rpc_error(bare, "tally"))["error"]
    assert body["reason"] == "BACKEND_UNAVAILABLE"
    assert "tally" in body["message"]
    assert "10.1.2.3" not in body["message"]
    assert body["retry_after_seconds"] == 1.0
    internal = from_rpc_error(
        grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details="trace"),
        "signing",
    )
    assert (internal.http_status, internal.reason) == (502, "BACKEND_FAILED")


def test_every_grpc_code_maps_to_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


@pytest.mark.parametrize(
    ("exception", "status", "reason"),
    [
        (web.HTTPNotFound(), 404, "ROUTE_NOT_FOUND"),
        (web.HTTPMethodNotAllowed("PUT", ["GET"]), 405, "METHOD_NOT_ALLOWED"),
        (web.HTTPRequestEntityTooLarge(16384, 20000), 413, "BODY_TOO_LARGE"),
        (web.HTTPBadRequest(), 400, "BAD_REQUEST"),
    ],
)
def test_http_layer_refusals_have_the_same_body(exception: web.HTTPException, status: int, reason: str) -> None:
    error = from_http_exception(exception)
    assert (error.http_status, error.reason) == (status, reason)
    assert ERROR_SCHEMA.is_valid(error_body(error))


PROXIES = ClientAddress("X-Forwarded-For", GatewaySettings(trusted_proxy_networks=("10.0.0.0/8",)).proxy_networks)


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # Not from a proxy: the header is the client's own words, ignored.
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),
        # From our proxy: the address it appended.
        ("10.0.0.2", ["203.0.113.9"], "203.0.113.9"),
        # A client writing its own header first: only the right-most untrusted hop counts.
        ("10.0.0.2", ["1.2.3.4, 203.0.113.9"], "203.0.113.9"),
        ("10.0.0.2", ["1.2.3.4", "203.0.113.9, 10.0.0.5"], "203.0.113.9"),
        # Every hop is ours: the farthest one.
        ("10.0.0.2", ["10.9.9.9, 10.0.0.5"], "10.9.9.9"),
        # An unreadable hop stops the trust at the last proxy.
        ("10.0.0.2", ["203.0.113.9, garbage"], "10.0.0.2"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:198.51.100.7", [], "198.51.100.7"),
        (None, [], ""),
    ],
)
def test_the_client_address_comes_from_a_trusted_proxy_only(peer: str | None, header: list[str], client: str) -> None:
    assert PROXIES.of(peer, header) == client


def test_without_a_configured_header_the_peer_is_the_client() -> None:
    assert ClientAddress("", ()).of("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


def test_a_sealed_cookie_refuses_tampering_expiry_and_another_purpose() -> None:
    sealer = SealedCookie(b"k" * 32, "oidc-sign-in")
    now = time.time()
    value = sealer.seal({"state": "s", "nonce": "n"}, now + 60)
    opened = sealer.open(value, now)
    assert opened is not None
    assert (opened["state"], opened["nonce"]) == ("s", "n")
    body, mac = value.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"state": "x", "exp": int(now) + 60}).encode()).decode().rstrip("=")
    assert sealer.open(f"{forged}.{mac}", now) is None
    assert sealer.open(f"{body}.{mac[:-2]}AA", now) is None
    assert sealer.open(value, now + 61) is None
    assert SealedCookie(b"k" * 32, "another").open(value, now) is None
    assert sealer.open("garbage", now) is None


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/petitions/demo", "/petitions/demo"),
        ("/petitions/demo?x=1", "/petitions/demo?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/a\nb", "/"),
        (None, "/"),
        ("/" + "a" * 600, "/"),
    ],
)
def test_sign_in_returns_only_to_a_path_of_this_site(asked: str | None, kept: str) -> None:
    assert safe_return_path(asked) == kept


@pytest.mark.parametrize(
    ("header", "etag", "matches"),
    [
        (None, 'W/"abc"', False),
        ('W/"abc"', 'W/"abc"', True),
        ('"abc"', 'W/"abc"', True),
        ('"x", W/"abc"', 'W/"abc"', True),
        ('"x"', 'W/"abc"', False),
        ("*", '"abc"', True),
    ],
)
def test_if_none_match_uses_the_weak_comparison(header: str | None, etag: str, matches: bool) -> None:
    assert etag_matches(header, etag) is matches


def test_a_spent_deadline_is_a_504_before_any_call() -> None:
    assert 0 < Deadline(time.monotonic() + 5).remaining() <= 5
    with pytest.raises(ApiError) as spent:
        Deadline(time.monotonic() - 0.001).remaining()
    assert (spent.value.http_status, spent.value.reason) == (504, "DEADLINE_EXCEEDED")


async def test_a_mailbox_keeps_only_the_newest_item() -> None:
    mailbox: LatestOnly[int] = LatestOnly()
    for value in range(5):
        mailbox.put(value)
    assert await mailbox.get() == 4
    waiting = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0)
    mailbox.put(7)
    assert await asyncio.wait_for(waiting, 1) == 7


def _authorization(**changes: str) -> dict[str, str]:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    parameters = {
        "response_type": "code",
        "client_id": "petitions-test",
        "redirect_uri": "http://127.0.0.1:8080/auth/oidc/callback",
        "state": "st",
        "nonce": "no",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    parameters.update(changes)
    return parameters


def test_a_dev_provider_code_is_single_use_and_bound_to_client_redirect_and_verifier() -> None:
    store = CodeStore()
    request = authorization_request(_authorization())
    redirect = request.redirect_uri
    code = store.issue(request, "alice", "FR", "75")
    pending = store.redeem(code, "petitions-test", redirect, "v" * 50)
    assert (pending.persona, pending.request.nonce) == ("alice", "no")
    with pytest.raises(GrantRefused, match="unknown, used or expired"):
        store.redeem(code, "petitions-test", redirect, "v" * 50)
    for client, uri, verifier, why in (
        ("other", redirect, "v" * 50, "another client"),
        ("petitions-test", "http://evil.example/cb", "v" * 50, "redirect_uri"),
        ("petitions-test", redirect, "w" * 50, "code_verifier"),
    ):
        code = store.issue(request, "alice", "FR", "75")
        with pytest.raises(GrantRefused, match=why):
            store.redeem(code, client, uri, verifier)


@pytest.mark.parametrize(
    "changes",
    [
        {"response_type": "token"},
        {"client_id": ""},
        {"redirect_uri": "javascript:alert(1)"},
        {"redirect_uri": "http://host/cb#fragment"},
        {"code_challenge_method": "plain"},
    ],
)
def test_the_dev_provider_refuses_malformed_authorization_requests(changes: dict[str, str]) -> None:
    with pytest.raises(AuthorizationRefused):
        authorization_request(_authorization(**changes))


def test_the_dev_provider_form_escapes_what_it_was_given() -> None:
    page = sign_in_form(_authorization(state='"><script>alert(1)</script>'))
    assert "<script>" not in page
    assert "&quot;&gt;&lt;script&gt;" in page


def test_the_openapi_document_in_the_repo_is_generated_from_the_protos() -> None:
    assert OPENAPI_FILE.read_text(encoding="utf-8") == openapi.rendered(), (
        "services/gateway/openapi.json is out of date: run python -m services.gateway.openapi"
    )


def test_both_languages_have_every_text_the_page_uses() -> None:
    french = json.loads((STATIC_DIR / "i18n" / "fr.json").read_text(encoding="utf-8"))
    english = json.loads((STATIC_DIR / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert set(french) == set(english)
    used = set(re.findall(r'data-i18n="([^"]+)"', (STATIC_DIR / "index.html").read_text(encoding="utf-8")))
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    used |= set(re.findall(r'\b(?:t|say\([^,]+,)\s*\(?"([a-z_]+)"', script))
    for key in re.findall(r'\bplural\("([a-z_]+)"', script):
        used |= {f"{key}_one", f"{key}_other"}
    assert used <= set(french), f"missing translations: {sorted(used - set(french))}"


class ScriptedWatch:
    """WatchTally as a script: each stream plays what the test puts in its
    queue (a tally, an ApiError to raise, or None to end the stream)."""

    def __init__(self) -> None:
        self.streams: list[asyncio.Queue[tally_pb2.PetitionTally | ApiError | None]] = []
        self.open = 0

    async def __call__(self, petition_id: str) -> AsyncIterator[tally_pb2.PetitionTally]:
        script: asyncio.Queue[tally_pb2.PetitionTally | ApiError | None] = asyncio.Queue()
        self.streams.append(script)
        self.open += 1
        try:
            while (item := await script.get()) is not None:
                if isinstance(item, ApiError):
                    raise item
                yield item
        finally:
            self.open -= 1


def _tally(total: int) -> tally_pb2.PetitionTally:
    return tally_pb2.PetitionTally(petition_id="p-1", total=total)


async def _until(condition: Callable[[], bool]) -> None:
    await eventually_async(condition, 2, interval=0.01, message="not within 2 s")


async def _first_browser(stack: contextlib.AsyncExitStack, live: LiveTallies, watch: ScriptedWatch) -> Subscription:
    """The first browser on p-1, once the watch it opened sent a tally."""
    joining = asyncio.ensure_future(stack.enter_async_context(live.subscribe("p-1", 2)))
    await _until(lambda: len(watch.streams) == 1)
    watch.streams[0].put_nowait(_tally(0))
    return await joining


async def test_live_browsers_share_one_watch_that_pauses_and_resumes() -> None:
    watch = ScriptedWatch()
    live = LiveTallies(watch, max_clients=10)
    async with contextlib.AsyncExitStack() as stack:
        first = await _first_browser(stack, live, watch)
        second = await stack.enter_async_context(live.subscribe("p-1", 2))
        assert (len(watch.streams), live.feeds) == (1, 1)
        assert b'"total":"0"' in first.first.frame
        assert second.first is first.first

        watch.streams[0].put_nowait(_tally(1))
        assert b'"total":"1"' in (await first.next()).frame
        assert b'"total":"1"' in (await second.next()).frame

        watch.streams[0].put_nowait(backend_unavailable("tally"))
        paused = await first.next()
        assert (paused.name, paused.final) == ("paused", False)
        await _until(lambda: len(watch.streams) == 2)
        watch.streams[1].put_nowait(_tally(2))
        assert b'"total":"2"' in (await first.next()).frame
        # The second browser was slow: it skips the pause, straight to the newest.
        assert b'"total":"2"' in (await second.next()).frame
    # The last browser gone, the stream is closed and the feed forgotten.
    await _until(lambda: watch.open == 0 and live.feeds == 0)


async def test_a_live_watch_of_what_is_not_there_fails_before_streaming() -> None:
    watch = ScriptedWatch()
    live = LiveTallies(watch, max_clients=10)
    joining = asyncio.ensure_future(live.subscribe("p-1", 2).__aenter__())
    await _until(lambda: len(watch.streams) == 1)
    watch.streams[0].put_nowait(ApiError(grpc.StatusCode.NOT_FOUND, "PETITION_NOT_FOUND", "no"))
    with pytest.raises(ApiError) as refused:
        await joining
    assert refused.value.http_status == 404
    assert live.feeds == 0


async def test_a_closing_gateway_ends_every_live_stream_and_refuses_new_ones() -> None:
    watch = ScriptedWatch()
    live = LiveTallies(watch, max_clients=1)
    async with contextlib.AsyncExitStack() as stack:
        subscription = await _first_browser(stack, live, watch)
        with pytest.raises(ApiError, match="TOO_MANY_LIVE_CLIENTS"):
            await stack.enter_async_context(live.subscribe("p-1", 2))
        live.close()
        last = await subscription.next()
        assert (last.name, last.final) == ("paused", True)
        with pytest.raises(ApiError, match="GATEWAY_STOPPING"):
            await stack.enter_async_context(live.subscribe("p-1", 2))
