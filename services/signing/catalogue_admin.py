"""Creating, opening and closing petitions: validation and state rules."""

from __future__ import annotations

import re
import time
import uuid

from petitions.v1 import signing_pb2
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.text import has_control_characters
from services.catalogue.cache import CachedCatalogue
from services.catalogue.errors import petition_not_found
from services.catalogue.messages import seconds_of
from services.catalogue.model import (
    PETITION_ID,
    PETITION_ID_RULE,
    Eligibility,
    Petition,
    PetitionState,
    Threshold,
)
from services.catalogue.paging import Page, page_of
from services.catalogue.store import PetitionStore
from services.signing.deadlines import PetitionEvents

# Used with fullmatch (whole strings only; `$` would let "FR\n" through).
COUNTRY = re.compile(r"\A[A-Z]{2}\Z")
THRESHOLD_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
MAX_TITLE = 200
MAX_TEXT = 10_000
# Author, committee and threshold labels: one line each.
MAX_LINE = 200

# Which state each admin action moves a petition from and to.
TRANSITIONS = {
    "open": ({PetitionState.DRAFT}, PetitionState.OPEN),
    "close": ({PetitionState.OPEN}, PetitionState.CLOSED),
}


def petition_from_request(request: signing_pb2.CreatePetitionRequest, now: float) -> Petition:
    petition_id = request.id or f"p-{uuid.uuid4().hex[:12]}"
    if not PETITION_ID.fullmatch(petition_id):
        raise invalid("id", PETITION_ID_RULE)
    title = request.title.strip()
    if not title:
        raise invalid("title", "is required")
    if len(title) > MAX_TITLE:
        raise invalid("title", f"is longer than {MAX_TITLE} characters")
    if len(request.text) > MAX_TEXT:
        raise invalid("text", f"is longer than {MAX_TEXT} characters")
    check_line("title", title)
    if has_control_characters(request.text, multiline=True):
        raise invalid("text", "must not contain control characters other than line feeds and tabs")
    check_line("author", request.author)
    check_line("committee", request.committee)
    opens_at = seconds_of(request.opens_at, request.HasField("opens_at"))
    closes_at = seconds_of(request.closes_at, request.HasField("closes_at"))
    if closes_at is not None and closes_at <= (opens_at if opens_at is not None else now):
        raise invalid("closes_at", "must be after opens_at and in the future")
    thresholds = []
    seen: set[str] = set()
    for index, threshold in enumerate(request.thresholds):
        field = f"thresholds[{index}]"
        if not THRESHOLD_ID.fullmatch(threshold.id) or threshold.id in seen:
            raise invalid(f"{field}.id", "must be a unique id of a-z, 0-9 and '-' (up to 32)")
        if threshold.signatures <= 0:
            raise invalid(f"{field}.signatures", "must be positive")
        if threshold.min_territories < 0:
            raise invalid(f"{field}.min_territories", "must not be negative")
        check_line(f"{field}.label", threshold.label)
        seen.add(threshold.id)
        thresholds.append(Threshold(threshold.id, threshold.label, threshold.signatures, threshold.min_territories))
    countries = frozenset(request.eligibility.countries)
    for country in countries:
        if not COUNTRY.fullmatch(country):
            raise invalid("eligibility.countries", f"{country!r} is not an ISO 3166-1 alpha-2 code")
    return Petition(
        id=petition_id,
        title=title,
        text=request.text,
        author=request.author,
        state=PetitionState.OPEN if request.open else PetitionState.DRAFT,
        opens_at=opens_at,
        closes_at=closes_at,
        thresholds=tuple(sorted(thresholds, key=lambda t: t.signatures)),
        committee=request.committee,
        eligibility=Eligibility(countries=countries, adults_only=request.eligibility.adults_only),
        created_at=now,
        updated_at=now,
    )


def check_line(field: str, value: str) -> None:
    """A line of free text: at most MAX_LINE characters, no control character."""
    if len(value) > MAX_LINE:
        raise invalid(field, f"is longer than {MAX_LINE} characters")
    if has_control_characters(value):
        raise invalid(field, "must be one line without control characters")


class CatalogueAdmin:
    def __init__(self, store: PetitionStore, cache: CachedCatalogue, events: PetitionEvents):
        self._store = store
        self._cache = cache
        self._events = events

    async def create(self, request: signing_pb2.CreatePetitionRequest) -> Petition:
        petition = petition_from_request(request, time.time())
        if not await self._store.create(petition):
            raise DomainError(ErrorKind.ALREADY_EXISTS, "PETITION_EXISTS", f"petition {petition.id!r} already exists")
        self._cache.forget(petition.id)
        if petition.state is PetitionState.OPEN:
            await self._events.opened(petition)
        return petition

    async def get(self, petition_id: str) -> Petition:
        if not PETITION_ID.fullmatch(petition_id):
            raise invalid("petition_id", PETITION_ID_RULE)
        petition = await self._store.get(petition_id)
        if petition is None:
            raise petition_not_found(petition_id)
        return petition

    async def transition(self, petition_id: str, action: str) -> Petition:
        allowed_from, target = TRANSITIONS[action]
        petition = await self.get(petition_id)
        if petition.state is target:
            return petition  # repeating an admin action is harmless
        if petition.state not in allowed_from:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                "INVALID_TRANSITION",
                f"cannot {action} petition {petition_id!r}: it is {petition.state.value}",
            )
        changed = await self._store.change_state(petition, target)
        if changed is None:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                "CONCURRENT_CHANGE",
                f"petition {petition_id!r} changed while it was being updated; read it again",
            )
        self._cache.forget(petition_id)
        if target is PetitionState.OPEN:
            await self._events.opened(changed)
        else:
            await self._events.closed(changed)
        return changed

    async def list(self, state: PetitionState | None, page_size: int, page_token: str) -> Page:
        """One page of the petitions (in state, when given), newest first.
        Reads the whole catalogue for each page: a few thousand rows, since
        a petition is one row."""
        petitions = await self._store.list_all()
        return page_of((p for p in petitions if state is None or p.state is state), page_size, page_token)
