"""Fraud limits: token buckets in Redis, and block lists.

A bucket holds up to `burst` tokens and refills at `per_minute`; each
request takes one. The script reads Redis's own clock, so every identity
process shares one view of time and of each bucket. Keys hold a keyed hash
of the IP, domain or pseudonym, never the value itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

# An IPv6 zone (the part after "%", e.g. fe80::1%eth0) is free text to
# Python's ipaddress, newlines and NULs included; here, an interface name or
# number.
IP_ZONE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address text writes; ValueError unless it is exactly an IPv4 or
    IPv6 address, with at most an interface zone."""
    address = ipaddress.ip_address(text)
    zone = address.scope_id if isinstance(address, ipaddress.IPv6Address) else None
    if zone is not None and not IP_ZONE.fullmatch(zone):
        raise ValueError(f"{text!r} has a malformed IPv6 zone")
    return address


# Lua helpers for token buckets, shared by every script that takes from one.
# A bucket is a hash {tokens, at}; its key expires once it would be full again.
BUCKET_FUNCTIONS = """
local function redis_now()
  local parts = redis.call('TIME')
  return tonumber(parts[1]) + tonumber(parts[2]) / 1000000
end
local function bucket_tokens(key, burst, rate, now)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  return math.min(burst, tokens + math.max(0, now - at) * rate)
end
local function bucket_wait_ms(tokens, rate)
  return math.ceil((1 - tokens) / rate * 1000)
end
local function bucket_store(key, tokens, burst, rate, now)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
"""

# KEYS[1] = bucket; ARGV = burst, tokens per second.
# Returns {allowed (0|1), milliseconds until one token is available}.
_TAKE = (
    BUCKET_FUNCTIONS
    + """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = redis_now()
local tokens = bucket_tokens(KEYS[1], burst, rate, now)
if tokens < 1 then
  bucket_store(KEYS[1], tokens, burst, rate, now)
  return {0, bucket_wait_ms(tokens, rate)}
end
bucket_store(KEYS[1], tokens - 1, burst, rate, now)
return {1, 0}
"""
)


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


@dataclass(frozen=True)
class Bucket:
    scope: str
    key: str
    burst: int
    per_second: float


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
            address = client_address(ip)
            if any(address in network for network in self._blocked_networks):
                return Refusal("ip", None, blocked=True)
        return None

    def bucket(self, scope: str, value: str) -> Bucket | None:
        """The bucket of (scope, value), or None when the scope is not
        limited or there is no value to limit."""
        limit = self._limits.get(scope)
        if limit is None or not value:
            return None
        digest = hmac.digest(self._secret, f"{scope}\x00{value}".encode(), "sha256").hex()[:32]
        return Bucket(scope, f"ratelimit:{scope}:{digest}", limit.burst, limit.per_minute / 60.0)

    async def take(self, scope: str, value: str) -> Refusal | None:
        """Takes a token from the bucket of (scope, value); a Refusal when
        it is empty. Scopes without a configured limit are not limited."""
        bucket = self.bucket(scope, value)
        if bucket is None:
            return None
        try:
            allowed, wait_ms = await self._take(keys=[bucket.key], args=[bucket.burst, bucket.per_second])
        except RedisError as error:
            raise LimitsUnavailable(str(error)) from error
        if int(allowed):
            return None
        return Refusal(scope, int(wait_ms) / 1000.0)
