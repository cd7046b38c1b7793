"""The dev provider's HTTP endpoints (DEVELOPMENT ONLY): discovery, JWKS,
the authorization code flow (a persona form, then a one-time code for an ID
token), and a shortcut that mints an ID token for a named persona without
any page, for the CLI and the tests."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path

from aiohttp import BasicAuth, web

from servicekit.lifecycle import wait_for_termination_signal
from services.devidp.authorization import (
    AuthorizationRefused,
    CodeStore,
    GrantRefused,
    IdentityClaims,
    authorization_request,
    redirect_with_code,
    sign_in_form,
)
from services.devidp.personas import KEY_FILE, DevTokenMinter, Persona

MINTER_KEY = web.AppKey("minter", DevTokenMinter)
CODES_KEY = web.AppKey("codes", CodeStore)
ID_TOKEN_SECONDS = 300


async def discovery(request: web.Request) -> web.Response:
    minter = request.app[MINTER_KEY]
    return web.json_response(
        {
            "issuer": minter.issuer,
            "jwks_uri": f"{minter.issuer}/jwks",
            "authorization_endpoint": f"{minter.issuer}/authorize",
            "token_endpoint": f"{minter.issuer}/token",
            "dev_id_token_endpoint": f"{minter.issuer}/dev/id-token",
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid"],
        }
    )


def _page(html: str, status: int = 200) -> web.Response:
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; form-action *"},
    )


async def authorize_form(request: web.Request) -> web.Response:
    """GET /authorize: the persona form, carrying the relying party's parameters."""
    parameters = dict(request.query)
    try:
        authorization_request(parameters)
    except AuthorizationRefused as refused:
        return web.Response(text=f"bad authorization request: {refused}", status=400)
    return _page(sign_in_form(parameters))


async def authorize(request: web.Request) -> web.Response:
    """POST /authorize: back to the relying party with a one-time code."""
    parameters = {name: str(value) for name, value in (await request.post()).items()}
    try:
        authorization = authorization_request(parameters)
    except AuthorizationRefused as refused:
        return web.Response(text=f"bad authorization request: {refused}", status=400)
    codes = request.app[CODES_KEY]
    persona = parameters.get("persona", "").strip()
    country = parameters.get("country", "").strip()
    territory = parameters.get("territory", "").strip()
    try:
        if authorization.identified:
            identity = IdentityClaims(
                given_name=parameters.get("given_name", "").strip(),
                family_name=parameters.get("family_name", "").strip(),
                birthdate=parameters.get("birthdate", "").strip(),
            )
            code = codes.issue_identified(authorization, persona, country, territory, identity)
        else:
            code = codes.issue(authorization, persona, country, territory)
    except AuthorizationRefused as refused:
        return _page(sign_in_form(parameters, str(refused)), status=400)
    return web.Response(status=303, headers={"Location": redirect_with_code(authorization, code)})


def _client_id(request: web.Request, form: dict[str, str]) -> str:
    """client_secret_basic or the form's client_id; any secret is accepted (dev)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            return str(BasicAuth.decode(header).login)
        except ValueError:
            return ""
    return form.get("client_id", "")


async def token(request: web.Request) -> web.Response:
    """POST /token: a code (once, within a minute) for an ID token bound to
    the nonce of its authorization request."""
    form = {name: str(value) for name, value in (await request.post()).items()}
    if form.get("grant_type") != "authorization_code":
        return _grant_error(GrantRefused("unsupported_grant_type", "only authorization_code"))
    try:
        pending = request.app[CODES_KEY].redeem(
            form.get("code", ""), _client_id(request, form), form.get("redirect_uri", ""), form.get("code_verifier", "")
        )
    except GrantRefused as refused:
        return _grant_error(refused)
    persona = Persona(name=pending.persona, country=pending.country, territory=pending.territory)
    if pending.identity is not None:
        persona = Persona(
            name=pending.persona,
            country=pending.country,
            territory=pending.territory,
            identified=True,
            birthdate=pending.identity.birthdate,
            # Left empty in the form: the persona's default name.
            given_name=pending.identity.given_name or None,
            family_name=pending.identity.family_name or None,
        )
    id_token = request.app[MINTER_KEY].mint(
        persona, pending.request.client_id, nonce=pending.request.nonce, lifetime_seconds=ID_TOKEN_SECONDS
    )
    return web.json_response(
        {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_SECONDS,
            "id_token": id_token,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _grant_error(refused: GrantRefused) -> web.Response:
    return web.json_response(
        {"error": refused.error, "error_description": refused.description},
        status=400,
        headers={"Cache-Control": "no-store"},
    )


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[MINTER_KEY].jwks())


async def id_token(request: web.Request) -> web.Response:
    """POST {"persona": "alice", "audience": "...", "country": "FR",
    "territory": "75", "identified": false, "nonce": ""} → {"id_token": "..."}.
    An identified token also takes "birthdate" (default 1990-01-01; "" for
    none), "given_name" and "family_name" (default Alice and Persona; ""
    for none)."""
    try:
        body = await request.json()
        persona = Persona(
            name=str(body["persona"]),
            country=str(body.get("country", "FR")),
            territory=str(body.get("territory", "75")),
            identified=bool(body.get("identified", False)),
            birthdate=str(body.get("birthdate", "1990-01-01")),
            given_name=_optional_text(body, "given_name"),
            family_name=_optional_text(body, "family_name"),
        )
        audience = str(body["audience"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise web.HTTPBadRequest(text=f"expected JSON with persona and audience: {error!r}") from None
    token = request.app[MINTER_KEY].mint(persona, audience, nonce=str(body.get("nonce", "")))
    return web.json_response({"id_token": token})


def _optional_text(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def create_app(minter: DevTokenMinter) -> web.Application:
    app = web.Application()
    app[MINTER_KEY] = minter
    app[CODES_KEY] = CodeStore()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/authorize", authorize_form)
    app.router.add_post("/authorize", authorize)
    app.router.add_post("/token", token)
    app.router.add_post("/dev/id-token", id_token)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="DEVELOPMENT ONLY OpenID Connect provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8461)
    parser.add_argument("--secrets-dir", type=Path, required=True)
    options = parser.parse_args()
    issuer = f"http://{options.host}:{options.port}"
    minter = DevTokenMinter.from_pem((options.secrets_dir / KEY_FILE).read_bytes(), issuer)
    asyncio.run(_serve(create_app(minter), options.host, options.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await wait_for_termination_signal()
    await runner.cleanup()
