"""A petition as the services see it, independent of storage and gRPC."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# Petition ids appear in URLs, Redis keys and Cassandra partition keys.
# Matched whole (\A…\Z with fullmatch): with .match and `$`, "name\n" passed,
# as Python's `$` also matches before a final newline. The OpenAPI document
# publishes the same rule as PETITION_ID_SCHEMA_PATTERN, in JSON Schema's
# ECMA-262 regexes, where `$` is the end of the string and \A, \Z are not
# anchors at all.
_PETITION_ID_BODY = "[a-z0-9][a-z0-9-]{2,63}"
PETITION_ID = re.compile(rf"\A{_PETITION_ID_BODY}\Z")
PETITION_ID_SCHEMA_PATTERN = f"^{_PETITION_ID_BODY}$"
PETITION_ID_RULE = "must be 3 to 64 characters of a-z, 0-9 and '-'"


class PetitionState(enum.Enum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Threshold:
    id: str
    label: str
    signatures: int
    min_territories: int = 0


@dataclass(frozen=True)
class Eligibility:
    countries: frozenset[str] = frozenset()
    adults_only: bool = False


@dataclass(frozen=True)
class Petition:
    id: str
    title: str
    text: str
    author: str
    state: PetitionState
    # Seconds since the epoch; None means no bound.
    opens_at: float | None
    closes_at: float | None
    thresholds: tuple[Threshold, ...] = ()
    committee: str = ""
    eligibility: Eligibility = field(default_factory=Eligibility)
    created_at: float = 0.0
    updated_at: float = 0.0

    def accepts_signatures_at(self, now: float) -> bool:
        """Open, and inside its opening window."""
        if self.state is not PetitionState.OPEN:
            return False
        if self.opens_at is not None and now < self.opens_at:
            return False
        return self.closes_at is None or now < self.closes_at
