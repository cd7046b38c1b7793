"""Verification of OpenID Connect ID tokens from configured providers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from services.identity.metrics import JWKS_FETCHES
from services.identity.settings import IssuerConfig


class DocumentFetcher(Protocol):
    """Fetches a JSON document over HTTPS (HTTP for the local dev provider)."""

    async def fetch_json(self, url: str) -> dict[str, Any]: ...


class MalformedIdToken(Exception):
    """The text is not a compact JWS with a JSON claims set at all: a bug of
    the caller (or of its provider), which no retry or sign-in can fix."""


class IdTokenRejected(Exception):
    """A well-formed ID token that is forged, expired or not meant for us."""


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys could not be fetched."""


# RFC 7515 (2, 7.1): each part is base64url without padding, so a part is
# only these characters, and never one character more than a multiple of 4.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# OpenID Connect Core (2): sub is at most 255 ASCII characters. Printable
# ones only, not blank at either end: an empty or blank subject would make
# everyone who has one the same person, and no NUL can slip into the
# pseudonym's NUL-joined input.
_SUBJECT = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")


@dataclass(frozen=True)
class CompactJws:
    """A token that has the shape of a signed JWT; nothing in it is checked yet."""

    token: str
    header: dict[str, Any]
    claims: dict[str, Any]


def parse_compact_jws(token: str) -> CompactJws:
    """The header and claims of a compact JWS (RFC 7515 7.1), or
    MalformedIdToken saying why the text is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        noun = "part" if len(parts) == 1 else "parts"
        hint = " (a JWE? only signed ID tokens are accepted)" if len(parts) == 5 else ""
        raise MalformedIdToken(f"is not a compact JWS (3 parts separated by dots): it has {len(parts)} {noun}{hint}")
    if not parts[0] or not parts[1]:
        raise MalformedIdToken("is not a compact JWS: its header or claims part is empty")
    if any(not _BASE64URL.fullmatch(part) or len(part) % 4 == 1 for part in parts):
        raise MalformedIdToken("is not a compact JWS: a part is not unpadded base64url")
    return CompactJws(token, _json_object(parts[0], "header"), _json_object(parts[1], "claims"))


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    # RecursionError: deeply nested arrays fit in a token of allowed length.
    except (binascii.Error, ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise MalformedIdToken(f"is not a JWT: its {what} part is not a JSON object")
    return value


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
        # One provider can be trusted twice, under two client registrations
        # (audiences): FranceConnect's anonymous button for signing and its
        # identified one for authors and staff are one issuer.
        self._issuers: dict[str, list[IssuerConfig]] = {}
        for config in issuers:
            self._issuers.setdefault(config.issuer, []).append(config)
        self._fetcher = fetcher
        self._refetch_interval = refetch_interval
        self._cache_seconds = cache_seconds
        self._leeway = leeway_seconds
        self._keys = {i.issuer: _IssuerKeys() for i in issuers}

    async def verify(self, jws: CompactJws, nonce: str = "") -> VerifiedIdToken:
        """The token's claims once it has passed every check, or
        IdTokenRejected. nonce is the one the caller's sign-in sent, or ""."""
        issuer = _configuration_for(self._issuers.get(str(jws.claims.get("iss")), []), jws.claims)
        if issuer is None:
            raise IdTokenRejected(f"issuer {jws.claims.get('iss')!r} is not trusted")
        algorithm = str(jws.header.get("alg"))
        # The accepted algorithms come from our configuration, never from the
        # token: this is what stops "none" and HS256-keyed-with-the-public-key.
        if algorithm not in issuer.algorithms:
            raise IdTokenRejected(f"ID token algorithm {algorithm!r} is not accepted for this issuer")
        key = await self._key(issuer, str(jws.header.get("kid")), algorithm)
        try:
            claims = jwt.decode(
                jws.token,
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
        if not isinstance(claims["sub"], str) or not _SUBJECT.fullmatch(claims["sub"]):
            raise IdTokenRejected("ID token sub (subject) must be 1 to 255 printable ASCII characters")
        _check_authorized_party(claims, issuer.audience)
        _check_nonce(claims, nonce)
        return VerifiedIdToken(issuer=issuer, subject=claims["sub"], claims=claims)

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


def _check_authorized_party(claims: dict[str, Any], client_id: str) -> None:
    """OpenID Connect Core 3.1.3.7 (4, 5): a token for several audiences
    must name the party it was issued to, and whenever azp is there it must
    be us, or a token obtained by another client could be spent here."""
    audience = claims["aud"]
    several = isinstance(audience, list) and len(audience) > 1
    if "azp" not in claims:
        if several:
            raise IdTokenRejected("ID token has several audiences but no azp (authorized party)")
        return
    if claims["azp"] != client_id:
        raise IdTokenRejected(f"ID token azp (authorized party) {claims['azp']!r} is not this client")


def _check_nonce(claims: dict[str, Any], nonce: str) -> None:
    """A token bound to a nonce is spent only with it, and a caller that sent
    a nonce (the gateway's code flow always does) accepts only a token bound
    to it: a token lifted from another sign-in, or minted outside this one,
    buys nothing."""
    bound = claims.get("nonce")
    if bound is None and not nonce:
        return
    if bound is None:
        raise IdTokenRejected("ID token has no nonce, but this sign-in sent one")
    if not nonce:
        raise IdTokenRejected("ID token is bound to a nonce: the nonce of its sign-in is required")
    if not isinstance(bound, str) or not hmac.compare_digest(bound.encode(), nonce.encode()):
        raise IdTokenRejected("ID token nonce does not match")


def _configuration_for(configs: list[IssuerConfig], claims: Mapping[str, Any]) -> IssuerConfig | None:
    """The configuration of the client registration a token was issued to:
    the one its authorized party (azp) names, else the one among its
    audiences, else the first (whose audience check then refuses it). The
    claims are not verified yet; the choice only decides which checks run."""
    if not configs:
        return None
    audience = claims.get("aud")
    audiences = set(audience) if isinstance(audience, list) else {audience}
    for config in configs:
        if claims.get("azp") == config.audience:
            return config
    for config in configs:
        if config.audience in audiences:
            return config
    return configs[0]
