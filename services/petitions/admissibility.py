"""Moderators' admissibility decisions, and the end of a legislature.

A moderator opens a SUBMITTED petition (signing starts now, for the type's
period) or rejects it with a configured reason code, a public explanation
and, for a duplicate, the published petition it duplicates. Each decision is
one Changes.apply: two moderators deciding at once cannot both win, the
second is told the state the first left.

An administrator ends a legislature: the current one is moved first (new
deposits go to the next one), then every petition of the ending legislature
is closed if open and archived. The successor is recorded before the move,
so a repeat of the same call after a crash (the legislature already moved)
finishes the archive instead of being refused.
"""

from __future__ import annotations

import asyncio
import time

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit import role_credentials
from servicekit.errors import DomainError, ErrorKind, invalid
from services.petitions import content, lifecycle
from services.petitions.auth import Metadata
from services.petitions.changes import Actor, now_timestamp, state_of
from services.petitions.parts import RpcGroup

Decision = petitions_pb2.ReviewPetitionRequest.Decision
END_OF_LEGISLATURE = "end of legislature"
# Petitions of an ending legislature closed and archived at once.
_ARCHIVE_CONCURRENCY = 16
# Moves of one petition tried while it keeps changing under the archive.
_ARCHIVE_ROUNDS = 10


def _legislature_not_current(legislature: str, current: str) -> DomainError:
    return DomainError(
        ErrorKind.FAILED_PRECONDITION,
        "LEGISLATURE_NOT_CURRENT",
        f"legislature {legislature!r} is not the current one: the current legislature is {current!r}",
    )


