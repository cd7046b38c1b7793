"""The petitions service's gRPC wiring, and its one factory.

`create_server(settings)` builds the whole service from async context
managers composed on one AsyncExitStack (Cassandra session, prepared store,
Kafka producer, identity's keys, background loops, the gRPC server): each
part is ready when it is entered, and shutdown unwinds them in reverse order
by construction (the server drains first, the session closes last).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
import structlog

from petitions.v1 import petition_pb2, petitions_pb2, petitions_pb2_grpc
from servicekit import role_credentials
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.grpc_server import ServiceServer
from servicekit.identity_keys import identity_keys
from servicekit.lifecycle import FactoryApp, RunningServer, background_tasks, run_service, serving
from servicekit.stores import cassandra_session, kafka_producer
from services.petitions import committees, content, lifecycle, types
from services.petitions.admissibility import Admissibility
from services.petitions.auth import Callers
from services.petitions.authoring import Authoring
from services.petitions.changes import SYSTEM_ACTOR, Changes, now_timestamp, proto_state, state_of
from services.petitions.committee_work import CommitteeWork
from services.petitions.paging import page_of_messages
from services.petitions.parts import Parts, RpcGroup
from services.petitions.publication import Publication
from services.petitions.settings import PetitionsSettings
from services.petitions.store import PetitionRecords, open_records
from services.petitions.type_rules import type_message

Context = grpc.aio.ServicerContext[Any, Any]
log = structlog.get_logger()


class PetitionsServicer(RpcGroup, petitions_pb2_grpc.PetitionsServicer):
    """gRPC in, domain calls out: each group of RPCs lives in its own module
    (authoring.py: authors and sponsors; admissibility.py: moderators and the
    legislature; committee_work.py: clerks), this class only routes."""

    def __init__(self, parts: Parts):
        super().__init__(parts)
        self._authoring = Authoring(parts)
        self._admissibility = Admissibility(parts)
        self._committee_work = CommitteeWork(parts)

    # authors and sponsors (authoring.py)

    async def CreateDraft(self, request: petitions_pb2.CreateDraftRequest, context: Context) -> petition_pb2.Petition:
        return await self._authoring.create_draft(request, context.invocation_metadata())

    async def UpdateDraft(self, request: petitions_pb2.UpdateDraftRequest, context: Context) -> petition_pb2.Petition:
        return await self._authoring.update_draft(request, context.invocation_metadata())

    async def SubmitPetition(
        self, request: petitions_pb2.SubmitPetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._authoring.submit(request, context.invocation_metadata())

    async def SponsorPetition(
        self, request: petitions_pb2.SponsorPetitionRequest, context: Context
    ) -> petitions_pb2.SponsorPetitionResponse:
        return await self._authoring.sponsor(request, context.invocation_metadata())

    # moderators and the legislature (admissibility.py)

    async def ReviewPetition(
        self, request: petitions_pb2.ReviewPetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._admissibility.review(request, context.invocation_metadata())

    async def CloseLegislature(
        self, request: petitions_pb2.CloseLegislatureRequest, context: Context
    ) -> petitions_pb2.CloseLegislatureResponse:
        return await self._admissibility.close_legislature(request, context.invocation_metadata())

    # clerks (committee_work.py)

    async def SuggestCommittee(
        self, request: petitions_pb2.SuggestCommitteeRequest, context: Context
    ) -> petitions_pb2.SuggestCommitteeResponse:
        return await self._committee_work.suggest(request, context.invocation_metadata())

    async def AssignCommittee(
        self, request: petitions_pb2.AssignCommitteeRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._committee_work.assign(request, context.invocation_metadata())

    async def NameRapporteur(
        self, request: petitions_pb2.NameRapporteurRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._committee_work.name_rapporteur(request, context.invocation_metadata())

    async def ClassPetition(
        self, request: petitions_pb2.ClassPetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._committee_work.class_petition(request, context.invocation_metadata())

    async def RecordOutcome(
        self, request: petitions_pb2.RecordOutcomeRequest, context: Context
    ) -> petition_pb2.Petition:
        return await self._committee_work.record_outcome(request, context.invocation_metadata())

    # administrators

    async def CreatePetition(
        self, request: petitions_pb2.CreatePetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        actor = await self._callers.staff(
            context.invocation_metadata(), lifecycle.Action.CREATE, role_credentials.ADMINISTRATOR
        )
        now = time.time()
        type_id = request.type or self._catalogue.default_type
        if type_id not in self._catalogue.types:
            raise DomainError(ErrorKind.NOT_FOUND, "UNKNOWN_TYPE", f"type: no petition type {type_id!r}")
        for field in ("author", "author_name", "rapporteur"):
            content.check_line(field, getattr(request, field))
        if request.committee and request.committee not in self._committees:
            raise DomainError(
                ErrorKind.NOT_FOUND, "UNKNOWN_COMMITTEE", f"committee: no committee {request.committee!r}"
            )
        content.check_text("text", request.text)
        content.check_countries(list(request.eligibility.countries))
        if request.HasField("closes_at"):
            starts = request.opens_at.ToNanoseconds() / 1e9 if request.HasField("opens_at") else now
            if request.closes_at.ToNanoseconds() / 1e9 <= starts:
                raise invalid("closes_at", "must be after opens_at and in the future")
        petition = petition_pb2.Petition(
            id=content.petition_id_of(request.id),
            title=content.title_of(request.title),
            text=request.text,
            author=request.author,
            author_name=request.author_name,
            state=proto_state(lifecycle.State.OPEN if request.open else lifecycle.State.DRAFT),
            thresholds=content.check_thresholds(list(request.thresholds)),
            committee=request.committee,
            rapporteur=request.rapporteur,
            # The operator's exact tool: the eligibility and thresholds are
            # the request's (unset = anyone may sign), not the type's.
            eligibility=request.eligibility,
            type=type_id,
            legislature=await self._records.current_legislature(self._settings.legislature),
            sponsors_required=self._catalogue.types[type_id].sponsors_required,
        )
        if request.HasField("opens_at"):
            petition.opens_at.CopyFrom(request.opens_at)
        if request.HasField("closes_at"):
            petition.closes_at.CopyFrom(request.closes_at)
        if request.open:
            petition.decided_at.CopyFrom(now_timestamp(now))
        if request.committee:
            # An imported assignment starts the history, so a later
            # reassignment or rapporteur has an entry to follow.
            petition.assignments.append(
                petition_pb2.CommitteeAssignment(
                    committee=request.committee,
                    rapporteur=request.rapporteur,
                    assigned_by=actor.id,
                    note="set at creation",
                    assigned_at=now_timestamp(now),
                )
            )
        return await self._changes.create(petition, actor)

    async def ClosePetition(
        self, request: petitions_pb2.ClosePetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        actor = await self._callers.staff(
            context.invocation_metadata(),
            lifecycle.Action.CLOSE,
            role_credentials.CLERK,
            role_credentials.ADMINISTRATOR,
        )
        content.check_petition_id(request.petition_id)
        content.check_text("reason", request.reason, content.MAX_REASON)

        def close(petition: petition_pb2.Petition) -> None:
            petition.closed_reason = request.reason

        return await self._changes.apply(
            request.petition_id,
            lifecycle.Action.CLOSE,
            actor,
            close,
            expected_version=request.expected_version,
            reason=request.reason,
        )

    # reads

    async def GetPetition(self, request: petitions_pb2.GetPetitionRequest, context: Context) -> petition_pb2.Petition:
        content.check_petition_id(request.petition_id)
        petition = await self._changes.read(request.petition_id)
        if not await self._may_see(petition, context):
            # Unpublished petitions are not confirmed to exist.
            raise DomainError(
                ErrorKind.NOT_FOUND, "PETITION_NOT_FOUND", f"petition {request.petition_id!r} does not exist"
            )
        if await self._callers.optional_staff(context.invocation_metadata()) is None:
            return self._public(petition)
        return petition

    async def ListPetitions(
        self, request: petitions_pb2.ListPetitionsRequest, context: Context
    ) -> petitions_pb2.ListPetitionsResponse:
        staff = await self._callers.optional_staff(context.invocation_metadata())
        petitions = [
            stored.petition
            for stored in await self._records.all()
            if (staff is not None or lifecycle.is_public(state_of(stored.petition)))
            and (not request.state or stored.petition.state == request.state)
            and (not request.type or stored.petition.type == request.type)
            and (not request.committee or stored.petition.committee == request.committee)
            and (not request.legislature or stored.petition.legislature == request.legislature)
        ]
        page, next_token = page_of_messages(petitions, request.page_size, request.page_token)
        if staff is None:
            page = [self._public(petition) for petition in page]
        return petitions_pb2.ListPetitionsResponse(petitions=page, next_page_token=next_token)

    async def GetAuditTrail(
        self, request: petitions_pb2.GetAuditTrailRequest, context: Context
    ) -> petitions_pb2.GetAuditTrailResponse:
        await self._callers.staff(
            context.invocation_metadata(),
            None,
            role_credentials.MODERATOR,
            role_credentials.CLERK,
            role_credentials.ADMINISTRATOR,
        )
        if request.petition_id:
            content.check_petition_id(request.petition_id)
            await self._changes.read(request.petition_id)
            entries = await self._records.audit_of(request.petition_id)
        else:
            entries = sorted(
                await self._records.whole_audit(),
                key=lambda e: (e.at.ToNanoseconds(), e.petition_id, e.version),
                reverse=True,
            )
        return petitions_pb2.GetAuditTrailResponse(entries=entries)

    async def ListPetitionTypes(
        self, request: petitions_pb2.ListPetitionTypesRequest, context: Context
    ) -> petitions_pb2.ListPetitionTypesResponse:
        return petitions_pb2.ListPetitionTypesResponse(
            types=[type_message(t) for t in self._catalogue.types.values()],
            default_type=self._catalogue.default_type,
            current_legislature=await self._records.current_legislature(self._settings.legislature),
            rejection_reasons=[
                petitions_pb2.RejectionReason(code=r.code, label=r.label)
                for r in self._catalogue.rejection_reasons.values()
            ],
        )

    async def ListCommittees(
        self, request: petitions_pb2.ListCommitteesRequest, context: Context
    ) -> petitions_pb2.ListCommitteesResponse:
        return petitions_pb2.ListCommitteesResponse(
            committees=[petitions_pb2.Committee(id=c.id, name=c.name) for c in self._committees.values()]
        )

    def _public(self, petition: petition_pb2.Petition) -> petition_pb2.Petition:
        """What the public sees: a petition rejected for a reason that hides
        it (libellous, offensive, confidential…) keeps its id, state and
        rejection, but neither its title nor its text (the UK's rule)."""
        rejection = petition.rejection
        reason = self._catalogue.rejection_reasons.get(rejection.reason_code)
        # Archived with the rest of its legislature, it stays hidden.
        if reason is None or not reason.hides_petition:
            return petition
        hidden = petition_pb2.Petition()
        hidden.CopyFrom(petition)
        hidden.title = f"Removed: {reason.label}"
        hidden.text = ""
        return hidden

    async def _may_see(self, petition: petition_pb2.Petition, context: Context) -> bool:
        if lifecycle.is_public(state_of(petition)):
            return True
        metadata = context.invocation_metadata()
        if await self._callers.optional_staff(metadata) is not None:
            return True
        author = await self._callers.optional_author(metadata)
        return author is not None and author.author == petition.author


async def close_at_deadlines(records: PetitionRecords, changes: Changes, interval_seconds: float) -> None:
    """Closes open petitions whose deadline has passed. Every process runs
    it; the conditional write lets one of them win each close. A round that
    fails on a store (a Cassandra read at LOCAL_QUORUM timing out while a
    node has just died, Kafka away) is logged and tried again at the next
    interval: the loop is background work, and its death would stop the
    service (servicekit.lifecycle)."""
    while True:
        try:
            await _close_due(records, changes)
        except Exception as error:
            log.warning("deadline check failed; trying again", error=repr(error))
        await asyncio.sleep(interval_seconds)


async def _close_due(records: PetitionRecords, changes: Changes) -> None:
    now = time.time()
    for stored in await records.all():
        petition = stored.petition
        if (
            state_of(petition) is lifecycle.State.OPEN
            and petition.HasField("closes_at")
            and petition.closes_at.ToNanoseconds() / 1e9 <= now
        ):
            try:
                await changes.apply(petition.id, lifecycle.Action.CLOSE, SYSTEM_ACTOR, reason="deadline")
            except DomainError as refused:
                # Another process closed it first, or staff moved it on.
                log.info("deadline close skipped", petition=petition.id, reason=refused.reason)


@asynccontextmanager
async def create_server(settings: PetitionsSettings) -> AsyncIterator[RunningServer]:
    """The petitions service, serving on settings.grpc_address (port 0 in
    tests: the yielded port says which)."""
    catalogue = types.load_catalogue(settings.types_file)
    registry = dict(committees.load_committees(settings.committees_file))
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(cassandra_session(settings))
        records = await stack.enter_async_context(open_records(db))
        producer = await stack.enter_async_context(kafka_producer(settings))
        keys = await stack.enter_async_context(identity_keys(settings.identity_address))
        publication = Publication(
            records,
            producer,
            settings.petition_events_topic,
            settings.petition_state_topic,
            settings.publish_timeout_seconds,
        )
        changes = Changes(records, publication, settings.max_change_attempts)
        # Whatever a crash left unpublished goes out before new changes.
        await publication.sweep(0)
        background = await stack.enter_async_context(background_tasks())
        background.start(close_at_deadlines(records, changes, settings.deadline_check_seconds), "close-at-deadline")
        background.start(publication.run_sweeper(settings.outbox_retry_seconds), "outbox-sweeper")
        server = ServiceServer([petitions_pb2.DESCRIPTOR.services_by_name["Petitions"].full_name], settings)
        petitions_pb2_grpc.add_PetitionsServicer_to_server(
            PetitionsServicer(Parts(settings, records, changes, Callers(keys), catalogue, registry)), server.server
        )
        # Entered last, so it stops first: RPCs drain before the stores close.
        await stack.enter_async_context(serving(server, settings.grace_seconds))
        yield RunningServer(server.port, background)


def main() -> None:
    settings = PetitionsSettings()
    asyncio.run(run_service("petitions", settings, lambda: FactoryApp(lambda: create_server(settings))))
