"""The environment that gives a process a set of store settings.

The cluster profile and the tests' namespaces both hand their services the
whole store side of CommonSettings (Kafka login, Sentinel, Cassandra data
centre and replication...) through PETITIONS_* variables: one function, so
a field added to CommonSettings reaches every process without a list to
keep up to date.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from servicekit.settings import BaseProcessSettings, CommonSettings

# The fields of CommonSettings that say where the stores are and how to log
# in to them: everything BaseProcessSettings does not have.
STORE_FIELDS = tuple(name for name in CommonSettings.model_fields if name not in BaseProcessSettings.model_fields)


def settings_env(settings: CommonSettings, *, without: Collection[str] = ()) -> dict[str, str]:
    """PETITIONS_<FIELD> for every store field: tuples as JSON (as
    pydantic-settings reads them), paths as text, unset files left out."""
    env: dict[str, str] = {}
    for name in STORE_FIELDS:
        if name in without:
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        env[f"PETITIONS_{name.upper()}"] = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
    return env
