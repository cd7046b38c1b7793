"""Identity's settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator

from servicekit import role_credentials
from servicekit.rate_limits import RateLimit
from servicekit.settings import ServiceSettings

# Identity's secret files, by name in the secrets directory. Here, not in the
# server, so dev-secrets and the CLI learn them without importing the server.
# The directory of credential signing keys (services/identity/keyring.py).
KEYS_DIRECTORY = "identity-keys"
# The HMAC key of signer pseudonyms.
PSEUDONYM_SECRET_FILE = "pseudonym-hmac.key"


class IssuerConfig(BaseModel):
    """One trusted OpenID Connect provider."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    audience: str
    # anonymous: only the pseudonymous subject is used (FranceConnect's
    # anonymous mode); identified: the birthdate is read to decide adulthood,
    # and the names only for an author's display name or a staff member's
    # name (never for a signer).
    mode: Literal["anonymous", "identified"] = "anonymous"
    # The provider serves adults only (FranceConnect: every account is an
    # adult's), so even its anonymous mode proves adulthood: its signer
    # credentials say adult, basis "provider". An identified issuer still
    # derives adulthood from the birthdate it sends.
    serves_adults_only: bool = False
    # Where the discovery document is; by default the issuer's well-known URL.
    discovery_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    country_claim: str = "country"
    territory_claim: str = "territory"
    assurance_claim: str = "acr"

    @property
    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class StaffRoleConfig(BaseModel):
    """The roles of one member of staff, known by their identified sign-in."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    subject: str
    roles: tuple[str, ...]

    @model_validator(mode="after")
    def _known_roles(self) -> Self:
        if not self.roles or set(self.roles) - role_credentials.ROLES:
            raise ValueError(
                f"staff_roles entry {{issuer {self.issuer!r}, subject {self.subject!r}}}: roles must be a"
                f" non-empty list among {sorted(role_credentials.ROLES)}, not {list(self.roles)}"
            )
        return self


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
    # An author deposits and edits drafts for a while; a member of staff
    # holds powers, so theirs lapses sooner.
    author_credential_ttl_seconds: int = 3600
    staff_credential_ttl_seconds: int = 900
    # Who is staff, with which roles (PETITIONS_STAFF_ROLES: a JSON list of
    # {"issuer", "subject", "roles"}), on identified issuers only.
    staff_roles: tuple[StaffRoleConfig, ...] = ()
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

    @model_validator(mode="after")
    def _staff_on_identified_issuers(self) -> Self:
        """A staff entry that cannot ever match (an issuer not trusted, or an
        anonymous one, whose subjects are nobody's name) or that repeats a
        person is a configuration mistake: refused at start-up, named."""
        identified = {i.issuer for i in self.oidc_issuers if i.mode == "identified"}
        seen: set[tuple[str, str]] = set()
        for entry in self.staff_roles:
            named = f"staff_roles entry {{issuer {entry.issuer!r}, subject {entry.subject!r}}}"
            if entry.issuer not in identified:
                raise ValueError(f"{named}: the issuer is not a configured identified issuer")
            if (entry.issuer, entry.subject) in seen:
                raise ValueError(f"{named}: this person is listed twice")
            seen.add((entry.issuer, entry.subject))
        return self
