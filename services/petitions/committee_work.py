"""Clerks' work (issue 14, part 6): the committee suggestion, assignment and
reassignment, the rapporteur, classement, and the outcomes of a petition.

Every change goes through Changes.apply, so each is one conditional write on
the version read, one audit entry (role "clerk") and one publication; the
checks that depend on the petition (its committee, its current assignment)
run inside the change callable, on the very copy that is written, so a lost
race decides them again on what is there now. The role is checked before
anything else: a caller without it learns nothing about the petition.
"""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit import role_credentials
from servicekit.errors import DomainError, ErrorKind, invalid
from services.petitions import committees, content, lifecycle
from services.petitions.auth import Metadata
from services.petitions.changes import now_timestamp
from services.petitions.parts import RpcGroup

_OUTCOME_ACTIONS = {
    petition_pb2.Outcome.KIND_RESPONSE: lifecycle.Action.RESPOND,
    petition_pb2.Outcome.KIND_DEBATE: lifecycle.Action.DEBATE,
}
# The range a google.protobuf.Timestamp may hold (0001-01-01 to
# 9999-12-31): outside it the petition could not be written as JSON in its
# audit entry, so such a date is refused up front as a field error.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def no_committee(petition_id: str, action: str) -> DomainError:
    return DomainError(
        ErrorKind.FAILED_PRECONDITION,
        "NO_COMMITTEE",
        f"petition {petition_id!r} is assigned to no committee: assign it before you {action}",
    )


def _required_text(field: str, value: str, limit: int) -> str:
    if not value.strip():
        raise invalid(field, "is required")
    content.check_text(field, value, limit)
    return value


def _check_date(field: str, date: Timestamp) -> None:
    if not _MIN_SECONDS <= date.seconds <= _MAX_SECONDS or not 0 <= date.nanos <= 999_999_999:
        raise invalid(field, "must be a date between the years 1 and 9999")


class CommitteeWork(RpcGroup):
    async def suggest(
        self, request: petitions_pb2.SuggestCommitteeRequest, metadata: Metadata
    ) -> petitions_pb2.SuggestCommitteeResponse:
        """The registry's rules applied to the petition's title and text; a
        proposal only (nothing is written), so any staff role may ask."""
        await self._callers.staff(
            metadata, None, role_credentials.CLERK, role_credentials.MODERATOR, role_credentials.ADMINISTRATOR
        )
        content.check_petition_id(request.petition_id)
        petition = await self._changes.read(request.petition_id)
        return petitions_pb2.SuggestCommitteeResponse(
            suggestions=[
                petitions_pb2.CommitteeSuggestion(committee=s.committee, score=s.score, explanation=list(s.explanation))
                for s in committees.suggest(self._committees, petition.title, petition.text)
            ]
        )

    async def assign(self, request: petitions_pb2.AssignCommitteeRequest, metadata: Metadata) -> petition_pb2.Petition:
        """Assigns (or reassigns) the petition to a committee of the registry,
        appending to its assignment history, which is never rewritten."""
        actor = await self._callers.staff(metadata, lifecycle.Action.ASSIGN, role_credentials.CLERK)
        content.check_petition_id(request.petition_id)
        if not request.committee:
            raise invalid("committee", "is required")
        if request.committee not in self._committees:
            raise DomainError(
                ErrorKind.NOT_FOUND, "UNKNOWN_COMMITTEE", f"committee: no committee {request.committee!r}"
            )
        content.check_line("note", request.note)

        def assign(petition: petition_pb2.Petition) -> None:
            if petition.committee == request.committee:
                raise DomainError(
                    ErrorKind.FAILED_PRECONDITION,
                    "ALREADY_ASSIGNED",
                    f"petition {petition.id!r} is already assigned to {request.committee!r}",
                )
            petition.committee = request.committee
            # The rapporteur was named by the committee the petition leaves.
            petition.rapporteur = ""
            petition.assignments.append(
                petition_pb2.CommitteeAssignment(
                    committee=request.committee,
                    rapporteur="",
                    assigned_by=actor.id,
                    note=request.note,
                    assigned_at=now_timestamp(time.time()),
                )
            )

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.ASSIGN,
            actor,
            assign,
            expected_version=request.expected_version,
            reason=request.note,
        )

    async def name_rapporteur(
        self, request: petitions_pb2.NameRapporteurRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        actor = await self._callers.staff(metadata, lifecycle.Action.RAPPORTEUR, role_credentials.CLERK)
        content.check_petition_id(request.petition_id)
        rapporteur = content.required_line("rapporteur", request.rapporteur)

        def name(petition: petition_pb2.Petition) -> None:
            if not petition.committee:
                raise no_committee(petition.id, "name its rapporteur")
            petition.rapporteur = rapporteur
            # The current assignment says who reports for it; a petition
            # given its committee at creation (an import) has no history.
            if petition.assignments and petition.assignments[-1].committee == petition.committee:
                petition.assignments[-1].rapporteur = rapporteur

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.RAPPORTEUR,
            actor,
            name,
            expected_version=request.expected_version,
        )

    async def class_petition(
        self, request: petitions_pb2.ClassPetitionRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        """OPEN → CLASSED: filed by its committee, which closes signing (the
        new state reaches signing through the petition-state topic)."""
        actor = await self._callers.staff(metadata, lifecycle.Action.CLASS, role_credentials.CLERK)
        content.check_petition_id(request.petition_id)
        reason = _required_text("reason", request.reason, content.MAX_REASON)

        def file(petition: petition_pb2.Petition) -> None:
            if not petition.committee:
                raise no_committee(petition.id, "class it")
            petition.closed_reason = reason

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.CLASS,
            actor,
            file,
            expected_version=request.expected_version,
            reason=reason,
        )

    async def record_outcome(
        self, request: petitions_pb2.RecordOutcomeRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        """Appends a response or a debate; the state machine says where the
        petition goes (an OPEN one stays OPEN, signing goes on)."""
        outcome = request.outcome
        action = _OUTCOME_ACTIONS.get(outcome.kind)
        # The role first, whatever the kind: both outcome actions are the
        # clerk's, so an unspecified kind is checked against either.
        actor = await self._callers.staff(metadata, action or lifecycle.Action.RESPOND, role_credentials.CLERK)
        content.check_petition_id(request.petition_id)
        if action is None:
            raise invalid("outcome.kind", "must be KIND_RESPONSE or KIND_DEBATE")
        if not outcome.HasField("date"):
            raise invalid("outcome.date", "is required")
        _check_date("outcome.date", outcome.date)
        _required_text("outcome.text", outcome.text, content.MAX_TEXT)
        content.check_links("outcome.links", list(outcome.links))
        if outcome.HasField("recorded_at"):
            raise invalid("outcome.recorded_at", "is set by the service; leave it empty")
        recorded = petition_pb2.Outcome(
            kind=outcome.kind,
            date=outcome.date,
            text=outcome.text,
            links=list(outcome.links),
            recorded_at=now_timestamp(time.time()),
        )

        def record(petition: petition_pb2.Petition) -> None:
            petition.outcomes.append(recorded)

        return await self._changes.apply(
            request.petition_id,
            action,
            actor,
            record,
            expected_version=request.expected_version,
        )
