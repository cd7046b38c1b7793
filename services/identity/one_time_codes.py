"""Email one-time codes, kept in Redis without the address.

An entry holds the signer pseudonym the code will prove, a keyed hash of the
code, and the attempts left; it expires with the code. Checking a code is one
Lua script, so two concurrent guesses cannot both use the last attempt.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

# KEYS[1] = the entry; ARGV[1] = keyed hash of the offered code.
# Returns {"ok", signer, country, territory} | {"wrong", attempts_left} |
# {"gone"} | {"exhausted"}.
_CHECK = """
local entry = redis.call('HGETALL', KEYS[1])
if #entry == 0 then return {'gone'} end
local fields = {}
for i = 1, #entry, 2 do fields[entry[i]] = entry[i + 1] end
local left = tonumber(fields['attempts_left'])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'exhausted'}
end
if fields['code_hash'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'ok', fields['signer'], fields['country'], fields['territory']}
end
left = redis.call('HINCRBY', KEYS[1], 'attempts_left', -1)
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'exhausted'}
end
return {'wrong', tostring(left)}
"""


class CodeStoreUnavailable(Exception):
    pass


class CheckResult(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    GONE = "gone"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class CodeCheck:
    result: CheckResult
    signer: str = ""
    country: str = ""
    territory: str = ""
    attempts_left: int = 0


@dataclass(frozen=True)
class IssuedCode:
    verification_id: str
    code: str


class OneTimeCodes:
    def __init__(self, redis: aioredis.Redis, secret: bytes, ttl_seconds: int, attempts: int):
        self._redis = redis
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._attempts = attempts
        self._check = redis.register_script(_CHECK)

    def _code_hash(self, verification_id: str, code: str) -> str:
        return hmac.new(self._secret, f"{verification_id}\x00{code}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _key(verification_id: str) -> str:
        return f"otp:{verification_id}"

    async def issue(self, signer: str, country: str, territory: str) -> IssuedCode:
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
        try:
            reply = await self._check(keys=[self._key(verification_id)], args=[self._code_hash(verification_id, code)])
        except RedisError as error:
            raise CodeStoreUnavailable(str(error)) from error
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        result = CheckResult(values[0])
        if result is CheckResult.OK:
            return CodeCheck(result, signer=values[1], country=values[2], territory=values[3])
        if result is CheckResult.WRONG:
            return CodeCheck(result, attempts_left=int(values[1]))
        return CodeCheck(result)
