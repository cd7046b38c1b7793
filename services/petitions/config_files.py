"""Reading the petitions service's configuration files (types, rejection
reasons, committees): strict JSON, and refusals that name the file and the
field, so that a mistake in a file a clerk tuned stops the service at start
with a message saying where, instead of surfacing as a wrong decision later.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn

DATA = Path(__file__).with_name("data")

# Type, threshold, rejection reason and committee ids: they appear in the
# proto, the audit trail, URLs and open data. Matched whole (fullmatch).
ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
ID_RULE = "1 to 32 characters of a-z, 0-9 and '-', not starting with '-'"


class Fields:
    """The JSON object at `where` in `path`, read field by field. Every
    accessor raises ValueError naming the file and the field."""

    def __init__(self, path: Path, where: str, value: object):
        self.path = path
        self.where = where
        if not isinstance(value, dict):
            self.fail("", f"must be an object, got {_kind(value)}")
        self._value: dict[str, Any] = value
        self._read: set[str] = set()

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ValueError(f"{self.path}: {self._name(field)}: {problem}")

    def _name(self, field: str) -> str:
        if not field:
            return self.where or "the document"
        return f"{self.where}.{field}" if self.where else field

    def _get(self, field: str, default: object) -> object:
        self._read.add(field)
        if field in self._value:
            return self._value[field]
        if default is _REQUIRED:
            self.fail(field, "is missing")
        return default

    def string(self, field: str, default: object = None) -> str:
        value = self._get(field, _REQUIRED if default is None else default)
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"must be a non-empty string, got {_show(value)}")
        return value

    def identifier(self, field: str) -> str:
        value = self.string(field)
        if not ID.fullmatch(value):
            self.fail(field, f"must be {ID_RULE}, got {value!r}")
        return value

    def integer(self, field: str, minimum: int, default: int | None = None) -> int:
        value = self._get(field, _REQUIRED if default is None else default)
        # bool is an int in Python; true is no count.
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(field, f"must be an integer of at least {minimum}, got {_show(value)}")
        return value

    def boolean(self, field: str, default: bool | None = None) -> bool:
        value = self._get(field, _REQUIRED if default is None else default)
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, got {_show(value)}")
        return value

    def objects(self, field: str) -> list[Fields]:
        value = self._get(field, _REQUIRED)
        if not isinstance(value, list) or not value:
            self.fail(field, f"must be a non-empty list, got {_show(value)}")
        return [Fields(self.path, f"{self._name(field)}[{i}]", item) for i, item in enumerate(value)]

    def strings(self, field: str, pattern: re.Pattern[str], rule: str) -> frozenset[str]:
        value = self._get(field, [])
        if not isinstance(value, list):
            self.fail(field, f"must be a list, got {_show(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                self.fail(f"{field}[{i}]", f"must be {rule}, got {_show(item)}")
        if len(set(value)) != len(value):
            self.fail(field, "lists a value twice")
        return frozenset(value)

    def mapping(self, field: str, required: bool = True) -> dict[str, Any]:
        value = self._get(field, _REQUIRED if required else {})
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, got {_show(value)}")
        return value

    def field_name(self, field: str) -> str:
        return self._name(field)

    def done(self) -> None:
        """Refuses fields nothing read: a misspelt field would otherwise be
        silently ignored and its default used."""
        unknown = sorted(set(self._value) - self._read)
        if unknown:
            self.fail(unknown[0], "is not a known field")


_REQUIRED = object()


def number(path: Path, where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{path}: {where}: must be a positive number, got {_show(value)}")
    return float(value)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: object) -> str:
    if isinstance(value, dict | list):
        return _kind(value)
    return json.dumps(value, ensure_ascii=False)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # json.loads would keep the last one silently; in a file a person
            # edits, a repeated key is a mistake (two weights for one word).
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(Exception):
    pass


def read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: is not UTF-8: {error}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except _DuplicateKey as error:
        raise ValueError(f"{path}: the key {error.args[0]!r} appears twice in one object") from None
    except _NotJson as error:
        raise ValueError(f"{path}: is not JSON: {error.args[0]} is not a JSON value") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: is not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def _no_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    raise _NotJson(name)


class _NotJson(Exception):
    pass


def unique(path: Path, where: str, ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ValueError(f"{path}: {where}: the {what} {value!r} appears twice")
        seen.add(value)
