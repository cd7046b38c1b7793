"""Email one-time codes, kept in Redis without the address.

An entry holds the signer pseudonym the code will prove, a keyed hash of the
code, the place and the adulthood the person declared (a flag: no birthdate,
no name), and the attempts left; it expires with the code. Checking a code is one
Lua script, so two concurrent guesses cannot both use the last attempt.

Attempts per code alone do not bound guessing: a fresh code (and fresh
attempts) can be asked for at once. So wrong codes are also counted per
address, over all its verifications (`otp-lock:<keyed hash of the
pseudonym>`, never the address): past `lock_failures` within
`lock_window_seconds`, the address is locked for a window from the failure
that locked it, and neither a new code nor any code, even the right one, is
accepted until it ends. The same script checks the lock, the code and counts
the failure, so concurrent guesses cannot slip past the limit.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

# KEYS[1] = the entry, KEYS[2] = the address's failure counter;
# ARGV[1] = keyed hash of the offered code, ARGV[2] = failures that lock the
# address, ARGV[3] = the lock window in milliseconds.
# Returns {"ok", signer, country, territory, declares_adult ("1" or "0")} |
# {"wrong", attempts_left} |
# {"gone"} | {"exhausted"} | {"locked", milliseconds until unlocked}.
_CHECK = """
local entry = redis.call('HGETALL', KEYS[1])
if #entry == 0 then return {'gone'} end
local limit = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') >= limit then
  return {'locked', redis.call('PTTL', KEYS[2])}
end
local fields = {}
for i = 1, #entry, 2 do fields[entry[i]] = entry[i + 1] end
local left = tonumber(fields['attempts_left'])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'exhausted'}
end
if fields['code_hash'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  -- The person proved the address: their earlier typos are forgiven.
  redis.call('DEL', KEYS[2])
  -- An entry written before the flag existed declares nothing.
  return {'ok', fields['signer'], fields['country'], fields['territory'], fields['declares_adult'] or '0'}
end
local failures = redis.call('INCR', KEYS[2])
if failures == 1 or failures >= limit then
  -- The window opens with the first failure; the failure that locks the
  -- address starts a full window of lock.
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
left = redis.call('HINCRBY', KEYS[1], 'attempts_left', -1)
if failures >= limit then
  return {'locked', redis.call('PTTL', KEYS[2])}
end
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'exhausted'}
end
return {'wrong', tostring(left)}
"""

# KEYS[1] = the address's failure counter; ARGV[1] = failures that lock it.
# Returns milliseconds until unlocked, or 0 when it is not locked.
_LOCKED = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return math.max(redis.call('PTTL', KEYS[1]), 1)
end
return 0
"""


class CodeStoreUnavailable(Exception):
    pass


class CheckResult(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    GONE = "gone"
    EXHAUSTED = "exhausted"
    LOCKED = "locked"


@dataclass(frozen=True)
class CodeCheck:
    result: CheckResult
    signer: str = ""
    country: str = ""
    territory: str = ""
    declares_adult: bool = False
    attempts_left: int = 0
    # For LOCKED: how long until the address may try again.
    retry_after_seconds: float = 0.0


@dataclass(frozen=True)
class IssuedCode:
    verification_id: str
    code: str


class OneTimeCodes:
    def __init__(
        self,
        redis: aioredis.Redis,
        secret: bytes,
        ttl_seconds: int,
        attempts: int,
        lock_failures: int,
        lock_window_seconds: int,
    ):
        self._redis = redis
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._attempts = attempts
        self._lock_failures = lock_failures
        self._lock_window_ms = lock_window_seconds * 1000
        self._check = redis.register_script(_CHECK)
        self._locked = redis.register_script(_LOCKED)

    def _code_hash(self, verification_id: str, code: str) -> str:
        return hmac.new(self._secret, f"{verification_id}\x00{code}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _key(verification_id: str) -> str:
        return f"otp:{verification_id}"

    def _lock_key(self, signer: str) -> str:
        """The address's failure counter. The signer pseudonym is already a
        keyed hash of the normalised address; hashing it again (with its own
        label) keeps the key from linking to the pseudonym signatures carry."""
        digest = hmac.new(self._secret, f"otp-lock\x00{signer}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"otp-lock:{digest}"

    async def locked_for(self, signer: str) -> float:
        """Seconds until the address of this pseudonym may try codes again;
        0 when it is not locked."""
        try:
            remaining_ms = await self._locked(keys=[self._lock_key(signer)], args=[self._lock_failures])
        except RedisError as error:
            raise CodeStoreUnavailable(str(error)) from error
        return int(remaining_ms) / 1000.0

    async def issue(self, signer: str, country: str, territory: str, declares_adult: bool = False) -> IssuedCode:
        verification_id = secrets.token_urlsafe(24)
        code = f"{secrets.randbelow(1_000_000):06d}"
        key = self._key(verification_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "code_hash": self._code_hash(verification_id, code),
                        "signer": signer,
                        "country": country,
                        "territory": territory,
                        "declares_adult": "1" if declares_adult else "0",
                        "attempts_left": self._attempts,
                    },
                )
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()
        except RedisError as error:
            raise CodeStoreUnavailable(str(error)) from error
        return IssuedCode(verification_id, code)

    async def forget(self, verification_id: str) -> None:
        try:
            await self._redis.delete(self._key(verification_id))
        except RedisError as error:
            raise CodeStoreUnavailable(str(error)) from error

    async def check(self, verification_id: str, code: str) -> CodeCheck:
        key = self._key(verification_id)
        try:
            # The entry names the person; their lock is derived from it, so
            # the script can be given every key it touches.
            signer = await self._redis.hget(key, "signer")
            if signer is None:
                return CodeCheck(CheckResult.GONE)
            lock = self._lock_key(signer.decode() if isinstance(signer, bytes) else str(signer))
            reply = await self._check(
                keys=[key, lock],
                args=[self._code_hash(verification_id, code), self._lock_failures, self._lock_window_ms],
            )
        except RedisError as error:
            raise CodeStoreUnavailable(str(error)) from error
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        result = CheckResult(values[0])
        if result is CheckResult.OK:
            return CodeCheck(
                result, signer=values[1], country=values[2], territory=values[3], declares_adult=values[4] == "1"
            )
        if result is CheckResult.WRONG:
            return CodeCheck(result, attempts_left=int(values[1]))
        if result is CheckResult.LOCKED:
            return CodeCheck(result, retry_after_seconds=max(int(values[1]), 1) / 1000.0)
        return CodeCheck(result)
