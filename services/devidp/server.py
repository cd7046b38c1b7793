"""The dev provider's HTTP endpoints: discovery, JWKS, and a token endpoint
that mints an ID token for a named persona without any login page."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

from servicekit.lifecycle import wait_for_termination_signal
from services.devidp.personas import KEY_FILE, DevTokenMinter, Persona

MINTER_KEY = web.AppKey("minter", DevTokenMinter)


async def discovery(request: web.Request) -> web.Response:
    minter = request.app[MINTER_KEY]
    return web.json_response(
        {
            "issuer": minter.issuer,
            "jwks_uri": f"{minter.issuer}/jwks",
            "token_endpoint": f"{minter.issuer}/dev/id-token",
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
        }
    )


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[MINTER_KEY].jwks())


async def id_token(request: web.Request) -> web.Response:
    """POST {"persona": "alice", "audience": "...", "country": "FR",
    "territory": "75", "identified": false, "nonce": ""} → {"id_token": "..."}"""
    try:
        body = await request.json()
        persona = Persona(
            name=str(body["persona"]),
            country=str(body.get("country", "FR")),
            territory=str(body.get("territory", "75")),
            identified=bool(body.get("identified", False)),
            birthdate=str(body.get("birthdate", "1990-01-01")),
        )
        audience = str(body["audience"])
    except (ValueError, KeyError, TypeError) as error:
        raise web.HTTPBadRequest(text=f"expected JSON with persona and audience: {error!r}") from None
    token = request.app[MINTER_KEY].mint(persona, audience, nonce=str(body.get("nonce", "")))
    return web.json_response({"id_token": token})


def create_app(minter: DevTokenMinter) -> web.Application:
    app = web.Application()
    app[MINTER_KEY] = minter
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
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
