"""The valid territory codes, from the reference data shipped with the
project (`servicekit/data/territories_fr.csv`: INSEE's Code officiel
géographique, millésime 2026; its source and date are in the README beside
it).

A territory is what a signer declares or a provider asserts, what the tally
counts by, and what a territorial threshold counts: one list for all three,
read once per process, so a code identity accepts is always one the tally
counts and open data can name.
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources
from types import MappingProxyType
from typing import Final

DATA_FILE: Final = "territories_fr.csv"


@functools.cache
def _names() -> MappingProxyType[str, str]:
    text = resources.files("servicekit").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    names = {row["code"]: row["name"] for row in rows}
    # A duplicated or blank row is a broken data file, not something to
    # paper over at run time.
    if len(names) != len(rows) or not all(code and name for code, name in names.items()):
        raise ValueError(f"{DATA_FILE}: every row needs a distinct code and a name")
    return MappingProxyType(names)


def is_valid(code: str) -> bool:
    """True when code is exactly one of the reference codes (case and all:
    "2A", never "2a"; "75", never "75\\n")."""
    return code in _names()


def name_of(code: str) -> str:
    """The French name of a valid code; "" for anything else."""
    return _names().get(code, "")


def codes() -> tuple[str, ...]:
    """Every valid code, in the data file's order."""
    return tuple(_names())
