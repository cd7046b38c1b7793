"""The gateway's wiring (HTTP server, backends, live feeds, sign-in), and its
one factory, `create_app(settings)`: the HTTP session, the backends and the
HTTP server entered on one AsyncExitStack, so shutdown unwinds them in
reverse order by construction."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from aiohttp import web

from servicekit.lifecycle import BackgroundTasks, FactoryApp, RunningServer, run_service
from services.gateway.api import PublicApi
from services.gateway.auth import SignIn
from services.gateway.backends import Backends
from services.gateway.credential_keys import identity_keys
from services.gateway.live import LiveTallies, watch_with
from services.gateway.oidc_flow import OidcCodeFlow, SealedCookie
from services.gateway.pages import Pages
from services.gateway.petition_life import PetitionLife
from services.gateway.protocol import GatewayRunner
from services.gateway.request_context import middlewares, response_headers
from services.gateway.routes import route_defs
from services.gateway.same_origin import same_origin_guard
from services.gateway.settings import COOKIE_SECRET_FILE, GatewaySettings

# Pending connections the kernel may hold while the loop accepts: a crowd
# opening live counters at once must not be refused.
LISTEN_BACKLOG = 4096


def web_application(
    settings: GatewaySettings,
    http: aiohttp.ClientSession,
    backends: Backends,
    live: LiveTallies,
    stopping: Callable[[], bool],
) -> web.Application:
    """The gateway's aiohttp app over backends and an HTTP session that are
    already open (built, not started: the OpenAPI test asks its router)."""
    cookie_key = settings.read_secret(COOKIE_SECRET_FILE)
    client_secret = (
        settings.read_secret(settings.oidc_client_secret_file).decode() if settings.oidc_client_secret_file else ""
    )
    author_client_secret = (
        settings.read_secret(settings.author_oidc_client_secret_file).decode()
        if settings.author_oidc_client_secret_file
        else ""
    )
    flow = OidcCodeFlow(
        provider_url=settings.oidc_provider_url,
        client_id=settings.oidc_client_id,
        client_secret=client_secret,
        redirect_uri=settings.redirect_uri,
        scopes=settings.oidc_scopes,
        state_seconds=settings.oidc_state_seconds,
        cookie=SealedCookie(cookie_key, "oidc-sign-in"),
        http=http,
        timeout_seconds=settings.oidc_timeout_seconds,
    )
    # The author's sign-in: the identified provider, its own client and
    # callback, and its own cookie key, so a signer's sign-in state can
    # never complete an author's sign-in.
    author_flow = OidcCodeFlow(
        provider_url=settings.author_oidc_provider_url,
        client_id=settings.author_oidc_client_id,
        client_secret=author_client_secret,
        redirect_uri=settings.author_redirect_uri,
        scopes=settings.author_oidc_scopes,
        state_seconds=settings.oidc_state_seconds,
        cookie=SealedCookie(cookie_key, "oidc-author-sign-in"),
        http=http,
        timeout_seconds=settings.oidc_timeout_seconds,
    )
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[*middlewares(settings), same_origin_guard(settings)],
    )
    app.on_response_prepare.append(response_headers(settings))
    keys = identity_keys(backends.identity, settings.request_timeout_seconds)
    # One route table for the router and the OpenAPI document (routes.py).
    app.add_routes(
        route_defs(
            PublicApi(settings, backends, live),
            SignIn(settings, backends.identity, flow, keys, author_flow),
            PetitionLife(settings, backends),
            Pages(backends, stopping),
        )
    )
    return app


@asynccontextmanager
async def open_backends(settings: GatewaySettings) -> AsyncIterator[Backends]:
    """The backends' channels, each having heard from its backend once (or
    waited backend_start_wait_seconds), closed when the block ends."""
    backends = Backends(settings)
    try:
        await backends.start()
        yield backends
    finally:
        await backends.stop()


@asynccontextmanager
async def http_site(runner: GatewayRunner, settings: GatewaySettings) -> AsyncIterator[int]:
    """The runner set up and listening; yields the port. On exit it drains:
    open requests get up to grace_seconds to finish."""
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=LISTEN_BACKLOG)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def create_app(settings: GatewaySettings) -> AsyncIterator[RunningServer]:
    """The gateway, serving HTTP on settings.http_port (0 in tests: the
    yielded port says which). Shutdown unwinds the stack: not ready first,
    so the load balancer stops sending; then the live streams end (their
    browsers reconnect elsewhere); then the HTTP server drains; then the
    backends' channels and the HTTP session close."""
    stopping = False
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        backends = await stack.enter_async_context(open_backends(settings))
        live = LiveTallies(watch_with(backends.tally), settings.max_live_clients)
        app = web_application(settings, http, backends, live, lambda: stopping)
        # The gateway's runner: what aiohttp's parser refuses gets the
        # documented error body too (protocol.py).
        runner = GatewayRunner(
            app,
            settings,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=settings.grace_seconds,
            # A browser that leaves ends its handler (and its live stream) at
            # once; work that must finish anyway is shielded where it runs.
            handler_cancellation=True,
        )
        port = await stack.enter_async_context(http_site(runner, settings))
        stack.callback(live.close)

        def not_ready() -> None:
            nonlocal stopping
            stopping = True

        # Pushed last, so it runs first.
        stack.callback(not_ready)
        # No background work whose death should end the gateway: health
        # watches and live feeds recover by themselves.
        yield RunningServer(port, BackgroundTasks())


def _allow_many_connections() -> None:
    """Every live counter holds a socket: raise the soft limit on open files
    to the hard one the supervisor allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    _allow_many_connections()
    settings = GatewaySettings()
    asyncio.run(run_service("gateway", settings, lambda: FactoryApp(lambda: create_app(settings))))
