"""Moderators' admissibility decisions and the end of a legislature (a
helper fills this in)."""

from __future__ import annotations

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit.errors import not_yet_available
from services.petitions import types
from services.petitions.auth import Callers, Metadata
from services.petitions.changes import Changes
from services.petitions.settings import PetitionsSettings
from services.petitions.store import PetitionRecords


class Admissibility:
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

    async def review(self, request: petitions_pb2.ReviewPetitionRequest, metadata: Metadata) -> petition_pb2.Petition:
        raise not_yet_available("ReviewPetition")

    async def close_legislature(
        self, request: petitions_pb2.CloseLegislatureRequest, metadata: Metadata
    ) -> petitions_pb2.CloseLegislatureResponse:
        raise not_yet_available("CloseLegislature")
