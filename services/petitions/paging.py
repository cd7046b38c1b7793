"""Pages of the petition list, newest first.

The token names the last petition of the previous page (its creation time
and id), not an offset: a petition created while a client walks the pages
lands before the first page, so no later page repeats or skips one. A token is only a
position, so a made-up one can do no more than start elsewhere; one that
does not decode is an INVALID_ARGUMENT on page_token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable

from petitions.v1.petition_pb2 import Petition
from servicekit.errors import invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_Position = tuple[float, str]
# What _encode writes: unpadded URL-safe base64.
TOKEN = re.compile(r"\A[A-Za-z0-9_-]+\Z")


def page_of_messages(petitions: Iterable[Petition], page_size: int, page_token: str) -> tuple[list[Petition], str]:
    """The page of petitions after page_token; page_size 0 means the
    default, and a larger one than MAX_PAGE_SIZE is cut down to it."""
    if page_size < 0:
        raise invalid("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    ordered = sorted(petitions, key=_position)
    if page_token:
        after = _decode(page_token)
        ordered = [petition for petition in ordered if _position(petition) > after]
    page = ordered[:size]
    # The next token is empty after the last page.
    return page, _encode(_position(page[-1])) if len(ordered) > size else ""


def _position(petition: Petition) -> _Position:
    # Ascending positions give the newest first.
    return (-petition.created_at.ToNanoseconds() / 1e9, petition.id)


def _encode(position: _Position) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def _decode(token: str) -> _Position:
    """The position a token names. Only a token _encode could have written
    is one: base64's decoder skips characters outside its alphabet (so
    "token\n" and "tok\x00en" decoded like "token"), and JSON allows other
    spellings of the same position."""
    try:
        if TOKEN.fullmatch(token):
            created_at, petition_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if (
                isinstance(created_at, int | float)
                and not isinstance(created_at, bool)
                and math.isfinite(created_at)
                and isinstance(petition_id, str)
                and _encode((created_at, petition_id)) == token
            ):
                return (float(created_at), petition_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise invalid("page_token", "is not a token from an earlier page of this list")
