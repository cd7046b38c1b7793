"""Identity's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from servicekit.rate_limits import RateLimit
from servicekit.settings import ServiceSettings


class IssuerConfig(BaseModel):
    """One trusted OpenID Connect provider."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    audience: str
    # anonymous: only the pseudonymous subject is used (FranceConnect's
    # anonymous mode); identified: name and birthdate are read to decide
    # adulthood, then dropped.
    mode: Literal["anonymous", "identified"] = "anonymous"
    # Where the discovery document is; by default the issuer's well-known URL.
    discovery_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    country_claim: str = "country"
    territory_claim: str = "territory"
    assurance_claim: str = "acr"

    @property
    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


DEV_ISSUER = IssuerConfig(issuer="http://127.0.0.1:8461", audience="petitions-dev", mode="anonymous")


DEFAULT_LIMITS = {
    # Everything one client address may ask for: generous, because many
    # people share an address behind a carrier or company NAT.
    "ip": RateLimit(burst=60, per_minute=60),
    # Codes sent to one mailbox, and sign-ins of one person.
    "mailbox": RateLimit(burst=3, per_minute=1),
    "signer": RateLimit(burst=20, per_minute=10),
    # Codes sent to one email domain: bounds abuse of throwaway domains.
    "email_domain": RateLimit(burst=500, per_minute=600),
}


class IdentitySettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50061"
    metrics_port: int = 9161
    oidc_issuers: tuple[IssuerConfig, ...] = (DEV_ISSUER,)
    # Minimum time between two JWKS fetches of one issuer, so that tokens with
    # made-up key ids cannot make us hammer the provider.
    jwks_refetch_interval_seconds: float = 10.0
    jwks_cache_seconds: float = 3600.0
    credential_ttl_seconds: int = 600
    # How long verifiers may cache the published keys.
    verification_keys_cache_seconds: int = 300
    # Max clock skew accepted on ID token iat/nbf/exp.
    id_token_leeway_seconds: int = 30
    grace_seconds: float = 5.0
    # How often the key directory is re-read (rotation without restart).
    keyring_reload_seconds: float = 30.0

    # Email one-time codes.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_from: str = "Petitions <no-reply@petitions.localhost>"
    smtp_starttls: bool = False
    smtp_username: str = ""
    # A file name in the secrets directory; empty for an open relay (dev).
    smtp_password_file: str = ""
    code_ttl_seconds: int = 600
    code_attempts: int = 5
    # Wrong codes one address may send, over all its verifications, before
    # it is locked for email_lock_window_seconds (from the failure that
    # locked it): asking for a fresh code must not buy fresh guesses.
    email_lock_failures: int = 10
    email_lock_window_seconds: int = 3600

    # Fraud limits per scope ("ip", "mailbox", "signer", "email_domain").
    rate_limits: dict[str, RateLimit] = DEFAULT_LIMITS
    blocked_email_domains: frozenset[str] = frozenset()
    blocked_ip_networks: tuple[str, ...] = ()
