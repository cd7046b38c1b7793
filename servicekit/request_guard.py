"""Applies the fraud limits to a request and turns a refusal into the API's
error: RESOURCE_EXHAUSTED with a retry delay, or PERMISSION_DENIED for a
block list."""

from __future__ import annotations

from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.metric_defs import RATE_LIMITED
from servicekit.rate_limits import Bucket, FraudLimits, LimitsUnavailable, Refusal

_WHAT = {
    "ip": "this network address",
    "mailbox": "this email address",
    "signer": "this person",
    "email_domain": "this email domain",
    "sign_ip": "this network address",
    "sign_signer": "this person",
}


def refusal_error(refusal: Refusal) -> DomainError:
    """The API's error for a refusal, counted by scope."""
    RATE_LIMITED.labels(refusal.scope).inc()
    what = _WHAT.get(refusal.scope, refusal.scope)
    if refusal.blocked:
        return DomainError(ErrorKind.PERMISSION_DENIED, "BLOCKED", f"requests from {what} are not accepted")
    return DomainError(
        ErrorKind.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"too many requests for {what}; retry in {refusal.retry_after_seconds:.0f} s",
        retry_after_seconds=refusal.retry_after_seconds,
    )


class RequestGuard:
    def __init__(self, limits: FraudLimits):
        self._limits = limits

    def check_blocked(self, *, ip: str = "", domain: str = "") -> None:
        try:
            refusal = self._limits.blocked(ip=ip, domain=domain)
        except ValueError:
            raise invalid("client_ip", "is not an IPv4 or IPv6 address") from None
        if refusal is not None:
            raise refusal_error(refusal)

    def buckets(self, **scoped_values: str) -> list[Bucket]:
        """The buckets take() would take from, for a caller that takes them
        in a script of its own (with its other Redis work, in one call)."""
        found = (self._limits.bucket(scope, value) for scope, value in scoped_values.items())
        return [bucket for bucket in found if bucket is not None]

    async def take(self, **scoped_values: str) -> None:
        """Takes one request from each named scope's bucket, e.g.
        take(ip=..., mailbox=...); the first empty bucket refuses."""
        for scope, value in scoped_values.items():
            try:
                refusal = await self._limits.take(scope, value)
            except LimitsUnavailable as error:
                raise DomainError(
                    ErrorKind.UNAVAILABLE,
                    "LIMITS_UNAVAILABLE",
                    f"rate limits cannot be checked: {error}",
                    retry_after_seconds=2,
                ) from None
            if refusal is not None:
                raise refusal_error(refusal)
