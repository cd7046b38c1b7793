"""The thresholds' rule, pure: which thresholds a petition's totals cross.

Apart from the Cassandra record and the Kafka announcement (thresholds.py)
and the Redis counters (counters.py), so the rule with legal effect can be
read, and tested, with no store: the import contract "pure-domain" in
pyproject.toml keeps grpc, aiokafka, redis and cassandra out of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from servicekit.territories import is_valid as is_territory


@dataclass(frozen=True)
class Totals:
    total: int
    by_territory: dict[str, int]
    by_country: dict[str, int]

    @property
    def territories(self) -> int:
        """Territories with at least one valid signature that are real
        territories (servicekit.territories): a counter may hold codes that
        are none, e.g. "20" let through before identity checked the reference
        list, and those must not help a petition to a rule with legal effect."""
        return sum(1 for code, count in self.by_territory.items() if count > 0 and is_territory(code))


def totals_of(fields: Mapping[str, int]) -> Totals:
    """Totals from counter fields: total, t:<territory>, c:<country>."""
    return Totals(
        total=fields.get("total", 0),
        by_territory={k[2:]: v for k, v in fields.items() if k.startswith("t:") and v},
        by_country={k[2:]: v for k, v in fields.items() if k.startswith("c:") and v},
    )


class Threshold(Protocol):
    """What a threshold rule needs (the petition view's ViewThreshold)."""

    @property
    def id(self) -> str: ...

    @property
    def signatures(self) -> int: ...

    @property
    def min_territories(self) -> int: ...


T = TypeVar("T", bound=Threshold)


@dataclass(frozen=True)
class Crossing:
    petition_id: str
    threshold_id: str
    count: int
    territories: int
    reached_at: float


def crossed(thresholds: Iterable[T], totals: Totals, already: set[str]) -> list[T]:
    """The thresholds these totals satisfy that were not reached before. A
    territorial rule (e.g. 500,000 from at least 30 départements) needs both
    conditions at once."""
    return [
        t
        for t in thresholds
        if t.id not in already and totals.total >= t.signatures and totals.territories >= t.min_territories
    ]
