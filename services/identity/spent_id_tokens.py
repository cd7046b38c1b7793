"""Single use of ID tokens: each one buys one signer credential.

An ID token stays valid for minutes, so without a record of the ones
already exchanged, whoever sees a token (a log, a proxy, a browser history)
could buy credentials with it until it expires. Redis keeps a mark per
exchanged token until the token could no longer verify anyway (its exp plus
the clock-skew leeway), set with SET NX so that of two concurrent exchanges
exactly one wins.

The mark names the token by its jti (scoped to the issuer, which assigns
jtis) or, for a provider that sends none, by the whole token; either way
through an HMAC with a key only identity holds, so Redis holds nothing that
can be matched against a token, a jti or a person.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from services.identity.oidc import VerifiedIdToken

KEY_PREFIX = "idtoken:spent:"
# Separates this use of identity's secret from the pseudonyms and the
# rate-limit keys made with it.
_PURPOSE = b"petitions identity: spent ID tokens"


class SpentTokensUnavailable(Exception):
    """Redis could not say whether the token was used: it is not accepted."""


class SpentIdTokens:
    def __init__(self, redis: aioredis.Redis, secret: bytes, leeway_seconds: int):
        self._redis = redis
        self._key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()
        self._leeway = leeway_seconds

    def mark_of(self, verified: VerifiedIdToken, token: str) -> str:
        """The Redis key that marks this token as spent."""
        jti = verified.claims.get("jti")
        # NUL appears in neither a configured issuer nor the token, so the
        # joins are unambiguous; the first part keeps the two kinds apart.
        if isinstance(jti, str) and jti:
            message = "\x00".join(("jti", verified.issuer.issuer, jti))
        else:
            message = "\x00".join(("token", token))
        # 128 bits: no two tokens in one expiry window share a mark.
        return KEY_PREFIX + hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:32]

    async def spend(self, verified: VerifiedIdToken, token: str) -> str | None:
        """Marks the token spent and returns the mark, or None when it was
        already spent. The mark lasts until the token's exp plus the leeway,
        rounded up: as long as the verifier would accept the token."""
        mark = self.mark_of(verified, token)
        ttl = max(1, math.ceil(float(verified.claims["exp"]) + self._leeway - time.time()))
        try:
            first = await self._redis.set(mark, b"1", nx=True, ex=ttl)
        except RedisError as error:
            raise SpentTokensUnavailable(str(error)) from error
        return mark if first else None

    async def restore(self, mark: str) -> None:
        """Unspends a token whose exchange failed before issuing anything (a
        rate limit, an outage), so that its holder can retry with it. Best
        effort: if Redis fails now, the token stays spent and the person
        signs in again."""
        try:
            await self._redis.delete(mark)
        except RedisError as error:
            structlog.get_logger().warning("spent ID token not restored", error=repr(error))