class Admissibility(RpcGroup):
    async def review(self, request: petitions_pb2.ReviewPetitionRequest, metadata: Metadata) -> petition_pb2.Petition:
        action = {
            petitions_pb2.ReviewPetitionRequest.DECISION_OPEN: lifecycle.Action.OPEN,
            petitions_pb2.ReviewPetitionRequest.DECISION_REJECT: lifecycle.Action.REJECT,
        }.get(request.decision)
        # Both decisions are a moderator's: the role is checked before the
        # request says anything about the petition.
        actor = await self._callers.staff(metadata, action or lifecycle.Action.OPEN, role_credentials.MODERATOR)
        if action is None:
            raise invalid("decision", "must be DECISION_OPEN or DECISION_REJECT")
        content.check_petition_id(request.petition_id)
        if action is lifecycle.Action.OPEN:
            if request.HasField("rejection"):
                raise invalid("rejection", "is given only with DECISION_REJECT")
            return await self._open(request, actor)
        return await self._reject(request, actor)

    async def _open(self, request: petitions_pb2.ReviewPetitionRequest, actor: Actor) -> petition_pb2.Petition:
        now = time.time()

        def opened(petition: petition_pb2.Petition) -> None:
            petition_type = self._catalogue.types.get(petition.type)
            if petition_type is None:
                raise DomainError(
                    ErrorKind.NOT_FOUND,
                    "UNKNOWN_TYPE",
                    f"petition {petition.id!r} is of type {petition.type!r}, which the configuration no longer has",
                )
            petition.opens_at.CopyFrom(now_timestamp(now))
            closes_at = petition_type.closes_at(now)
            if closes_at is None:
                # Open until the end of its legislature.
                petition.ClearField("closes_at")
            else:
                petition.closes_at.CopyFrom(now_timestamp(closes_at))
            petition.decided_at.CopyFrom(now_timestamp(now))

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.OPEN,
            actor,
            opened,
            expected_version=request.expected_version,
        )

    async def _reject(self, request: petitions_pb2.ReviewPetitionRequest, actor: Actor) -> petition_pb2.Petition:
        if not request.HasField("rejection"):
            raise invalid("rejection", "is required with DECISION_REJECT (reason_code and explanation)")
        given = request.rejection
        reason = self._catalogue.rejection_reasons.get(given.reason_code)
        if reason is None:
            raise DomainError(
                ErrorKind.NOT_FOUND,
                "UNKNOWN_REASON",
                f"rejection.reason_code: no rejection reason {given.reason_code!r}"
                " (ListPetitionTypes lists the reasons)",
            )
        explanation = content.required_paragraph("rejection.explanation", given.explanation)
        if reason.needs_duplicate_of:
            await self._check_duplicate_of(request.petition_id, given.duplicate_of)
        elif given.duplicate_of:
            raise invalid("rejection.duplicate_of", f"is given only for a duplicate, not for {reason.code!r}")
        rejection = petition_pb2.Rejection(
            reason_code=reason.code, explanation=explanation, duplicate_of=given.duplicate_of
        )
        now = now_timestamp(time.time())

        def rejected(petition: petition_pb2.Petition) -> None:
            petition.rejection.CopyFrom(rejection)
            petition.decided_at.CopyFrom(now)

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.REJECT,
            actor,
            rejected,
            expected_version=request.expected_version,
            reason=reason.code,
        )

    async def _check_duplicate_of(self, petition_id: str, duplicate_of: str) -> None:
        field = "rejection.duplicate_of"
        if not duplicate_of:
            raise invalid(field, "is required for a duplicate: the published petition it duplicates")
        content.check_petition_id(duplicate_of, field)
        if duplicate_of == petition_id:
            raise invalid(field, "must name another petition than the one rejected")
        original = await self._records.get(duplicate_of)
        # The public is pointed to it: it must be one they can see.
        if original is None or not lifecycle.is_public(state_of(original.petition)):
            raise invalid(field, f"names no published petition: {duplicate_of!r}")

    async def close_legislature(
        self, request: petitions_pb2.CloseLegislatureRequest, metadata: Metadata
    ) -> petitions_pb2.CloseLegislatureResponse:
        actor = await self._callers.staff(metadata, lifecycle.Action.ARCHIVE, role_credentials.ADMINISTRATOR)
        ending, beginning = request.legislature, request.next_legislature
        content.check_legislature("legislature", ending)
        content.check_legislature("next_legislature", beginning)
        if ending == beginning:
            raise invalid("next_legislature", "must be another legislature than the one that ends")
        current = await self._records.current_legislature(self._settings.legislature)
        if ending == current:
            await self._move_legislature(ending, beginning)
        elif not (beginning == current and await self._records.successor_of(ending) == current):
            # Only a repeat of the call that ended `ending` (it is on record
            # as followed by the current one) may name a legislature that
            # is not the current one.
            raise _legislature_not_current(ending, current)
        closed, archived = await self._archive_legislature(ending, actor)
        return petitions_pb2.CloseLegislatureResponse(closed=closed, archived=archived)

    async def _move_legislature(self, ending: str, beginning: str) -> None:
        if await self._records.successor_of(beginning) is not None:
            raise invalid("next_legislature", f"legislature {beginning!r} has already ended: name a new one")
        recorded = await self._records.record_successor(ending, beginning)
        if recorded != beginning:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                "LEGISLATURE_CLOSING",
                f"legislature {ending!r} is being closed into {recorded!r}: repeat the call with"
                f" next_legislature {recorded!r}",
            )
        if not await self._records.change_legislature(ending, beginning):
            now_current = await self._records.current_legislature(self._settings.legislature)
            # A concurrent identical call moved it: the archive goes on.
            if now_current != beginning:
                raise _legislature_not_current(ending, now_current)

    async def _archive_legislature(self, legislature: str, actor: Actor) -> tuple[int, int]:
        pending = [
            stored.petition.id
            for stored in await self._records.all()
            if stored.petition.legislature == legislature and not lifecycle.is_final(state_of(stored.petition))
        ]
        gate = asyncio.Semaphore(_ARCHIVE_CONCURRENCY)

        async def archive(petition_id: str) -> tuple[int, int]:
            async with gate:
                return await self._archive(petition_id, actor)

        done = await asyncio.gather(*(archive(petition_id) for petition_id in pending))
        return sum(c for c, _ in done), sum(a for _, a in done)

    async def _archive(self, petition_id: str, actor: Actor) -> tuple[int, int]:
        """Closes (if open) and archives one petition; (closed, archived) by
        this call. Whatever moves it meanwhile (a deadline close, a
        moderator opening it) is met by deciding again on the new state."""
        closed = 0
        for _ in range(_ARCHIVE_ROUNDS):
            state = state_of(await self._changes.read(petition_id))
            if lifecycle.is_final(state):
                return closed, 0
            action = lifecycle.Action.CLOSE if state is lifecycle.State.OPEN else lifecycle.Action.ARCHIVE

            def end(petition: petition_pb2.Petition, action: lifecycle.Action = action) -> None:
                if action is lifecycle.Action.CLOSE:
                    petition.closed_reason = END_OF_LEGISLATURE

            try:
                await self._changes.apply(petition_id, action, actor, end, reason=END_OF_LEGISLATURE)
            except DomainError as refused:
                if refused.reason not in ("ILLEGAL_TRANSITION", "VERSION_CONFLICT"):
                    raise
                continue
            if action is lifecycle.Action.ARCHIVE:
                return closed, 1
            closed += 1
        raise DomainError(
            ErrorKind.UNAVAILABLE,
            "ARCHIVE_CONTENTION",
            f"petition {petition_id!r} kept changing while it was archived; repeat the call to finish",
            retry_after_seconds=1.0,
        )
