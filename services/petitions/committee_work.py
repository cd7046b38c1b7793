"""Clerks' work: committee suggestion and assignment, rapporteur,
classement, outcomes (a helper fills this in)."""

from __future__ import annotations

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit.errors import not_yet_available
from services.petitions import committees, types
from services.petitions.auth import Callers, Metadata
from services.petitions.changes import Changes
from services.petitions.settings import PetitionsSettings
from services.petitions.store import PetitionRecords


class CommitteeWork:
    def __init__(
        self,
        settings: PetitionsSettings,
        records: PetitionRecords,
        changes: Changes,
        callers: Callers,
        catalogue: types.Catalogue,
        registry: dict[str, committees.Committee],
    ):
        self._settings = settings
        self._records = records
        self._changes = changes
        self._callers = callers
        self._catalogue = catalogue
        self._committees = registry

    async def suggest(
        self, request: petitions_pb2.SuggestCommitteeRequest, metadata: Metadata
    ) -> petitions_pb2.SuggestCommitteeResponse:
        raise not_yet_available("SuggestCommittee")

    async def assign(self, request: petitions_pb2.AssignCommitteeRequest, metadata: Metadata) -> petition_pb2.Petition:
        raise not_yet_available("AssignCommittee")

    async def name_rapporteur(
        self, request: petitions_pb2.NameRapporteurRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        raise not_yet_available("NameRapporteur")

    async def class_petition(
        self, request: petitions_pb2.ClassPetitionRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        raise not_yet_available("ClassPetition")

    async def record_outcome(
        self, request: petitions_pb2.RecordOutcomeRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        raise not_yet_available("RecordOutcome")
