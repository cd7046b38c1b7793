"""The fields of a moderation selection (which signatures of a petition to
invalidate), checked the same way by signing, which receives
InvalidateSignatures, and by the tally, which answers SelectSignatures."""

from __future__ import annotations

import re
from collections.abc import Sequence

from servicekit.errors import invalid
from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE

# Used with fullmatch (whole strings only; `$` would let "...\n" through).
SIGNER = re.compile(r"\A[0-9a-f]{64}\Z")
IP_HASH = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_SIGNERS = 10_000


def check_selection(
    petition_id: str,
    signers: Sequence[str],
    ip_hash: str,
    signed_after: float | None,
    signed_before: float | None,
) -> None:
    """Raises INVALID_ARGUMENT naming the first wrong field: signers, an IP
    hash or a whole time window [signed_after, signed_before), at least one."""
    if not PETITION_ID.fullmatch(petition_id):
        raise invalid("petition_id", PETITION_ID_RULE)
    if len(signers) > MAX_SIGNERS:
        raise invalid("signers", f"at most {MAX_SIGNERS} per request")
    for index, signer in enumerate(signers):
        if not SIGNER.fullmatch(signer):
            raise invalid(f"signers[{index}]", "is not a signer pseudonym (64 hex digits)")
    if ip_hash and not IP_HASH.fullmatch(ip_hash):
        raise invalid("ip_hash", "is not an IP hash (32 hex digits)")
    if (signed_after is None) != (signed_before is None):
        raise invalid("signed_before", "a time window needs both signed_after and signed_before")
    if signed_after is not None and signed_before is not None and signed_after >= signed_before:
        raise invalid("signed_before", "must be after signed_after")
    if not signers and not ip_hash and signed_after is None:
        raise invalid("signers", "give signers, an ip_hash or a time window")
