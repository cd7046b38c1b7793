"""Fraud limits: token buckets in Redis, and block lists.

A bucket holds up to `burst` tokens and refills at `per_minute`; each
request takes one. The script reads Redis's own clock, so every identity
process shares one view of time and of each bucket. Keys hold a keyed hash
of the IP, domain or pseudonym, never the value itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

# KEYS[1] = bucket; ARGV = burst, tokens per second.
# Returns {allowed (0|1), milliseconds until one token is available}.
_TAKE = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


class RateLimit(BaseModel):
    """`burst` requests at once, then `per_minute` on average."""

    model_config = ConfigDict(frozen=True)

    burst: int
    per_minute: float


class LimitsUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Refusal:
    scope: str
    retry_after_seconds: float | None
    blocked: bool = False


class FraudLimits:
    def __init__(
        self,
        redis: aioredis.Redis,
        secret: bytes,
        limits: dict[str, RateLimit],
        blocked_domains: frozenset[str],
        blocked_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    ):
        self._redis = redis
        self._secret = secret
        self._limits = limits
        self._blocked_domains = blocked_domains
        self._blocked_networks = blocked_networks
        self._take = redis.register_script(_TAKE)

    def blocked(self, *, ip: str = "", domain: str = "") -> Refusal | None:
        if domain and domain in self._blocked_domains:
            return Refusal("email_domain", None, blocked=True)
        if ip:
            address = ipaddress.ip_address(ip)
            if any(address in network for network in self._blocked_networks):
                return Refusal("ip", None, blocked=True)
        return None

    async def take(self, scope: str, value: str) -> Refusal | None:
        """Takes a token from the bucket of (scope, value); a Refusal when
        it is empty. Scopes without a configured limit are not limited."""
        limit = self._limits.get(scope)
        if limit is None or not value:
            return None
        digest = hmac.new(self._secret, f"{scope}\x00{value}".encode(), hashlib.sha256).hexdigest()[:32]
        try:
            allowed, wait_ms = await self._take(
                keys=[f"ratelimit:{scope}:{digest}"], args=[limit.burst, limit.per_minute / 60.0]
            )
        except RedisError as error:
            raise LimitsUnavailable(str(error)) from error
        if int(allowed):
            return None
        return Refusal(scope, int(wait_ms) / 1000.0)
