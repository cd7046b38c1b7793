"""Invalidating signatures (moderation): select them, then publish one
SignatureInvalidated per signer, keyed like the signer's signature so that it
lands in the same partition, after it; the tally applies each exactly once.

Signers named in the request are invalidated as given (stored or not: an
invalidation that arrives first is kept and wins). A selection by IP hash or
time window is asked of the tally, which owns the stored signatures
(SelectSignatures, services/tally/signature_selection.py for the rule)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.signature_selection import check_selection
from servicekit.text import has_control_characters
from services.signing.publisher import Overloaded, PublishFailed, SignaturePublisher, signature_key

MAX_REASON = 500


@dataclass(frozen=True)
class Selection:
    petition_id: str
    signers: tuple[str, ...]
    reason: str
    ip_hash: str = ""
    signed_after: float | None = None
    signed_before: float | None = None

    def validate(self) -> None:
        """Raises INVALID_ARGUMENT naming the first wrong field."""
        check_selection(self.petition_id, self.signers, self.ip_hash, self.signed_after, self.signed_before)
        if not self.reason.strip() or len(self.reason) > MAX_REASON:
            raise invalid("reason", f"is required, at most {MAX_REASON} characters")
        if has_control_characters(self.reason, multiline=True):
            raise invalid("reason", "must not contain control characters other than line feeds and tabs")


# The signers of the stored signatures not yet invalidated that the
# selection's IP hash or time window names, asked with the administrator's
# credential.
StoredSigners = Callable[[Selection, str], Awaitable[list[str]]]


class SignatureModeration:
    def __init__(self, stored: StoredSigners, publisher: SignaturePublisher):
        self._stored = stored
        self._publisher = publisher

    async def invalidate(self, selection: Selection, credential: str, decided_by: tuple[str, str]) -> int:
        """credential: the administrator's staff credential, forwarded to
        the tally when the stored signatures are asked for; decided_by: that
        administrator's pseudonym and name, recorded in every event."""
        selection.validate()
        chosen = set(selection.signers)
        if selection.ip_hash or selection.signed_after is not None:
            # The named signers are chosen already: the tally is asked only
            # for what the IP hash or window selects.
            chosen.update(await self._stored(replace(selection, signers=()), credential))
        now = Timestamp()
        now.FromNanoseconds(time.time_ns())
        for signer in sorted(chosen):
            event = events_pb2.SignatureEvent(
                invalidated=events_pb2.SignatureInvalidated(
                    petition_id=selection.petition_id,
                    signer=signer,
                    reason=selection.reason,
                    invalidated_at=now,
                    invalidated_by=decided_by[0],
                    invalidated_by_name=decided_by[1],
                )
            )
            try:
                await self._publisher.publish(signature_key(selection.petition_id, signer), event)
            except (PublishFailed, Overloaded) as error:
                raise DomainError(
                    ErrorKind.UNAVAILABLE,
                    "BROKER_UNAVAILABLE",
                    f"{error}; the request can be repeated safely",
                    retry_after_seconds=2,
                ) from None
        return len(chosen)
