"""The public API under /api/v1: petitions, signatures, tallies, open data
and the live counter. Each handler reads the request, calls one backend
with what is left of the request's time budget, and answers proto3 JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from aiohttp import web

from petitions.v1 import petition_pb2, petitions_pb2, signing_pb2, tally_pb2
from servicekit import open_data
from servicekit.coalescing import CoalescingCache
from services.gateway.auth import credential_of
from services.gateway.backends import Backends
from services.gateway.caching import CachedJson, cached_answer, strong_json, weak_json
from services.gateway.http_errors import ApiError, invalid
from services.gateway.inputs import DECIMAL, Deadline, Field, deadline, json_object, petition_id, text, to_json
from services.gateway.live import LiveTallies, Subscription
from services.gateway.metric_defs import TALLY_READS
from services.gateway.request_context import CLIENT_IP
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from petitions.v1.petitions_pb2_grpc import PetitionsAsyncStub
    from petitions.v1.signing_pb2_grpc import SigningAsyncStub
    from petitions.v1.tally_pb2_grpc import TallyAsyncStub

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 128
MAX_PAGE_TOKEN = 512
MAX_PAGE_SIZE = 500
STATES: dict[str, petition_pb2.PetitionState.ValueType] = {
    name: value for name, value in petition_pb2.PetitionState.items() if value
}
# A state by its enum name or its short name ("PETITION_STATE_SUBMITTED" or
# "submitted"), both exactly.
STATE_CHOICES: dict[str, petition_pb2.PetitionState.ValueType] = {
    **STATES,
    **{name.removeprefix("PETITION_STATE_").lower(): value for name, value in STATES.items()},
}
# The longest type, committee or legislature id a filter may name.
MAX_FILTER = 64
FILTERS = ("type", "committee", "legislature")
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    # Tells nginx-style proxies not to buffer the stream.
    "X-Accel-Buffering": "no",
}

# state, page size, page token, type, committee, legislature.
Listing = tuple[petition_pb2.PetitionState.ValueType, int, str, str, str, str]


def listing_of(request: web.Request) -> Listing:
    """The filters and page of a ListPetitions from the query, each checked."""
    # Absent means every state; present, it must name one.
    state_name = request.query.get("state")
    if state_name is not None and state_name not in STATE_CHOICES:
        raise invalid("state", f"must be one of {', '.join(STATE_CHOICES)}")
    page_size_text = request.query.get("page_size", "0")
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not DECIMAL.fullmatch(page_size_text) or int(page_size_text) > MAX_PAGE_SIZE:
        raise invalid("page_size", f"must be an integer from 0 to {MAX_PAGE_SIZE}")
    page_token = text("page_token", request.query.get("page_token", ""), MAX_PAGE_TOKEN)
    type_id, committee, legislature = (text(name, request.query.get(name, ""), MAX_FILTER) for name in FILTERS)
    return (
        STATE_CHOICES[state_name] if state_name is not None else petition_pb2.PETITION_STATE_UNSPECIFIED,
        int(page_size_text),
        page_token,
        type_id,
        committee,
        legislature,
    )


def list_request(listing: Listing) -> petitions_pb2.ListPetitionsRequest:
    state, page_size, page_token, type_id, committee, legislature = listing
    return petitions_pb2.ListPetitionsRequest(
        state=state,
        page_size=page_size,
        page_token=page_token,
        type=type_id,
        committee=committee,
        legislature=legislature,
    )


@dataclass(frozen=True)
class TallyView:
    """One GetTally answer, rendered once for every reader of the interval."""

    tally: tally_pb2.PetitionTally
    json: CachedJson


def tally_view(tally: tally_pb2.PetitionTally) -> TallyView:
    counts = tally_pb2.PetitionTally()
    counts.CopyFrom(tally)
    counts.ClearField("as_of")
    counts.ClearField("lag_messages")
    return TallyView(tally, weak_json(to_json(tally), counts))


async def within(request_deadline: Deadline, shared: Awaitable[T]) -> T:
    """Waits for a shared (cached, coalesced) read no longer than this
    request may; the read itself goes on for the others."""
    try:
        async with asyncio.timeout(request_deadline.remaining()):
            return await shared
    except TimeoutError:
        raise ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "the request ran out of time") from None


async def finish_even_if_abandoned(work: Coroutine[Any, Any, T]) -> T:
    """Runs work to its end even when the request waiting for it is
    cancelled (the browser left)."""
    task = asyncio.ensure_future(work)
    # Retrieves the outcome that nobody may be left to read, so it is not
    # reported as an exception never retrieved.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


class PublicApi:
    def __init__(self, settings: GatewaySettings, backends: Backends, live: LiveTallies):
        self._settings = settings
        self._signing = backends.signing
        self._petitions = backends.petitions
        self._tally = backends.tally
        self._live = live
        # Reads behind the caches are shared by many requests: their time
        # limit is the gateway's, each request waits for them within its own.
        self._timeout = settings.request_timeout_seconds
        self._tallies: CoalescingCache[str, TallyView] = CoalescingCache(
            self._read_tally, settings.gateway_tally_cache_seconds
        )
        self._petition_reads: CoalescingCache[str, CachedJson] = CoalescingCache(
            self._read_petition, settings.gateway_catalogue_cache_seconds
        )
        # The two registries: one key each ("types", "committees").
        self._registries: CoalescingCache[str, CachedJson] = CoalescingCache(
            self._read_registry, settings.gateway_catalogue_cache_seconds
        )
        self._listings: CoalescingCache[Listing, CachedJson] = CoalescingCache(
            self._read_listing, settings.gateway_catalogue_cache_seconds, max_entries=1_000
        )

    # Backend reads behind the caches

    async def _read_tally(self, petition: str) -> TallyView:
        TALLY_READS.inc()

        def get(stub: TallyAsyncStub) -> Awaitable[tally_pb2.PetitionTally]:
            return stub.GetTally(tally_pb2.GetTallyRequest(petition_id=petition), timeout=self._timeout)

        return tally_view(await self._tally.call(get))

    # Public reads carry no credential: the petitions service then shows
    # published petitions only, so one cached answer is right for everyone.

    async def _read_petition(self, petition: str) -> CachedJson:
        def get(stub: PetitionsAsyncStub) -> Awaitable[petition_pb2.Petition]:
            return stub.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition), timeout=self._timeout)

        return strong_json(to_json(await self._petitions.call(get)))

    async def _read_listing(self, listing: Listing) -> CachedJson:
        def get(stub: PetitionsAsyncStub) -> Awaitable[petitions_pb2.ListPetitionsResponse]:
            return stub.ListPetitions(list_request(listing), timeout=self._timeout)

        return strong_json(to_json(await self._petitions.call(get)))

    async def _read_registry(self, registry: str) -> CachedJson:
        if registry == "types":

            def types(stub: PetitionsAsyncStub) -> Awaitable[petitions_pb2.ListPetitionTypesResponse]:
                return stub.ListPetitionTypes(petitions_pb2.ListPetitionTypesRequest(), timeout=self._timeout)

            return strong_json(to_json(await self._petitions.call(types)))

        def committees(stub: PetitionsAsyncStub) -> Awaitable[petitions_pb2.ListCommitteesResponse]:
            return stub.ListCommittees(petitions_pb2.ListCommitteesRequest(), timeout=self._timeout)

        return strong_json(to_json(await self._petitions.call(committees)))

    # Handlers

    async def list_petitions(self, request: web.Request) -> web.Response:
        listing = listing_of(request)
        cached = await within(self._deadline(request), self._listings.get(listing))
        return cached_answer(request, cached, self._settings.catalogue_max_age_seconds)

    async def get_petition(self, request: web.Request) -> web.Response:
        petition = petition_id(request)
        cached = await within(self._deadline(request), self._petition_reads.get(petition))
        return cached_answer(request, cached, self._settings.catalogue_max_age_seconds)

    async def petition_types(self, request: web.Request) -> web.Response:
        cached = await within(self._deadline(request), self._registries.get("types"))
        return cached_answer(request, cached, self._settings.catalogue_max_age_seconds)

    async def committees(self, request: web.Request) -> web.Response:
        cached = await within(self._deadline(request), self._registries.get("committees"))
        return cached_answer(request, cached, self._settings.catalogue_max_age_seconds)

    async def get_tally(self, request: web.Request) -> web.Response:
        petition = petition_id(request)
        view = await within(self._deadline(request), self._tallies.get(petition))
        return cached_answer(request, view.json, self._settings.tally_max_age_seconds)

    async def open_data(self, request: web.Request) -> web.Response:
        petition = petition_id(request)
        view = await within(self._deadline(request), self._tallies.get(petition))
        form = request.match_info["format"]
        if form == "csv":
            body, content_type = open_data.to_csv([view.tally]), "text/csv"
        else:
            body, content_type = open_data.to_json([view.tally]), "application/json"
        # The same counts in another representation: the tally's weak ETag,
        # told apart by the format.
        document = CachedJson(body.encode(), f'{view.json.etag[:-1]}-{form}"')
        name = f"petition-{petition}-signatures.{form}"
        return cached_answer(
            request,
            document,
            self._settings.tally_max_age_seconds,
            content_type=content_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def sign(self, request: web.Request) -> web.Response:
        petition = petition_id(request)
        body = await json_object(request, {"idempotency_key": Field(MAX_IDEMPOTENCY_KEY, required=False)})
        credential = credential_of(request)
        key = self._idempotency_key(request, body.get("idempotency_key"))
        budget = deadline(request, self._settings.sign_timeout_seconds)
        sign_request = signing_pb2.SignRequest(
            credential=credential, petition_id=petition, idempotency_key=key, client_ip=request[CLIENT_IP]
        )

        def sign(stub: SigningAsyncStub) -> Awaitable[signing_pb2.SignResponse]:
            return stub.Sign(sign_request, timeout=budget.remaining())

        # Shielded: a browser that goes away must not cancel a signature
        # half-way through Kafka; a retry with its key gets this answer.
        receipt = await finish_even_if_abandoned(self._signing.call(sign))
        # Where Kafka stored it is for audits, not for browsers.
        receipt.ClearField("position")
        return web.json_response(to_json(receipt), headers={"Cache-Control": "no-store"})

    def _idempotency_key(self, request: web.Request, from_body: str | None) -> str:
        from_header = request.headers.get(IDEMPOTENCY_HEADER)
        if from_header is not None and from_body is not None and from_header != from_body:
            raise invalid("idempotency_key", f"differs from the {IDEMPOTENCY_HEADER} header")
        key = from_header if from_header is not None else from_body
        if key is None:
            return uuid.uuid4().hex
        # Signing checks the exact rule; this keeps bytes protobuf cannot carry away from it.
        if not key.isascii() or not key.isprintable() or len(key) > MAX_IDEMPOTENCY_KEY:
            raise invalid("idempotency_key", "must be 8 to 128 printable ASCII characters without spaces")
        return key

    async def live_tally(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the tally now, then each change."""
        petition = petition_id(request)
        first_within = self._deadline(request).remaining()
        async with self._live.subscribe(petition, first_within) as subscription:
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            # The browser left: the subscription ends with this block.
            with contextlib.suppress(ConnectionResetError):
                await self._stream(response, subscription)
        return response

    async def _stream(self, response: web.StreamResponse, subscription: Subscription) -> None:
        await response.write(f"retry: {self._settings.live_retry_ms}\n\n".encode() + subscription.first.frame)
        while True:
            try:
                async with asyncio.timeout(self._settings.live_heartbeat_seconds):
                    event = await subscription.next()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(event.frame)
            if event.final:
                return

    def _deadline(self, request: web.Request) -> Deadline:
        return deadline(request, self._settings.request_timeout_seconds)
