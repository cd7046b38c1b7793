"""Public open data: a petition's counts by territory and by country, as JSON
and as CSV, in one stable shape for every publisher: the CLI's export and
the gateway's download endpoint. In servicekit because both render it and
neither may import the other's code (nor the tally's).

Counts are what the live tally served at `as_of`; rows are sorted so two
exports of the same counts are byte-identical. Each territory carries its
French name from the reference list (servicekit.territories), so a reader
needs no other table; a counted code that is no territory (a "20" counted
before identity checked the list) is published as counted, its name empty.
Countries have no name (no list of them ships with the project).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from petitions.v1 import tally_pb2
from servicekit import territories

CSV_COLUMNS = ("petition_id", "as_of", "scope", "code", "name", "signatures")


def _instant(stamp: Any) -> str:
    return str(stamp.ToJsonString())


def as_record(tally: tally_pb2.PetitionTally) -> dict[str, Any]:
    """The JSON document of one petition's counts."""
    return {
        "petition_id": tally.petition_id,
        "as_of": _instant(tally.as_of),
        "total": tally.total,
        "by_territory": [
            {"code": c, "name": territories.name_of(c), "signatures": n} for c, n in sorted(tally.by_territory.items())
        ],
        "by_country": [{"code": c, "signatures": n} for c, n in sorted(tally.by_country.items())],
        "thresholds_reached": [
            {"threshold_id": t.threshold_id, "count": t.count, "reached_at": _instant(t.reached_at)}
            for t in tally.thresholds_reached
        ],
    }


def to_json(tallies: Iterable[tally_pb2.PetitionTally]) -> str:
    return json.dumps({"petitions": [as_record(t) for t in tallies]}, indent=2, ensure_ascii=False) + "\n"


def to_csv(tallies: Iterable[tally_pb2.PetitionTally]) -> str:
    """One row per (petition, scope, code); scope is total, territory or
    country; name is the territory's, empty on the other rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for tally in tallies:
        as_of = _instant(tally.as_of)
        writer.writerow((tally.petition_id, as_of, "total", "", "", tally.total))
        for code, signatures in sorted(tally.by_territory.items()):
            writer.writerow((tally.petition_id, as_of, "territory", code, territories.name_of(code), signatures))
        for code, signatures in sorted(tally.by_country.items()):
            writer.writerow((tally.petition_id, as_of, "country", code, "", signatures))
    return out.getvalue()
