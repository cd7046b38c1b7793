"""Every change to a petition, made the same way: read, decide with the pure
state machine (lifecycle.py), write once conditionally on the version read,
record, publish.

A conditional write that loses (someone changed the petition in between)
re-reads and decides again on what is there now: a second moderator's
decision on a petition the first one just opened is then refused by the
state machine, naming the state it found (FAILED_PRECONDITION), and changes
nothing. A caller that named the version it decided on (expected_version)
gets VERSION_CONFLICT instead of a decision on a state it has not seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit.errors import DomainError, ErrorKind
from services.petitions import lifecycle
from services.petitions.metric_defs import CHANGE_CONFLICTS, CHANGES, OUTBOX_FINISHED
from services.petitions.publication import Publication
from services.petitions.store import PetitionRecords

SYSTEM = "system"
# A change's own process publishes it within moments (two Kafka sends, each
# bounded by the publish timeout); an entry still in the outbox after this
# long was left by a process that crashed or could not publish.
SETTLE_AFTER_SECONDS = 10.0
_SETTLE_POLL_SECONDS = 0.05
# Fields whose change is not news in the audit trail.
_UNAUDITED = frozenset({"version", "updatedAt"})


@dataclass(frozen=True)
class Actor:
    """Who makes a change, as the audit trail records it."""

    id: str  # staff or author pseudonym, or "system"
    name: str  # a staff member's name; empty otherwise
    role: lifecycle.Actor


SYSTEM_ACTOR = Actor(SYSTEM, "", lifecycle.Actor.SYSTEM)


def state_of(petition: petition_pb2.Petition) -> lifecycle.State:
    return lifecycle.State[petition_pb2.PetitionState.Name(petition.state).removeprefix("PETITION_STATE_")]


def proto_state(state: lifecycle.State) -> petition_pb2.PetitionState.ValueType:
    return petition_pb2.PetitionState.Value(f"PETITION_STATE_{state.name}")


def petition_not_found(petition_id: str) -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, "PETITION_NOT_FOUND", f"petition {petition_id!r} does not exist")


def now_timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def audit_entry(
    before: petition_pb2.Petition | None,
    after: petition_pb2.Petition,
    action: lifecycle.Action,
    actor: Actor,
    reason: str,
) -> petitions_pb2.AuditEntry:
    """What changed, field by field, as text (the proto3 JSON of each field)."""
    old = json_format.MessageToDict(before) if before is not None else {}
    new = json_format.MessageToDict(after)
    changed = sorted(k for k in old.keys() | new.keys() if k not in _UNAUDITED and old.get(k) != new.get(k))
    return petitions_pb2.AuditEntry(
        petition_id=after.id,
        version=after.version,
        actor=actor.id,
        actor_name=actor.name,
        role=actor.role.value,
        action=action.value,
        state_before=before.state if before is not None else petition_pb2.PETITION_STATE_UNSPECIFIED,
        state_after=after.state,
        reason=reason,
        before={k: json.dumps(old[k], ensure_ascii=False) for k in changed if k in old},
        after={k: json.dumps(new[k], ensure_ascii=False) for k in changed if k in new},
        at=after.updated_at,
    )


class Changes:
    def __init__(
        self,
        records: PetitionRecords,
        publication: Publication,
        max_attempts: int,
        clock: Callable[[], float] = time.time,
    ):
        self._records = records
        self._publication = publication
        self._max_attempts = max_attempts
        self._clock = clock

    async def read(self, petition_id: str) -> petition_pb2.Petition:
        stored = await self._records.get(petition_id)
        if stored is None:
            raise petition_not_found(petition_id)
        return stored.petition

    async def _settled(self, petition_id: str) -> petition_pb2.Petition:
        """The petition once its latest change is published. The next
        change's entry replaces that one in the row's outbox, so an entry a
        crashed process left there would never reach the audit trail or
        petition-events: a live writer's publication is waited for (it takes
        moments), one left longer than SETTLE_AFTER_SECONDS is finished here."""
        while True:
            stored = await self._records.get(petition_id)
            if stored is None:
                raise petition_not_found(petition_id)
            pending = stored.outbox
            if pending is None or pending.version != stored.petition.version:
                return stored.petition
            if self._clock() - pending.at.ToNanoseconds() / 1e9 < SETTLE_AFTER_SECONDS:
                await asyncio.sleep(_SETTLE_POLL_SECONDS)
                continue
            if not await self._publication.finish(stored.petition, pending):
                raise DomainError(
                    ErrorKind.UNAVAILABLE,
                    "PUBLICATION_PENDING",
                    f"petition {petition_id!r}: its previous change is not published yet; nothing was changed, retry",
                    retry_after_seconds=1.0,
                )
            OUTBOX_FINISHED.inc()
            return stored.petition

    async def create(self, petition: petition_pb2.Petition, actor: Actor, reason: str = "") -> petition_pb2.Petition:
        """Inserts a new petition (version 1) and publishes its creation."""
        now = now_timestamp(self._clock())
        petition.version = 1
        petition.created_at.CopyFrom(now)
        petition.updated_at.CopyFrom(now)
        entry = audit_entry(None, petition, lifecycle.Action.CREATE, actor, reason)
        if not await self._records.create(petition, entry):
            raise DomainError(ErrorKind.ALREADY_EXISTS, "PETITION_EXISTS", f"petition {petition.id!r} already exists")
        CHANGES.labels(lifecycle.Action.CREATE.value, actor.role.value).inc()
        await self._publication.finish(petition, entry)
        return petition

    async def apply(
        self,
        petition_id: str,
        action: lifecycle.Action,
        actor: Actor,
        change: Callable[[petition_pb2.Petition], None] | None = None,
        *,
        expected_version: int = 0,
        reason: str = "",
        needs_sponsors: bool = False,
    ) -> petition_pb2.Petition:
        """Moves the petition by action, with change applied to a copy (it
        may raise a DomainError to refuse); the one conditional write."""
        for _ in range(self._max_attempts):
            current = await self._settled(petition_id)
            if expected_version and current.version != expected_version:
                raise DomainError(
                    ErrorKind.FAILED_PRECONDITION,
                    "VERSION_CONFLICT",
                    f"petition {petition_id!r} is at version {current.version}, not {expected_version}: read it again",
                )
            try:
                target = lifecycle.next_state(state_of(current), action, needs_sponsors=needs_sponsors)
            except lifecycle.IllegalTransition as refused:
                raise DomainError(
                    ErrorKind.FAILED_PRECONDITION, "ILLEGAL_TRANSITION", f"petition {petition_id!r}: {refused}"
                ) from None
            updated = petition_pb2.Petition()
            updated.CopyFrom(current)
            if change is not None:
                change(updated)
            updated.state = proto_state(target)
            updated.version = current.version + 1
            updated.updated_at.CopyFrom(now_timestamp(self._clock()))
            entry = audit_entry(current, updated, action, actor, reason)
            if await self._records.change(updated, entry, current.version):
                CHANGES.labels(action.value, actor.role.value).inc()
                await self._publication.finish(updated, entry)
                return updated
            CHANGE_CONFLICTS.inc()
        raise DomainError(
            ErrorKind.FAILED_PRECONDITION,
            "VERSION_CONFLICT",
            f"petition {petition_id!r} kept changing while this change was decided; try again",
        )
