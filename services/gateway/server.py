"""The gateway's wiring: HTTP server, backends, live feeds, sign-in."""

from __future__ import annotations

import asyncio
import resource

import aiohttp
from aiohttp import web

from servicekit.lifecycle import run_service
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


class GatewayApp:
    """Everything the gateway runs, with one start/stop pair."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.backends = Backends(settings)
        self.live = LiveTallies(watch_with(self.backends.tally), settings.max_live_clients)
        self._cookie_key = settings.read_secret(COOKIE_SECRET_FILE)
        self._client_secret = (
            settings.read_secret(settings.oidc_client_secret_file).decode() if settings.oidc_client_secret_file else ""
        )
        self._author_client_secret = (
            settings.read_secret(settings.author_oidc_client_secret_file).decode()
            if settings.author_oidc_client_secret_file
            else ""
        )
        self._stopping = False
        self._port = 0
        self._http: aiohttp.ClientSession | None = None
        self._runner: GatewayRunner | None = None

    def create_app(self, http: aiohttp.ClientSession) -> web.Application:
        settings = self.settings
        flow = OidcCodeFlow(
            provider_url=settings.oidc_provider_url,
            client_id=settings.oidc_client_id,
            client_secret=self._client_secret,
            redirect_uri=settings.redirect_uri,
            scopes=settings.oidc_scopes,
            state_seconds=settings.oidc_state_seconds,
            cookie=SealedCookie(self._cookie_key, "oidc-sign-in"),
            http=http,
            timeout_seconds=settings.oidc_timeout_seconds,
        )
        # The author's sign-in: the identified provider, its own client and
        # callback, and its own cookie key, so a signer's sign-in state can
        # never complete an author's sign-in.
        author_flow = OidcCodeFlow(
            provider_url=settings.author_oidc_provider_url,
            client_id=settings.author_oidc_client_id,
            client_secret=self._author_client_secret,
            redirect_uri=settings.author_redirect_uri,
            scopes=settings.author_oidc_scopes,
            state_seconds=settings.oidc_state_seconds,
            cookie=SealedCookie(self._cookie_key, "oidc-author-sign-in"),
            http=http,
            timeout_seconds=settings.oidc_timeout_seconds,
        )
        app = web.Application(
            client_max_size=settings.max_body_bytes,
            middlewares=[*middlewares(settings), same_origin_guard(settings)],
        )
        app.on_response_prepare.append(response_headers(settings))
        keys = identity_keys(self.backends.identity, settings.request_timeout_seconds)
        # One route table for the router and the OpenAPI document (routes.py).
        app.add_routes(
            route_defs(
                PublicApi(settings, self.backends, self.live),
                SignIn(settings, self.backends.identity, flow, keys, author_flow),
                PetitionLife(settings, self.backends),
                Pages(self.backends, lambda: self._stopping),
            )
        )
        return app

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        try:
            await self._start(self._http)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, http: aiohttp.ClientSession) -> None:
        app = self.create_app(http)
        await self.backends.start()
        # The gateway's runner: what aiohttp's parser refuses gets the
        # documented error body too (protocol.py).
        self._runner = GatewayRunner(
            app,
            self.settings,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.settings.grace_seconds,
            # A browser that leaves ends its handler (and its live stream) at
            # once; work that must finish anyway is shielded where it runs.
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port, backlog=LISTEN_BACKLOG)
        await site.start()
        address = self._runner.addresses[0]
        self._port = int(address[1])

    async def stop(self) -> None:
        # Not ready first, so the load balancer stops sending; then end the
        # live streams (their browsers reconnect elsewhere), then drain.
        self._stopping = True
        self.live.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        await self.backends.stop()

    async def until_failed(self) -> BaseException | None:
        """The gateway has no background work whose death should end it:
        health watches and live feeds recover by themselves."""
        await asyncio.Event().wait()
        return None


def _allow_many_connections() -> None:
    """Every live counter holds a socket: raise the soft limit on open files
    to the hard one the supervisor allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    _allow_many_connections()
    settings = GatewaySettings()
    asyncio.run(run_service("gateway", settings, lambda: GatewayApp(settings)))
