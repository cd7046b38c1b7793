"""Where the load tests' made-up signers live.

Its own module, so the Locust workers (locustfile.py) take it without
bench_tally's drivers of the tally's internals.
"""

from __future__ import annotations

import random
from itertools import accumulate

DEPARTEMENTS = [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]
ABROAD = ["BE", "CH", "GB", "DE", "ES", "US", "CA", "MA", "IT", "LU"]
ABROAD_SHARE = 0.035


class Population:
    """Where the made-up signers live: départements with a Zipf-like skew
    (the most populous about 40 times the least, as in France), and a few
    percent abroad, who have a country but no territory."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)
        self._territories = list(DEPARTEMENTS)
        self._rng.shuffle(self._territories)
        self._cumulative = list(accumulate(rank**-0.8 for rank in range(1, len(self._territories) + 1)))

    def place(self) -> tuple[str, str]:
        """(country, territory) of the next signer."""
        if self._rng.random() < ABROAD_SHARE:
            return self._rng.choice(ABROAD), ""
        return "FR", self._rng.choices(self._territories, cum_weights=self._cumulative)[0]
