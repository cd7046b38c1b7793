"""Which stored signatures a moderation selection names (pure: no store).

The tally owns the signatures table, so the rule that picks signatures from
it lives here; signing asks for the result (SelectSignatures) and publishes
the invalidations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from servicekit.signature_selection import check_selection


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
        check_selection(self.petition_id, self.signers, self.ip_hash, self.signed_after, self.signed_before)

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
