"""Fetching providers' discovery documents and key sets over HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp


class HttpDocumentFetcher:
    """A DocumentFetcher on one aiohttp session, with a short timeout so a slow
    provider fails a sign-in instead of hanging it."""

    def __init__(self, timeout_seconds: float = 5.0):
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("HttpDocumentFetcher.start() was not awaited")
        try:
            async with self._session.get(url) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
        except aiohttp.ClientError as error:
            raise OSError(f"GET {url}: {error}") from error
        if not isinstance(document, dict):
            raise ValueError(f"GET {url}: not a JSON object")
        return document
