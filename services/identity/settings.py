"""Identity's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

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
