"""Verification of OpenID Connect ID tokens from configured providers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from services.identity.metrics import JWKS_FETCHES
from services.identity.settings import IssuerConfig


class DocumentFetcher(Protocol):
    """Fetches a JSON document over HTTPS (HTTP for the local dev provider)."""

    async def fetch_json(self, url: str) -> dict[str, Any]: ...


class IdTokenRejected(Exception):
    """The ID token is malformed, forged, expired or not meant for us."""


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys could not be fetched."""


@dataclass(frozen=True)
class VerifiedIdToken:
    issuer: IssuerConfig
    subject: str
    claims: dict[str, Any]


@dataclass
class _IssuerKeys:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class IdTokenVerifier:
    """Checks ID tokens against each issuer's JWKS, fetched through discovery,
    cached, and refetched (at most once per interval) on an unknown kid so that
    a provider's key rotation is picked up without a restart."""

    def __init__(
        self,
        issuers: tuple[IssuerConfig, ...],
        fetcher: DocumentFetcher,
        *,
        refetch_interval: float,
        cache_seconds: float,
        leeway_seconds: int,
    ):
        self._issuers = {i.issuer: i for i in issuers}
        self._fetcher = fetcher
        self._refetch_interval = refetch_interval
        self._cache_seconds = cache_seconds
        self._leeway = leeway_seconds
        self._keys = {i.issuer: _IssuerKeys() for i in issuers}

    async def verify(self, token: str, nonce: str = "") -> VerifiedIdToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise IdTokenRejected(f"malformed ID token: {error}") from None
        issuer = self._issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise IdTokenRejected(f"issuer {unverified.get('iss')!r} is not trusted")
        algorithm = str(header.get("alg"))
        # The accepted algorithms come from our configuration, never from the
        # token: this is what stops "none" and HS256-keyed-with-the-public-key.
        if algorithm not in issuer.algorithms:
            raise IdTokenRejected(f"ID token algorithm {algorithm!r} is not accepted for this issuer")
        key = await self._key(issuer, str(header.get("kid")), algorithm)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise IdTokenRejected("ID token has expired") from None
        except jwt.ImmatureSignatureError:
            raise IdTokenRejected("ID token is not valid yet") from None
        except jwt.PyJWTError as error:
            raise IdTokenRejected(f"ID token rejected: {error}") from None
        if float(claims["iat"]) > time.time() + self._leeway:
            raise IdTokenRejected("ID token was issued in the future")
        if nonce and claims.get("nonce") != nonce:
            raise IdTokenRejected("ID token nonce does not match")
        return VerifiedIdToken(issuer=issuer, subject=str(claims["sub"]), claims=claims)

    async def _key(self, issuer: IssuerConfig, kid: str, algorithm: str) -> jwt.PyJWK:
        cache = self._keys[issuer.issuer]
        stale = time.monotonic() - cache.fetched_at > self._cache_seconds
        if kid not in cache.keys or stale:
            await self._refresh(issuer, cache)
        key = cache.keys.get(kid)
        if key is None:
            raise IdTokenRejected(f"ID token signed by unknown key {kid!r}")
        if key.algorithm_name != algorithm:
            raise IdTokenRejected(f"key {kid!r} is not a {algorithm} key")
        return key

    async def _refresh(self, issuer: IssuerConfig, cache: _IssuerKeys) -> None:
        async with cache.lock:
            if time.monotonic() - cache.fetched_at < self._refetch_interval:
                return
            try:
                discovery = await self._fetcher.fetch_json(issuer.discovery)
                jwks = await self._fetcher.fetch_json(str(discovery["jwks_uri"]))
            except (TimeoutError, KeyError, OSError, ValueError) as error:
                JWKS_FETCHES.labels(issuer.issuer, "failed").inc()
                raise ProviderUnavailable(f"cannot fetch keys of {issuer.issuer}: {error!r}") from error
            JWKS_FETCHES.labels(issuer.issuer, "fetched").inc()
            keys: dict[str, jwt.PyJWK] = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                    continue
                try:
                    parsed = jwt.PyJWK(jwk)
                except jwt.PyJWTError:
                    continue  # a key type we do not support cannot sign tokens we accept
                keys[str(jwk["kid"])] = parsed
            cache.keys = keys
            cache.fetched_at = time.monotonic()
