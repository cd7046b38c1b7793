"""Authors' drafts and submissions, and sponsors (a helper fills this in)."""

from __future__ import annotations

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit.errors import not_yet_available
from services.petitions import types
from services.petitions.auth import Callers, Metadata
from services.petitions.changes import Changes
from services.petitions.settings import PetitionsSettings
from services.petitions.store import PetitionRecords


class Authoring:
    def __init__(
        self,
        settings: PetitionsSettings,
        records: PetitionRecords,
        changes: Changes,
        callers: Callers,
        catalogue: types.Catalogue,
    ):
        self._settings = settings
        self._records = records
        self._changes = changes
        self._callers = callers
        self._catalogue = catalogue

    async def create_draft(
        self, request: petitions_pb2.CreateDraftRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        raise not_yet_available("CreateDraft")

    async def update_draft(
        self, request: petitions_pb2.UpdateDraftRequest, metadata: Metadata
    ) -> petition_pb2.Petition:
        raise not_yet_available("UpdateDraft")

    async def submit(self, request: petitions_pb2.SubmitPetitionRequest, metadata: Metadata) -> petition_pb2.Petition:
        raise not_yet_available("SubmitPetition")

    async def sponsor(
        self, request: petitions_pb2.SponsorPetitionRequest, metadata: Metadata
    ) -> petitions_pb2.SponsorPetitionResponse:
        raise not_yet_available("SponsorPetition")
