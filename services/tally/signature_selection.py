"""Which stored signatures a moderation selection names (pure: no store).

The tally owns the signatures table, so the rule that picks signatures from
it lives here; signing asks for the result (SelectSignatures) and publishes
the invalidations."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from servicekit.errors import invalid
from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE

# Used with fullmatch (whole strings only; `$` would let "...\n" through).
SIGNER = re.compile(r"\A[0-9a-f]{64}\Z")
IP_HASH = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_SIGNERS = 10_000


@dataclass(frozen=True)
class StoredSignature:
    signer: str
    ip_hash: str
    signed_at: float
    invalidated: bool


@dataclass(frozen=True)
class SignatureQuery:
    """By signers, by IP hash and by a time window [signed_after,
    signed_before): a signature matching any of the three is selected."""

    petition_id: str
    signers: tuple[str, ...] = ()
    ip_hash: str = ""
    signed_after: float | None = None
    signed_before: float | None = None

    def validate(self) -> None:
        """Raises INVALID_ARGUMENT naming the first wrong field."""
        if not PETITION_ID.fullmatch(self.petition_id):
            raise invalid("petition_id", PETITION_ID_RULE)
        if len(self.signers) > MAX_SIGNERS:
            raise invalid("signers", f"at most {MAX_SIGNERS} per request")
        for index, signer in enumerate(self.signers):
            if not SIGNER.fullmatch(signer):
                raise invalid(f"signers[{index}]", "is not a signer pseudonym (64 hex digits)")
        if self.ip_hash and not IP_HASH.fullmatch(self.ip_hash):
            raise invalid("ip_hash", "is not an IP hash (32 hex digits)")
        if (self.signed_after is None) != (self.signed_before is None):
            raise invalid("signed_before", "a time window needs both signed_after and signed_before")
        if self.signed_after is not None and self.signed_before is not None and self.signed_after >= self.signed_before:
            raise invalid("signed_before", "must be after signed_after")
        if not self.signers and not self.ip_hash and self.signed_after is None:
            raise invalid("signers", "give signers, an ip_hash or a time window")

    @cached_property
    def _signer_set(self) -> frozenset[str]:
        # Up to MAX_SIGNERS, tested against every stored row.
        return frozenset(self.signers)

    def matches(self, stored: StoredSignature) -> bool:
        # An invalidated signature is never selected again: invalidating it
        # twice would be harmless, but its count left already.
        if stored.invalidated:
            return False
        if stored.signer in self._signer_set:
            return True
        if self.ip_hash and stored.ip_hash == self.ip_hash:
            return True
        return (
            self.signed_after is not None
            and self.signed_before is not None
            and self.signed_after <= stored.signed_at < self.signed_before
        )


def select(query: SignatureQuery, stored: Iterable[StoredSignature]) -> list[StoredSignature]:
    """The stored signatures the query names, by signer (one per signer:
    the table holds one row per signer and petition)."""
    return sorted((s for s in stored if query.matches(s)), key=lambda s: s.signer)
