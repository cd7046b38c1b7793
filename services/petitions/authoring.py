"""Authors' drafts and submissions, and sponsors.

An author (an identified adult, by the author credential in the call's
metadata) writes a draft of a known type, edits it while it is a DRAFT, and
submits it: to GATHERING_SPONSORS when the type needs sponsors, else to the
moderators' queue (SUBMITTED). Sponsors are signers (a signer credential in
the request) eligible by the petition's rules, counted once each: the
petition_sponsors row (a conditional insert) says who has already supported
it, and the count on the petition moves by one conditional write on the
version the count was read at, so concurrent sponsors never count twice or
past the number the type needs; the sponsor that completes it moves the
petition to SUBMITTED.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit import role_credentials
from servicekit.errors import DomainError, ErrorKind
from servicekit.signer_credential import VerifiedCredential
from services.petitions import content, lifecycle, type_rules
from services.petitions.auth import Metadata
from services.petitions.changes import SYSTEM_ACTOR, Actor, now_timestamp, petition_not_found, state_of
from services.petitions.eligibility import check_eligible
from services.petitions.parts import RpcGroup

log = structlog.get_logger()

# Each round of counting a sponsor loses only to another sponsor's count
# (or a staff change) that won; this many losses in a row is contention no
# petition should see: the caller retries.
_MAX_SPONSOR_ROUNDS = 100


def _author_actor(claims: role_credentials.AuthorClaims) -> Actor:
    # The audit trail names an author by pseudonym only: the published name
    # is on the petition.
    return Actor(claims.author, "", lifecycle.Actor.AUTHOR)


def _check_own(petition: petition_pb2.Petition, claims: role_credentials.AuthorClaims) -> None:
    if petition.author != claims.author:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED, "NOT_AUTHOR", f"petition {petition.id!r} is another author's petition"
        )


class Authoring(RpcGroup):
    async def create_draft(
        self, request: petitions_pb2.CreateDraftRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        claims = await self._callers.author(metadata)
        type_id = request.type or self._catalogue.default_type
        petition_type = self._catalogue.types.get(type_id)
        if petition_type is None:
            raise DomainError(
                ErrorKind.NOT_FOUND,
                "UNKNOWN_TYPE",
                f"type: no petition type {type_id!r}; the types are {', '.join(sorted(self._catalogue.types))}",
            )
        petition_id = content.petition_id_of(request.id)
        title = content.title_of(request.title)
        content.check_text("text", request.text)
        petition = petition_pb2.Petition(
            id=petition_id,
            title=title,
            text=request.text,
            author=claims.author,
            author_name=claims.display_name,
            state=petition_pb2.PETITION_STATE_DRAFT,
            # The type's rules are copied, so that a later change of the
            # configuration does not move the goalposts of a deposited petition.
            thresholds=type_rules.thresholds_message(petition_type),
            eligibility=type_rules.eligibility_message(petition_type.eligibility),
            type=type_id,
            legislature=await self._records.current_legislature(self._settings.legislature),
            sponsors_required=petition_type.sponsors_required,
        )
        return await self._changes.create(petition, _author_actor(claims))

    async def update_draft(
        self, request: petitions_pb2.UpdateDraftRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        """Replaces the draft's title and text (both, as given)."""
        claims = await self._callers.author(metadata)
        content.check_petition_id(request.petition_id)
        title = content.title_of(request.title)
        content.check_text("text", request.text)
        _check_own(await self._changes.read(request.petition_id), claims)

        def edit(petition: petition_pb2.Petition) -> None:
            _check_own(petition, claims)
            petition.title = title
            petition.text = request.text

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.UPDATE,
            _author_actor(claims),
            edit,
            expected_version=request.expected_version,
        )

    async def submit(self, request: petitions_pb2.SubmitPetitionRequest, metadata: Metadata) -> petition_pb2.Petition:
        claims = await self._callers.author(metadata)
        content.check_petition_id(request.petition_id)
        current = await self._changes.read(request.petition_id)
        _check_own(current, claims)
        now = now_timestamp(time.time())

        def submitted(petition: petition_pb2.Petition) -> None:
            _check_own(petition, claims)
            petition.submitted_at.CopyFrom(now)

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.SUBMIT,
            _author_actor(claims),
            submitted,
            expected_version=request.expected_version,
            # The petition's own number, copied from its type at deposit.
            needs_sponsors=current.sponsors_required > 0,
        )

    async def sponsor(
        self, request: petitions_pb2.SponsorPetitionRequest, metadata: Metadata
    ) -> petitions_pb2.SponsorPetitionResponse:
        """Counts the signer once; `metadata` carries nothing for this call
        (the signer credential travels in the request)."""
        if not request.credential:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED, "CREDENTIAL_REQUIRED", "credential: a signer credential is required"
            )
        content.check_petition_id(request.petition_id)
        verified = await self._signer(request.credential)
        sponsor = verified.claims.signer
        current = await self._changes.read(request.petition_id)
        self._check_may_sponsor(current, verified)
        if not await self._records.add_sponsor(request.petition_id, sponsor, time.time_ns()):
            # Counted once: this person's support is already on record.
            return petitions_pb2.SponsorPetitionResponse(
                counted=False, petition=await self._changes.read(request.petition_id)
            )
        # Shielded: a caller who gives up mid-way (a cancelled RPC) must not
        # cut the count off between its write and the row's fate.
        counted = await asyncio.shield(self._count_or_take_back(request.petition_id, sponsor))
        return petitions_pb2.SponsorPetitionResponse(counted=True, petition=counted)

    async def _count_or_take_back(self, petition_id: str, sponsor: str) -> petition_pb2.Petition:
        try:
            return await self._count_one_more(petition_id)
        except BaseException:
            # Refused (the petition moved on) or failed: the row goes, so
            # that no one stays recorded without being counted, and a retry
            # counts them.
            await self._records.remove_sponsor(petition_id, sponsor)
            raise

    def _check_may_sponsor(self, petition: petition_pb2.Petition, verified: VerifiedCredential) -> None:
        state = state_of(petition)
        if state is lifecycle.State.DRAFT:
            # Unpublished: not confirmed to exist, as in GetPetition.
            raise petition_not_found(petition.id)
        try:
            lifecycle.next_state(state, lifecycle.Action.SPONSOR)
        except lifecycle.IllegalTransition as refused:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                "ILLEGAL_TRANSITION",
                f"petition {petition.id!r}: {refused}; only a petition gathering sponsors takes them",
            ) from None
        if verified.claims.signer == petition.author:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                "AUTHOR_CANNOT_SPONSOR",
                f"petition {petition.id!r}: its author cannot be one of its sponsors",
            )
        check_eligible(petition.eligibility, verified.claims)

    async def _count_one_more(self, petition_id: str) -> petition_pb2.Petition:
        """One more sponsor on the petition, decided on the count read and
        written only on that version: a lost race re-reads the new count."""
        for _ in range(_MAX_SPONSOR_ROUNDS):
            current = await self._changes.read(petition_id)
            count = current.sponsors + 1
            complete = count >= current.sponsors_required
            action = lifecycle.Action.SPONSORS_COMPLETE if complete else lifecycle.Action.SPONSOR

            def bump(petition: petition_pb2.Petition, count: int = count) -> None:
                petition.sponsors = count

            try:
                return await self._changes.apply(
                    petition_id,
                    action,
                    SYSTEM_ACTOR,
                    bump,
                    expected_version=current.version,
                    reason=f"sponsor {count} of {current.sponsors_required}",
                )
            except DomainError as refused:
                if refused.reason != "VERSION_CONFLICT":
                    raise
        raise DomainError(
            ErrorKind.UNAVAILABLE,
            "SPONSOR_CONTENTION",
            f"petition {petition_id!r} changed too often while this sponsor was counted; nothing was counted, retry",
            retry_after_seconds=1.0,
        )

    async def _signer(self, token: str) -> VerifiedCredential:
        """The signer credential; another valid kind is WRONG_ROLE."""
        try:
            return await self._callers.signer(token)
        except DomainError as refused:
            if refused.reason != "CREDENTIAL_REJECTED":
                raise
            as_metadata = (("authorization", f"Bearer {token}"),)
            kind = ""
            if await self._callers.optional_author(as_metadata) is not None:
                kind = "an author"
            else:
                try:
                    if await self._callers.optional_staff(as_metadata) is not None:
                        kind = "a staff"
                except DomainError:
                    pass
            if kind:
                raise DomainError(
                    ErrorKind.PERMISSION_DENIED,
                    "WRONG_ROLE",
                    f"credential: sponsoring needs a signer credential, not {kind} credential",
                ) from None
            raise
