"""Answers a CDN and browsers may keep: rendered once per cache interval,
with an ETag so a revalidation costs a 304 and no body.

When a petition goes viral, most requests are people refreshing the same
counter. A short public max-age lets a CDN absorb them; behind it, the
gateway's coalescing cache makes the whole process cost tally one GetTally
per petition per interval.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class CachedJson:
    body: bytes
    etag: str


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def strong_json(document: Any) -> CachedJson:
    """A JSON body whose ETag changes with any byte of it."""
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return CachedJson(body, f'"{_digest(body)}"')


def weak_json(document: Any, meaning: Message) -> CachedJson:
    """A JSON body whose ETag follows only `meaning` (e.g. the counts without
    the time they were read): a weak ETag says two bodies are equivalent,
    not identical, so an unchanged counter revalidates with a 304."""
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return CachedJson(body, f'W/"{_digest(meaning.SerializeToString(deterministic=True))}"')


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return _opaque(etag) in {_opaque(tag) for tag in if_none_match.split(",")}


def cache_control(max_age_seconds: int) -> str:
    return f"public, max-age={max_age_seconds}"


def cached_answer(
    request: web.Request,
    cached: CachedJson,
    max_age_seconds: int,
    *,
    content_type: str = JSON_CONTENT_TYPE,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """200 with the body, or 304 when the client holds this version."""
    common = {"ETag": cached.etag, "Cache-Control": cache_control(max_age_seconds), **(headers or {})}
    if etag_matches(request.headers.get("If-None-Match"), cached.etag):
        return web.Response(status=304, headers=common)
    return web.Response(body=cached.body, content_type=content_type, charset="utf-8", headers=common)
