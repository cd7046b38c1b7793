"""The gateway's HTTP API against the real services: proto3 JSON shapes,
both sign-in flows, signing, the cacheable tally, open data, and a gateway
whose tally is down (a clean 503, not a hang)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from petitions.v1 import petition_pb2
from services.gateway.pages import OPENAPI_FILE
from tests.gateway_http import assert_error, browser, client_ip, email_sign_in, oidc_sign_in, query_of
from tests.harness import ServiceProcess, free_port, gateway_env, start_service, wait_http
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def _petition(system: SystemClient, title: str = "Gateway petition") -> petition_pb2.Petition:
    return system.create_petition(
        title,
        text="First paragraph.\n\nSecond paragraph.",
        thresholds=[petition_pb2.Threshold(id="debate", label="Debated", signatures=100, min_territories=2)],
    )


async def test_petitions_are_listed_and_read_in_the_proto3_json_mapping(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    base = system.namespace.gateway_url
    async with browser() as http:
        async with http.get(f"{base}/api/v1/petitions", params={"state": "PETITION_STATE_OPEN"}) as response:
            listing = await response.json()
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=5"
        assert petition.id in {p["id"] for p in listing["petitions"]}
        async with http.get(f"{base}/api/v1/petitions/{petition.id}") as response:
            body = await response.json()
            etag = response.headers["ETag"]
        assert body["state"] == "PETITION_STATE_OPEN"
        assert body["thresholds"] == [{"id": "debate", "label": "Debated", "signatures": "100", "min_territories": 2}]
        assert body["committee"] == ""  # printed even when empty: clients need not know proto3 defaults
        async with http.get(f"{base}/api/v1/petitions/{petition.id}", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
            assert await response.read() == b""
        async with http.get(f"{base}/api/v1/petitions", params={"state": "OPENISH"}) as response:
            error = assert_error(response.status, await response.json(), 400, "INVALID_FIELD")
            assert error["field_violations"][0]["field"] == "state"


async def test_signing_through_the_email_flow_then_again_is_already_signed(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    base = system.namespace.gateway_url
    address = f"gw-{uuid.uuid4().hex[:8]}@example.org"
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        await email_sign_in(http, system, address, territory="13")
        async with http.get(f"{base}/api/v1/session") as response:
            session = await response.json()
        assert session["method"] == "VERIFICATION_METHOD_EMAIL"
        assert (session["country"], session["territory"]) == ("FR", "13")
        assert "signer" not in session
        assert address not in json.dumps(session)

        key = uuid.uuid4().hex
        url = f"{base}/api/v1/petitions/{petition.id}/signatures"
        async with http.post(url, headers={"Idempotency-Key": key}) as response:
            first = await response.json()
            assert response.status == 200, first
        assert first["outcome"] == "OUTCOME_ACCEPTED"
        assert "position" not in first  # where Kafka keeps it is not the browser's business
        async with http.post(url, headers={"Idempotency-Key": key}) as response:
            replay = await response.json()
        assert replay == first
        async with http.post(url) as response:
            again = await response.json()
        assert again["outcome"] == "OUTCOME_ALREADY_SIGNED"

        async with http.delete(f"{base}/api/v1/session") as response:
            assert (await response.json()) == {"signed_in": False, "author": {"signed_in": False}}
        async with http.post(url) as response:
            assert_error(response.status, await response.json(), 401, "CREDENTIAL_MISSING")


async def test_the_oidc_code_flow_signs_in_at_the_dev_provider(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    base = system.namespace.gateway_url
    persona = f"gw-{uuid.uuid4().hex[:8]}"
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        landed = await oidc_sign_in(http, system, persona, territory="2A", return_to=f"/petitions/{petition.id}")
        assert landed == f"/petitions/{petition.id}"
        async with http.get(f"{base}/api/v1/session") as response:
            session = await response.json()
        assert session["signed_in"] is True
        assert (session["method"], session["territory"]) == ("VERIFICATION_METHOD_OIDC", "2A")
        async with http.post(f"{base}/api/v1/petitions/{petition.id}/signatures") as response:
            receipt = await response.json()
        assert receipt["outcome"] == "OUTCOME_ACCEPTED", receipt
    tally = await asyncio.to_thread(system.settled_tally, petition.id)
    assert dict(tally.by_territory) == {"2A": 1}


async def test_a_callback_that_is_not_ours_goes_back_to_the_page_with_the_reason(system: SystemClient) -> None:
    base = system.namespace.gateway_url
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        async with http.get(
            f"{base}/auth/oidc/callback", params={"code": "x", "state": "y"}, allow_redirects=False
        ) as r:
            assert r.status == 303
            assert query_of(r.headers["Location"]) == {"signin_error": "SIGN_IN_EXPIRED"}
        async with http.get(
            f"{base}/auth/oidc/start", params={"return_to": "/petitions/demo"}, allow_redirects=False
        ) as response:
            assert response.status == 302
            cookie = response.cookies["pi_signin"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Lax"
        async with http.get(
            f"{base}/auth/oidc/callback", params={"code": "x", "state": "forged"}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/petitions/demo?signin_error=STATE_MISMATCH"


async def test_a_code_is_good_once(system: SystemClient) -> None:
    base = system.namespace.gateway_url
    persona = f"gw-{uuid.uuid4().hex[:8]}"
    async with browser(**{"X-Forwarded-For": client_ip()}) as http:
        async with http.get(f"{base}/auth/oidc/start", allow_redirects=False) as response:
            authorize = response.headers["Location"]
        fields = dict(query_of(authorize), persona=persona, country="FR", territory="75")
        system.raw_identities.update({persona, f"dev-persona:{persona}"})
        async with http.post(authorize.split("?")[0], data=fields, allow_redirects=False) as response:
            callback = response.headers["Location"]
        async with http.get(callback, allow_redirects=False) as response:
            assert "signin_error" not in response.headers["Location"]
        # The same answer again (a replayed or leaked callback URL), with a
        # fresh sign-in in progress: the provider refuses the spent code.
        async with http.get(f"{base}/auth/oidc/start", allow_redirects=False) as response:
            fresh_state = query_of(response.headers["Location"])["state"]
        replay = callback.replace(query_of(callback)["state"], fresh_state)
        async with http.get(replay, allow_redirects=False) as response:
            assert query_of(response.headers["Location"]) == {"signin_error": "CODE_REJECTED"}


async def test_an_api_client_signs_with_a_bearer_credential(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    credential = await asyncio.to_thread(system.credential, f"gw-{uuid.uuid4().hex[:8]}")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.namespace.gateway_url}/api/v1/petitions/{petition.id}/signatures",
            headers={"Authorization": f"Bearer {credential.token}", "X-Forwarded-For": client_ip()},
            json={"idempotency_key": uuid.uuid4().hex},
        ) as response,
    ):
        receipt = await response.json()
    assert receipt["outcome"] == "OUTCOME_ACCEPTED", receipt


async def test_the_tally_is_cacheable_and_a_crowd_costs_one_read(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    credential = await asyncio.to_thread(system.credential, f"gw-{uuid.uuid4().hex[:8]}", "FR", "13")
    await asyncio.to_thread(system.sign, credential.token, petition.id)
    await asyncio.to_thread(system.settled_tally, petition.id)
    url = f"{system.namespace.gateway_url}/api/v1/petitions/{petition.id}/tally"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            tally = await response.json()
            etag = response.headers["ETag"]
            assert response.headers["Cache-Control"] == "public, max-age=1"
        assert (tally["total"], tally["by_territory"], tally["by_country"]) == ("1", {"13": "1"}, {"FR": "1"})
        assert etag.startswith('W/"')
        # Time is the subject: the cached answer (max-age=1) must have aged
        # out, so the next answer is a newer read of the same counts.
        await asyncio.sleep(1.2)
        # A newer read of the same counts: same (weak) ETag, so a 304.
        async with http.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 304

        reads_before = await asyncio.to_thread(system.metric_value, "gateway", "petitions_gateway_tally_reads_total")
        # Time is the subject: the cache ages out, so the crowd below meets a miss.
        await asyncio.sleep(1.1)

        async def read() -> int:
            async with http.get(url) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(read() for _ in range(300)))
        reads = await asyncio.to_thread(system.metric_value, "gateway", "petitions_gateway_tally_reads_total")
    assert set(statuses) == {200}
    print(f"\n300 concurrent tally reads cost {reads - reads_before:.0f} GetTally")
    assert reads - reads_before <= 2


async def test_open_data_downloads_as_json_and_csv(system: SystemClient) -> None:
    petition = await asyncio.to_thread(_petition, system)
    for territory in ("13", "75"):
        credential = await asyncio.to_thread(system.credential, f"gw-{uuid.uuid4().hex[:8]}", "FR", territory)
        await asyncio.to_thread(system.sign, credential.token, petition.id)
    await asyncio.to_thread(system.settled_tally, petition.id)
    # Time is the subject: the gateway's one-second cache ages out, so the
    # downloads below read the settled counts.
    await asyncio.sleep(1.1)
    base = f"{system.namespace.gateway_url}/api/v1/petitions/{petition.id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/open-data.json") as response:
            document = await response.json()
            disposition = response.headers["Content-Disposition"]
        assert disposition == f'attachment; filename="petition-{petition.id}-signatures.json"'
        (record,) = document["petitions"]
        assert record["total"] == 2
        assert record["by_territory"] == [
            {"code": "13", "name": "Bouches-du-Rhône", "signatures": 1},
            {"code": "75", "name": "Paris", "signatures": 1},
        ]
        async with http.get(f"{base}/open-data.csv") as response:
            assert response.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(r["scope"], r["code"], r["signatures"]) for r in rows] == [
        ("total", "", "2"),
        ("territory", "13", "1"),
        ("territory", "75", "1"),
        ("country", "FR", "2"),
    ]


async def test_the_page_documents_and_probes_are_served(system: SystemClient) -> None:
    base = system.namespace.gateway_url
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/petitions/demo"):
            async with http.get(f"{base}{path}") as response:
                page = await response.text()
                assert response.content_type == "text/html"
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
                assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert '<script src="/static/app.js" defer></script>' in page
        for asset in ("app.js", "style.css", "i18n/fr.json", "i18n/en.json"):
            async with http.get(f"{base}/static/{asset}") as response:
                assert response.status == 200, asset
        async with http.get(f"{base}/static/../openapi.py") as response:
            assert response.status == 404
        async with http.get(f"{base}/openapi.json") as response:
            assert await response.json() == json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
        async with http.get(f"{base}/healthz") as response:
            assert await response.json() == {"status": "ok"}
        async with http.get(f"{base}/readyz") as response:
            ready = await response.json()
        assert ready == {
            "status": "ready",
            "backends": {"identity": True, "signing": True, "tally": True, "petitions": True},
        }
        async with http.options(
            f"{base}/api/v1/petitions",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
        ) as response:
            assert_error(response.status, await response.json(), 403, "CORS_ORIGIN_NOT_ALLOWED")


async def test_a_client_address_header_counts_only_from_a_trusted_proxy(
    system: SystemClient, other_gateway: OtherGateway
) -> None:
    """The session's gateway trusts X-Forwarded-For from 127.0.0.1; the
    other gateway trusts no proxy. The test configuration blocks
    203.0.113.0/24 at signing."""
    petition = await asyncio.to_thread(_petition, system)
    path = f"/api/v1/petitions/{petition.id}/signatures"
    headers = {"X-Forwarded-For": "203.0.113.7"}
    async with aiohttp.ClientSession() as http:
        credential = await asyncio.to_thread(system.credential, f"gw-{uuid.uuid4().hex[:8]}")
        bearer = {"Authorization": f"Bearer {credential.token}", **headers}
        async with http.post(f"{system.namespace.gateway_url}{path}", headers=bearer) as response:
            assert_error(response.status, await response.json(), 403, "BLOCKED")
        async with http.post(f"{other_gateway.url}{path}", headers=bearer) as response:
            receipt = await response.json()
        assert receipt["outcome"] == "OUTCOME_ACCEPTED", receipt


async def test_a_backend_that_is_down_answers_a_clean_503_at_once(other_gateway: OtherGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{other_gateway.url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["backends"] == {
                "identity": True,
                "signing": True,
                "tally": False,
                "petitions": True,
            }
        for path in ("/api/v1/petitions/demo/tally", "/api/v1/petitions/demo/tally/live"):
            async with http.get(f"{other_gateway.url}{path}", timeout=aiohttp.ClientTimeout(total=3)) as response:
                error = assert_error(response.status, await response.json(), 503, "BACKEND_UNAVAILABLE")
                assert response.headers["Retry-After"] == "1"
            assert "tally" in error["message"]
        # The other backends still serve.
        async with http.get(f"{other_gateway.url}/api/v1/petitions") as response:
            assert response.status == 200


async def test_cors_lets_configured_origins_call_the_api(other_gateway: OtherGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.options(
            f"{other_gateway.url}/api/v1/petitions/demo/signatures",
            headers={
                "Origin": OTHER_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            },
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == OTHER_ORIGIN
            assert "Idempotency-Key" in response.headers["Access-Control-Allow-Headers"]
        async with http.get(f"{other_gateway.url}/api/v1/petitions", headers={"Origin": OTHER_ORIGIN}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == OTHER_ORIGIN
            assert response.headers["Vary"] == "Origin"
            assert "ETag" in response.headers["Access-Control-Expose-Headers"]
        async with http.get(
            f"{other_gateway.url}/api/v1/petitions", headers={"Origin": "https://elsewhere.example"}
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


OTHER_ORIGIN = "https://front.example"


@dataclass
class OtherGateway:
    url: str
    process: ServiceProcess


@pytest.fixture(scope="module")
def other_gateway(system: SystemClient) -> Iterator[OtherGateway]:
    """A second gateway: its tally address has nothing behind it, it trusts
    no proxy, and one front-end origin may call it."""
    namespace = system.namespace
    port = free_port()
    env = {
        **gateway_env(namespace),
        "PETITIONS_HTTP_PORT": str(port),
        "PETITIONS_METRICS_PORT": "0",
        "PETITIONS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PETITIONS_TALLY_ADDRESS": f"127.0.0.1:{free_port()}",
        "PETITIONS_TRUSTED_PROXY_HEADER": "",
        "PETITIONS_CORS_ORIGINS": json.dumps([OTHER_ORIGIN]),
        "PETITIONS_BACKEND_START_WAIT_SECONDS": "1",
    }
    logs = namespace.work_dir / "logs"
    process = start_service("gateway-other", "services.gateway", [], namespace.env(system.stack), env, logs)
    try:
        wait_http(process, port)
        yield OtherGateway(f"http://127.0.0.1:{port}", process)
    finally:
        process.stop()


@pytest.mark.audit
def test_the_gateway_log_holds_no_identity_and_no_credential(system: SystemClient) -> None:
    """The gateway passes ID tokens, email addresses and credentials through;
    none may be written down. Every JWS starts with "eyJ" (base64 of '{"')."""
    log = (system.namespace.work_dir / "logs" / "gateway.log").read_text(errors="replace")
    assert "eyJ" not in log
    assert "pi_credential" not in log
    assert [identity for identity in system.raw_identities if identity and identity in log] == []
