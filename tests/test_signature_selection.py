"""The tally's rule for which stored signatures a moderation selection names
(services/tally/signature_selection.py): pure, no stack."""

from __future__ import annotations

import pytest

from servicekit.errors import DomainError
from services.tally.signature_selection import SignatureQuery, StoredSignature, select

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
IP_1, IP_2 = "1" * 32, "2" * 32
STORED = [
    StoredSignature(signer=C, ip_hash=IP_2, signed_at=300.0, invalidated=False),
    StoredSignature(signer=A, ip_hash=IP_1, signed_at=100.0, invalidated=False),
    StoredSignature(signer=B, ip_hash=IP_1, signed_at=200.0, invalidated=False),
    # Already invalidated: never selected again, whatever names it.
    StoredSignature(signer=D, ip_hash=IP_1, signed_at=150.0, invalidated=True),
]


def signers(query: SignatureQuery) -> list[str]:
    query.validate()
    return [s.signer for s in select(query, STORED)]


def test_by_signers_only_stored_and_valid_ones_sorted() -> None:
    assert signers(SignatureQuery("p-1", signers=(C, A, D, "e" * 64))) == [A, C]


def test_by_ip_hash() -> None:
    assert signers(SignatureQuery("p-1", ip_hash=IP_1)) == [A, B]
    assert signers(SignatureQuery("p-1", ip_hash="9" * 32)) == []


def test_by_window_is_half_open() -> None:
    assert signers(SignatureQuery("p-1", signed_after=100.0, signed_before=200.0)) == [A]
    assert signers(SignatureQuery("p-1", signed_after=100.0, signed_before=300.5)) == [A, B, C]


def test_any_selector_that_matches_selects() -> None:
    query = SignatureQuery("p-1", signers=(C,), ip_hash=IP_1, signed_after=0.0, signed_before=1.0)
    assert signers(query) == [A, B, C]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (SignatureQuery("p-1"), "signers"),
        (SignatureQuery("p 1", signers=(A,)), "petition_id"),
        (SignatureQuery("p-1", signers=(A + "\n",)), "signers[0]"),
        (SignatureQuery("p-1", signers=(A, "A" * 64)), "signers[1]"),
        (SignatureQuery("p-1", ip_hash=IP_1 + "\n"), "ip_hash"),
        (SignatureQuery("p-1", signed_after=1.0), "signed_before"),
        (SignatureQuery("p-1", signed_after=2.0, signed_before=2.0), "signed_before"),
        (SignatureQuery("p-1", signers=(A,) * 10_001), "signers"),
    ],
)
def test_refused_selections_name_their_field(query: SignatureQuery, field: str) -> None:
    with pytest.raises(DomainError) as raised:
        query.validate()
    assert (raised.value.kind.value, [v.field for v in raised.value.violations]) == ("INVALID_ARGUMENT", [field])
