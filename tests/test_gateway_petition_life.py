"""A UK-style petition's life over HTTP alone, through a gateway of the
session: an author signs in at the identified provider, drafts, edits and
submits; five signers sponsor it through the API (a repeated sponsor counts
once); a moderator opens it; a clerk assigns it to a committee, names a
rapporteur and records the government's response; the public sees every
field; the audit trail shows each step. Every refusal on the way (no
credential, the wrong kind or role, a cross-origin write with the author's
cookie, a body that is not the request's) has the documented error body and
changes nothing: the petition's version and its events stay as they were."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from petitions.v1 import petitions_pb2
from tests.gateway_authors import author_gateway, author_sign_in
from tests.gateway_http import assert_error, browser, client_ip, oidc_sign_in
from tests.harness import free_port
from tests.system import SystemClient

pytestmark = pytest.mark.stack

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def gateway(system: SystemClient) -> Iterator[str]:
    with author_gateway(system, "gateway-petition-life") as url:
        yield url


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Forwarded-For": client_ip()}


def _staff(system: SystemClient, persona: str) -> dict[str, str]:
    return _bearer(system.staff_credential(persona))


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def _ok(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await _json(response)
    assert response.status == 200, body
    return body


def _events(system: SystemClient, petition_id: str) -> int:
    topic = f"{system.namespace.topic_prefix}petition-events"
    return len(system.records_with_key(petition_id.encode(), topic))


class Unchanged:
    """Records the petition's version and events, then checks a refusal
    left both as they were (read from the service and from Kafka)."""

    def __init__(self, system: SystemClient, petition_id: str):
        self._system = system
        self._id = petition_id
        self.version = 0
        self.events = 0

    async def __aenter__(self) -> Unchanged:
        self.version, self.events = await asyncio.to_thread(self._now)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            assert await asyncio.to_thread(self._now) == (self.version, self.events), "a refusal changed something"

    def _now(self) -> tuple[int, int]:
        petition = self._system.petitions.GetPetition(
            petitions_pb2.GetPetitionRequest(petition_id=self._id),
            metadata=self._system.staff("staff-admin"),
            timeout=10,
        )
        return petition.version, _events(self._system, self._id)


async def test_a_uk_petition_from_deposit_to_response_over_http(system: SystemClient, gateway: str) -> None:
    api = f"{gateway}/api/v1"
    author = browser(**{"X-Forwarded-For": client_ip()})
    async with author, aiohttp.ClientSession() as client:
        # The author signs in at the identified provider and drafts.
        await author_sign_in(http=author, base=gateway, system=system, persona=f"uk-author-{uuid.uuid4().hex[:8]}")
        async with author.get(f"{api}/session") as response:
            assert (await _ok(response))["author"]["display_name"] == "Marie D."

        # No credential at all: 401, the documented body.
        async with client.post(f"{api}/drafts", json={"type": "uk", "title": "x", "text": "y"}) as response:
            assert_error(response.status, await _json(response), 401, "CREDENTIAL_MISSING")

        draft_id = f"uk-{uuid.uuid4().hex[:10]}"
        async with author.post(
            f"{api}/drafts",
            json={
                "id": draft_id,
                "type": "uk",
                "title": "Fund school libraries",
                "text": "Every primary school should have a library.",
            },
        ) as response:
            draft = await _ok(response)
        assert (draft["id"], draft["state"], draft["type"]) == (draft_id, "PETITION_STATE_DRAFT", "uk")
        assert draft["author_name"] == "Marie D."
        # A draft is the author's alone: the public does not see it.
        async with client.get(f"{api}/petitions/{draft_id}") as response:
            assert_error(response.status, await _json(response), 404, "PETITION_NOT_FOUND")
        async with author.get(f"{api}/drafts/{draft_id}") as response:
            assert (await _ok(response))["version"] == draft["version"]

        async with author.patch(
            f"{api}/drafts/{draft_id}",
            json={"title": "Fund a library in every primary school", "expected_version": draft["version"]},
        ) as response:
            edited = await _ok(response)
        assert edited["title"] == "Fund a library in every primary school"

        # Refusals that change nothing: a body that is not the request's,
        # a cross-origin write with the author's cookie.
        async with Unchanged(system, draft_id):
            async with author.patch(
                f"{api}/drafts/{draft_id}", json={"title": 7, "petition_id": "other", "colour": "red"}
            ) as response:
                error = assert_error(response.status, await _json(response), 400, "INVALID_FIELD")
            assert {v["field"] for v in error["field_violations"]} == {"title", "petition_id", "colour"}
            async with author.post(f"{api}/drafts/{draft_id}/submit", headers={"Origin": EVIL}) as response:
                assert_error(response.status, await _json(response), 403, "CROSS_ORIGIN_REQUEST")
            async with author.post(f"{api}/drafts/{draft_id}/submit", headers={"Origin": "null"}, json={}) as response:
                assert_error(response.status, await _json(response), 403, "CROSS_ORIGIN_REQUEST")

        async with author.post(f"{api}/drafts/{draft_id}/submit", json={}) as response:
            gathering = await _ok(response)
        assert gathering["state"] == "PETITION_STATE_GATHERING_SPONSORS"
        assert (gathering["sponsors"], gathering["sponsors_required"]) == (0, 5)

        # Five sponsors: one signed in in a browser (the signer cookie),
        # four API clients (Bearer signer credentials); one of them twice.
        sponsor_browser = browser(**{"X-Forwarded-For": client_ip()})
        async with sponsor_browser:
            await oidc_sign_in(sponsor_browser, system, f"sponsor-{uuid.uuid4().hex[:8]}", return_to="/")
            async with sponsor_browser.post(f"{gateway}/api/v1/petitions/{draft_id}/sponsors") as response:
                first = await _ok(response)
        assert first["counted"] is True
        assert first["petition"]["sponsors"] == 1
        credentials = await asyncio.gather(
            *(asyncio.to_thread(system.credential, f"sponsor-{uuid.uuid4().hex[:8]}") for _ in range(4))
        )
        async with client.post(
            f"{api}/petitions/{draft_id}/sponsors", headers=_bearer(credentials[0].token)
        ) as response:
            assert (await _ok(response))["counted"] is True
        async with (
            Unchanged(system, draft_id),
            client.post(f"{api}/petitions/{draft_id}/sponsors", headers=_bearer(credentials[0].token)) as response,
        ):
            again = await _ok(response)
        assert (again["counted"], again["petition"]["sponsors"]) == (False, 2)
        # The author's credential is no signer's.
        author_token = next(cookie.value for cookie in author.cookie_jar if cookie.key == "petitions_author")
        sponsor_url = f"{api}/petitions/{draft_id}/sponsors"
        async with Unchanged(system, draft_id), client.post(sponsor_url, headers=_bearer(author_token)) as response:
            assert_error(response.status, await _json(response), 403, "WRONG_ROLE")
        for credential in credentials[1:]:
            async with client.post(
                f"{api}/petitions/{draft_id}/sponsors", headers=_bearer(credential.token)
            ) as response:
                last = await _ok(response)
        assert last["petition"]["state"] == "PETITION_STATE_SUBMITTED"
        assert last["petition"]["sponsors"] == 5

        # The admissibility queue, for staff only.
        async with client.get(
            f"{api}/staff/queue", params={"state": "submitted"}, headers=_staff(system, "staff-moderator-a")
        ) as response:
            queue = await _ok(response)
        assert draft_id in [p["id"] for p in queue["petitions"]]
        async with author.get(f"{api}/staff/queue", params={"state": "submitted"}) as response:
            # Cookies are never a staff credential.
            assert_error(response.status, await _json(response), 401, "CREDENTIAL_MISSING")

        # Review refusals: no Bearer (the author's cookie is not one), the
        # author's credential, a clerk. Nothing changes.
        review = {"decision": "DECISION_OPEN"}
        async with Unchanged(system, draft_id):
            async with author.post(f"{api}/staff/petitions/{draft_id}/review", json=review) as response:
                assert_error(response.status, await _json(response), 401, "CREDENTIAL_MISSING")
            async with client.post(
                f"{api}/staff/petitions/{draft_id}/review", json=review, headers=_bearer(author_token)
            ) as response:
                assert_error(response.status, await _json(response), 403, "WRONG_ROLE")
            async with client.post(
                f"{api}/staff/petitions/{draft_id}/review", json=review, headers=_staff(system, "staff-clerk")
            ) as response:
                assert_error(response.status, await _json(response), 403, "WRONG_ROLE")
            async with client.post(
                f"{api}/staff/petitions/{draft_id}/review",
                json={"decision": "DECISION_MAYBE", "expected_version": "x1"},
                headers=_staff(system, "staff-moderator-a"),
            ) as response:
                error = assert_error(response.status, await _json(response), 400, "INVALID_FIELD")
            assert {v["field"] for v in error["field_violations"]} == {"decision", "expected_version"}

        async with client.post(
            f"{api}/staff/petitions/{draft_id}/review",
            json={**review, "expected_version": last["petition"]["version"]},
            headers=_staff(system, "staff-moderator-a"),
        ) as response:
            opened = await _ok(response)
        assert opened["state"] == "PETITION_STATE_OPEN"
        # The second moderator is too late: the state is named.
        async with (
            Unchanged(system, draft_id),
            client.post(
                f"{api}/staff/petitions/{draft_id}/review", json=review, headers=_staff(system, "staff-moderator-b")
            ) as response,
        ):
            assert_error(response.status, await _json(response), 400, "ILLEGAL_TRANSITION")

        # The clerk's work: suggestions, assignment, rapporteur, response.
        clerk = _staff(system, "staff-clerk")
        async with client.get(f"{api}/staff/petitions/{draft_id}/suggestions", headers=clerk) as response:
            suggestions = (await _ok(response))["suggestions"]
        assert suggestions, "a petition about school libraries matches some committee's rules"
        committee = suggestions[0]["committee"]
        async with client.post(
            f"{api}/staff/petitions/{draft_id}/assign",
            json={"committee": committee, "note": "suggested"},
            headers=clerk,
        ) as response:
            assigned = await _ok(response)
        assert assigned["committee"] == committee
        assert [a["committee"] for a in assigned["assignments"]] == [committee]
        async with client.post(
            f"{api}/staff/petitions/{draft_id}/rapporteur", json={"rapporteur": "Jeanne Martin"}, headers=clerk
        ) as response:
            assert (await _ok(response))["rapporteur"] == "Jeanne Martin"
        async with Unchanged(system, draft_id):
            async with client.post(
                f"{api}/staff/petitions/{draft_id}/outcomes",
                json={"outcome": {"kind": "KIND_RESPONSE", "date": "yesterday"}},
                headers=clerk,
            ) as response:
                error = assert_error(response.status, await _json(response), 400, "INVALID_FIELD")
            assert [v["field"] for v in error["field_violations"]] == ["outcome.date"]
        response_outcome = {
            "kind": "KIND_RESPONSE",
            "date": "2026-11-30T00:00:00Z",
            "text": "The Government will consider it.",
            "links": ["https://petition.parliament.uk/responses/1"],
        }
        async with client.post(
            f"{api}/staff/petitions/{draft_id}/outcomes", json={"outcome": response_outcome}, headers=clerk
        ) as response:
            answered = await _ok(response)
        # A response on an open petition is recorded; signing goes on.
        assert answered["state"] == "PETITION_STATE_OPEN"
        assert [(o["kind"], o["text"], o["links"]) for o in answered["outcomes"]] == [
            ("KIND_RESPONSE", response_outcome["text"], response_outcome["links"])
        ]

        # The public sees every field, and finds it by type and committee.
        async with client.get(f"{api}/petitions/{draft_id}") as response:
            public = await _ok(response)
        assert public["version"] == answered["version"]
        assert (public["author_name"], public["committee"], public["rapporteur"]) == (
            "Marie D.",
            committee,
            "Jeanne Martin",
        )
        async with client.get(f"{api}/petition-types") as response:
            legislature = (await _ok(response))["current_legislature"]
        assert (public["sponsors"], public["sponsors_required"], public["legislature"]) == (5, 5, legislature)
        assert public["outcomes"] == answered["outcomes"]
        async with client.get(f"{api}/petitions", params={"type": "uk", "committee": committee}) as response:
            assert draft_id in [p["id"] for p in (await _ok(response))["petitions"]]
        async with client.get(f"{api}/petitions", params={"type": "assemblee"}) as response:
            assert draft_id not in [p["id"] for p in (await _ok(response))["petitions"]]

        # The audit trail: every step, who and in which role.
        async with client.get(
            f"{api}/staff/petitions/{draft_id}/audit", headers=_staff(system, "staff-moderator-b")
        ) as response:
            trail = (await _ok(response))["entries"]
        # Sponsors are counted by the service (the sponsor is a signer, kept
        # out of the trail); the refusals above left no entry.
        assert [(e["action"], e["role"]) for e in trail] == [
            ("create", "author"),
            ("update", "author"),
            ("submit", "author"),
            *[("sponsor", "system")] * 4,
            ("sponsors-complete", "system"),
            ("open", "moderator"),
            ("assign", "clerk"),
            ("rapporteur", "clerk"),
            ("respond", "clerk"),
        ]
        assert [e["version"] for e in trail] == [str(v) for v in range(1, len(trail) + 1)]
        async with client.get(f"{api}/staff/petitions/{draft_id}/audit", headers=_bearer(author_token)) as response:
            assert_error(response.status, await _json(response), 403, "WRONG_ROLE")


async def test_the_registries_are_public(system: SystemClient, gateway: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{gateway}/api/v1/petition-types") as response:
            types = await _ok(response)
            assert response.headers["ETag"]
        assert {"assemblee", "uk"} <= {t["id"] for t in types["types"]}
        assert "duplicate" in {r["code"] for r in types["rejection_reasons"]}
        async with client.get(f"{gateway}/api/v1/committees") as response:
            committees = await _ok(response)
        assert committees["committees"], committees


async def test_with_the_petitions_service_out_of_reach_the_gateway_stays_ready_and_signing_goes_on(
    system: SystemClient,
) -> None:
    """Signing does not need the petitions service (signing has its own
    view), so a gateway that cannot reach it stays in the load balancer:
    petition reads and changes answer 503, signatures are accepted."""
    petition = await asyncio.to_thread(system.create_petition, "Signed while the catalogue is away")
    credential = await asyncio.to_thread(system.credential, f"away-{uuid.uuid4().hex[:8]}")
    nothing_there = {
        "PETITIONS_PETITIONS_ADDRESS": f"127.0.0.1:{free_port()}",
        "PETITIONS_BACKEND_START_WAIT_SECONDS": "1",
    }
    with author_gateway(system, "gateway-no-petitions", nothing_there) as url:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/readyz") as response:
                ready = await _ok(response)
            assert ready["backends"]["petitions"] is False, ready
            async with client.get(f"{url}/api/v1/petitions/{petition.id}") as response:
                assert_error(response.status, await _json(response), 503, "BACKEND_UNAVAILABLE")
                assert response.headers["Retry-After"] == "1"
            async with client.post(
                f"{url}/api/v1/petitions/{petition.id}/signatures", headers=_bearer(credential.token)
            ) as response:
                assert (await _ok(response))["outcome"] == "OUTCOME_ACCEPTED"
