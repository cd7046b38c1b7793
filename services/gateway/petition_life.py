"""The petition's life over HTTP: authors' drafts and submissions, sponsors,
and the staff's work (review, committee, rapporteur, classement, closing,
outcomes, the legislature's end, the queue and the audit trail).

Each handler checks the path and the body (the proto3 JSON of the request
message, minus what the path says), takes the caller's credential where the
route says it may come from, and makes one call to the petitions service
with the credential in its "authorization: Bearer" metadata; the service
decides who may do what (a signer's or an author's credential on a staff
route is its 403 WRONG_ROLE) and its refusals become the Error body
(http_errors.py). Nothing here is cached: every answer is one caller's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from google.protobuf.message import Message

from petitions.v1 import petitions_pb2
from services.gateway.api import finish_even_if_abandoned, list_request, listing_of
from services.gateway.auth import author_credential_of, bearer_metadata, credential_of, staff_credential_of
from services.gateway.backends import Backends
from services.gateway.http_errors import invalid
from services.gateway.inputs import DECIMAL, deadline, message_body, petition_id, text, to_json
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from petitions.v1.petitions_pb2_grpc import PetitionsAsyncStub

R = TypeVar("R", bound=Message)
# The body never carries what the path says.
IN_PATH = frozenset({"petition_id"})
MAX_AUDIT_PAGE = 500
MAX_PAGE_TOKEN = 512
NO_STORE = {"Cache-Control": "no-store"}


class PetitionLife:
    def __init__(self, settings: GatewaySettings, backends: Backends):
        self._settings = settings
        self._petitions = backends.petitions

    async def _call(
        self,
        request: web.Request,
        rpc: Callable[[PetitionsAsyncStub, float], Awaitable[R]],
        *,
        change: bool = True,
    ) -> web.Response:
        budget = deadline(request, self._settings.request_timeout_seconds)

        def call(stub: PetitionsAsyncStub) -> Awaitable[R]:
            return rpc(stub, budget.remaining())

        if change:
            # A change decided by the service is finished even when the
            # client leaves; a retry sees it (and its version).
            answer = await finish_even_if_abandoned(self._petitions.call(call))
        else:
            answer = await self._petitions.call(call)
        return web.json_response(to_json(answer), headers=NO_STORE)

    # Authors: the author cookie or a Bearer author credential.

    async def create_draft(self, request: web.Request) -> web.Response:
        metadata = bearer_metadata(author_credential_of(request))
        body = await message_body(request, petitions_pb2.CreateDraftRequest())
        return await self._call(request, lambda stub, t: stub.CreateDraft(body, metadata=metadata, timeout=t))

    async def get_draft(self, request: web.Request) -> web.Response:
        """The author's own petition in any state (drafts are not public)."""
        get = petitions_pb2.GetPetitionRequest(petition_id=petition_id(request))
        metadata = bearer_metadata(author_credential_of(request))
        return await self._call(
            request, lambda stub, t: stub.GetPetition(get, metadata=metadata, timeout=t), change=False
        )

    async def update_draft(self, request: web.Request) -> web.Response:
        metadata = bearer_metadata(author_credential_of(request))
        petition = petition_id(request)
        body = await message_body(request, petitions_pb2.UpdateDraftRequest(), IN_PATH)
        body.petition_id = petition
        return await self._call(request, lambda stub, t: stub.UpdateDraft(body, metadata=metadata, timeout=t))

    async def submit(self, request: web.Request) -> web.Response:
        metadata = bearer_metadata(author_credential_of(request))
        petition = petition_id(request)
        body = await message_body(request, petitions_pb2.SubmitPetitionRequest(), IN_PATH)
        body.petition_id = petition
        return await self._call(request, lambda stub, t: stub.SubmitPetition(body, metadata=metadata, timeout=t))

    # Sponsors: signers, by the signer cookie or a Bearer signer credential.

    async def sponsor(self, request: web.Request) -> web.Response:
        credential = credential_of(request)
        # The credential travels in the request, not in the body's JSON.
        petition = petition_id(request)
        body = await message_body(request, petitions_pb2.SponsorPetitionRequest(), IN_PATH | {"credential"})
        body.petition_id = petition
        body.credential = credential
        return await self._call(request, lambda stub, t: stub.SponsorPetition(body, timeout=t))

    # Staff: a Bearer staff credential only.

    async def _staff_change(self, request: web.Request, body: Message, rpc: str) -> web.Response:
        """A staff change of the petition in the path: the body is the
        request message (minus petition_id), sent with the staff credential."""
        # The credential first: a caller without one learns nothing of the body's rules.
        metadata = bearer_metadata(staff_credential_of(request))
        petition = petition_id(request)
        body = await message_body(request, body, IN_PATH)
        body.petition_id = petition  # type: ignore[attr-defined]
        return await self._call(request, lambda stub, t: getattr(stub, rpc)(body, metadata=metadata, timeout=t))

    async def review(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.ReviewPetitionRequest(), "ReviewPetition")

    async def assign(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.AssignCommitteeRequest(), "AssignCommittee")

    async def name_rapporteur(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.NameRapporteurRequest(), "NameRapporteur")

    async def class_petition(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.ClassPetitionRequest(), "ClassPetition")

    async def close(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.ClosePetitionRequest(), "ClosePetition")

    async def record_outcome(self, request: web.Request) -> web.Response:
        return await self._staff_change(request, petitions_pb2.RecordOutcomeRequest(), "RecordOutcome")

    async def close_legislature(self, request: web.Request) -> web.Response:
        # The credential first: an anonymous caller learns nothing of the body's rules.
        metadata = bearer_metadata(staff_credential_of(request))
        body = await message_body(request, petitions_pb2.CloseLegislatureRequest())
        return await self._call(request, lambda stub, t: stub.CloseLegislature(body, metadata=metadata, timeout=t))

    async def staff_petition(self, request: web.Request) -> web.Response:
        """One petition in any state, for staff."""
        get = petitions_pb2.GetPetitionRequest(petition_id=petition_id(request))
        metadata = bearer_metadata(staff_credential_of(request))
        return await self._call(
            request, lambda stub, t: stub.GetPetition(get, metadata=metadata, timeout=t), change=False
        )

    async def suggestions(self, request: web.Request) -> web.Response:
        suggest = petitions_pb2.SuggestCommitteeRequest(petition_id=petition_id(request))
        metadata = bearer_metadata(staff_credential_of(request))
        return await self._call(
            request, lambda stub, t: stub.SuggestCommittee(suggest, metadata=metadata, timeout=t), change=False
        )

    async def audit(self, request: web.Request) -> web.Response:
        petition = petition_id(request)
        page_size_text = request.query.get("page_size", "0")
        if not DECIMAL.fullmatch(page_size_text) or int(page_size_text) > MAX_AUDIT_PAGE:
            raise invalid("page_size", f"must be an integer from 0 to {MAX_AUDIT_PAGE}")
        trail = petitions_pb2.GetAuditTrailRequest(
            petition_id=petition,
            page_size=int(page_size_text),
            page_token=text("page_token", request.query.get("page_token", ""), MAX_PAGE_TOKEN),
        )
        metadata = bearer_metadata(staff_credential_of(request))
        return await self._call(
            request, lambda stub, t: stub.GetAuditTrail(trail, metadata=metadata, timeout=t), change=False
        )

    async def queue(self, request: web.Request) -> web.Response:
        """Petitions in every state the staff may see, by state, committee
        (a committee's queue), type or legislature."""
        listing = list_request(listing_of(request))
        metadata = bearer_metadata(staff_credential_of(request))
        return await self._call(
            request, lambda stub, t: stub.ListPetitions(listing, metadata=metadata, timeout=t), change=False
        )
