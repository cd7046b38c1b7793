"""The author's side of the gateway, for tests: a gateway of the test's own
whose author sign-in goes to the session's identified dev provider, and the
author code flow done over HTTP as a browser follows it."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import aiohttp

from tests.harness import free_port, gateway_env, start_service, wait_ready
from tests.system import SystemClient


@contextmanager
def author_gateway(system: SystemClient, name: str, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A gateway like the session's, but with the author sign-in at the
    identified dev provider (and extra_env); yields its base URL once it is
    ready. (The session's gateway gets no author provider from
    tests/harness.py gateway_env.)"""
    namespace = system.namespace
    port = free_port()
    env = {
        **gateway_env(namespace),
        "PETITIONS_HTTP_PORT": str(port),
        "PETITIONS_METRICS_PORT": "0",
        "PETITIONS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PETITIONS_AUTHOR_OIDC_PROVIDER_URL": namespace.identified_devidp_url,
        "PETITIONS_AUTHOR_OIDC_CLIENT_ID": "petitions-test",
        **(extra_env or {}),
    }
    process = start_service(name, "services.gateway", [], namespace.env(system.stack), env, namespace.work_dir / "logs")
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


async def author_sign_in(
    http: aiohttp.ClientSession,
    base: str,
    system: SystemClient,
    persona: str,
    *,
    display_name: str = "initial",
    given_name: str = "Marie",
    family_name: str = "Dupont",
    birthdate: str = "1990-01-01",
    return_to: str = "/",
) -> str:
    """The author code flow as a browser follows it, filling in the
    identified dev provider's form; returns where the gateway sent the
    browser at the end (return_to, or it with ?signin_error=REASON)."""
    # The subject is private; the name is not counted as a raw identity, as
    # the author consents to publish it (in whole or as an initial) with the
    # petition. So give a name that does not contain the persona.
    system.raw_identities.update({f"dev-persona:{persona}", persona})
    async with http.get(
        f"{base}/auth/author/start",
        params={"return_to": return_to, "display_name": display_name},
        allow_redirects=False,
    ) as response:
        assert response.status in (302, 303), await response.text()
        location = response.headers["Location"]
        if response.status == 303:
            return location
    async with http.get(location) as response:
        form = await response.text()
        assert response.status == 200, form
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    fields = {name: html.unescape(value) for name, value in hidden.items()}
    fields.update(
        persona=persona,
        country="FR",
        territory="75",
        given_name=given_name,
        family_name=family_name,
        birthdate=birthdate,
    )
    target = urlsplit(location)
    async with http.post(
        f"{target.scheme}://{target.netloc}/authorize", data=fields, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        callback = response.headers["Location"]
    async with http.get(callback, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]
