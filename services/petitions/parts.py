"""What every group of the petitions service's RPCs works with, built once
by the factory and handed to each group whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.petitions import committees, types
from services.petitions.auth import Callers
from services.petitions.changes import Changes
from services.petitions.settings import PetitionsSettings
from services.petitions.store import PetitionRecords


@dataclass(frozen=True)
class Parts:
    settings: PetitionsSettings
    records: PetitionRecords
    changes: Changes
    callers: Callers
    catalogue: types.Catalogue
    committees: Mapping[str, committees.Committee]


class RpcGroup:
    """Base of authoring, admissibility and committee work (and the
    servicer that routes to them): the parts, under the names they use."""

    def __init__(self, parts: Parts):
        self._parts = parts
        self._settings = parts.settings
        self._records = parts.records
        self._changes = parts.changes
        self._callers = parts.callers
        self._catalogue = parts.catalogue
        self._committees = parts.committees
