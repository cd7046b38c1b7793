"""Fetching providers' discovery documents and key sets over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

# A slow provider fails a sign-in instead of hanging it.
DEFAULT_TIMEOUT_SECONDS = 5.0


class HttpDocumentFetcher:
    """A DocumentFetcher on one open aiohttp session; built by open(), which
    closes the session when its block ends."""

    def __init__(self, session: aiohttp.ClientSession):
        self._session = session

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> AsyncIterator[HttpDocumentFetcher]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as session:
            yield cls(session)

    async def fetch_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session.get(url) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
        except aiohttp.ClientError as error:
            raise OSError(f"GET {url}: {error}") from error
        if not isinstance(document, dict):
            raise ValueError(f"GET {url}: not a JSON object")
        return document
