"""The author's sign-in over HTTP (FranceConnect's identified button, here
the session's identified dev provider): the author credential lands in a
cookie of its own, HttpOnly, SameSite=Strict, scoped to /api/, never mixed
with the signer's; the session reports both; a minor is refused; the
display name form is the author's choice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.gateway_authors import author_gateway, author_sign_in
from tests.gateway_http import assert_error, browser, client_ip, oidc_sign_in, query_of
from tests.system import SystemClient

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def gateway(system: SystemClient) -> Iterator[str]:
    with author_gateway(system, "gateway-author-sign-in") as url:
        yield url


def _persona() -> str:
    return f"author-{uuid.uuid4().hex[:8]}"


async def test_an_adult_author_signs_in_with_the_display_name_of_their_choice(
    system: SystemClient, gateway: str
) -> None:
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        location = await author_sign_in(
            http, gateway, system, _persona(), display_name="full", return_to="/petitions/new"
        )
        assert location == "/petitions/new", location
        cookies = {cookie.key: cookie for cookie in http.cookie_jar}
        author = cookies["petitions_author"]
        assert (author["path"], author["samesite"], author["httponly"]) == ("/api/", "Strict", True)
        assert "pi_credential" not in cookies, "an author sign-in must not sign the browser in as a signer"
        async with http.get(f"{gateway}/api/v1/session") as response:
            session = await response.json()
            assert response.status == 200, session
        assert session["signed_in"] is False
        assert session["author"]["signed_in"] is True
        assert session["author"]["display_name"] == "Marie Dupont"

        # An author cookie does not sign petitions: the signer's is missing.
        petition = system.create_petition("Not signed by an author cookie")
        async with http.post(f"{gateway}/api/v1/petitions/{petition.id}/signatures") as response:
            assert_error(response.status, await response.json(), 401, "CREDENTIAL_MISSING")

        # Signing out forgets both.
        async with http.delete(f"{gateway}/api/v1/session") as response:
            assert await response.json() == {"signed_in": False, "author": {"signed_in": False}}
        async with http.get(f"{gateway}/api/v1/session") as response:
            assert (await response.json())["author"] == {"signed_in": False}


async def test_the_initial_is_the_default_form(system: SystemClient, gateway: str) -> None:
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        await author_sign_in(http, gateway, system, _persona(), display_name="initial")
        async with http.get(f"{gateway}/api/v1/session") as response:
            assert (await response.json())["author"]["display_name"] == "Marie D."


async def test_a_minor_is_not_signed_in_as_an_author(system: SystemClient, gateway: str) -> None:
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        location = await author_sign_in(http, gateway, system, _persona(), birthdate="2015-06-01")
        assert query_of(location) == {"signin_error": "AUTHOR_NOT_ADULT"}, location
        assert "petitions_author" not in {cookie.key for cookie in http.cookie_jar}


async def test_a_display_name_form_that_is_none_is_refused_before_the_provider(
    system: SystemClient, gateway: str
) -> None:
    async with browser() as http:
        async with http.get(
            f"{gateway}/auth/author/start",
            params={"display_name": "Full", "return_to": "/x"},
            allow_redirects=False,
        ) as response:
            error = assert_error(response.status, await response.json(), 400, "INVALID_FIELD")
        assert [v["field"] for v in error["field_violations"]] == ["display_name"]
        assert "petitions_author_signin" not in {cookie.key for cookie in http.cookie_jar}


async def test_a_signer_sign_in_is_no_author_sign_in_and_the_two_flows_do_not_cross(
    system: SystemClient, gateway: str
) -> None:
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        # A signer signed in through the anonymous button cannot deposit.
        await oidc_sign_in(http, system, _persona(), return_to="/")
        assert "pi_credential" in {cookie.key for cookie in http.cookie_jar}
        base = system.namespace.gateway_url
        async with http.post(f"{base}/api/v1/drafts", json={"type": "uk", "title": "T", "text": "x"}) as response:
            assert_error(response.status, await response.json(), 401, "CREDENTIAL_MISSING")

    # A signer sign-in's sealed state, presented to the author callback, is
    # no author sign-in: each flow seals with its own key.
    async with browser() as http:
        async with http.get(f"{gateway}/auth/oidc/start", allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            state = query_of(response.headers["Location"])["state"]
        signer_state = next(cookie.value for cookie in http.cookie_jar if cookie.key == "pi_signin")
    async with (
        browser(Cookie=f"petitions_author_signin={signer_state}") as http,
        http.get(
            f"{gateway}/auth/author/callback", params={"code": "x", "state": state}, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303
        assert query_of(response.headers["Location"]) == {"signin_error": "SIGN_IN_EXPIRED"}
