"""The gateway's settings.

Field names differ from the other services' where the meaning differs (the
gateway's tally cache is not tally's), because every process of a system
reads the same PETITIONS_* environment.
"""

from __future__ import annotations

import ipaddress

from pydantic import field_validator
from yarl import URL

from servicekit.settings import BaseProcessSettings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

COOKIE_SECRET_FILE = "gateway-cookie.key"

# The dev OIDC provider (services/devidp, `make up`) under its dev client id:
# identity's DEV_ISSUER, written out as the CLI does, because the gateway
# imports no other service (and identity's settings bring in its Redis limits).
DEV_OIDC_PROVIDER_URL = "http://127.0.0.1:8461"
DEV_OIDC_CLIENT_ID = "petitions-dev"


# No store fields: the gateway reaches Kafka, Redis and Cassandra only
# through the services' RPCs.
class GatewaySettings(BaseProcessSettings):
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    metrics_port: int = 9164
    # The address browsers use to reach the gateway (scheme, host, port);
    # the OIDC redirect URI is built from it.
    public_url: str = "http://127.0.0.1:8080"
    # Other origins the page itself is served at (e.g. "https://www.petitions.example"
    # beside public_url's). A request signed in by cookie that changes
    # something must come from one of these or from public_url's origin:
    # SameSite alone lets any page of the same site (another port, a sibling
    # subdomain) make a visitor's browser sign.
    public_origins: tuple[str, ...] = ()

    identity_address: str = "127.0.0.1:50061"
    signing_address: str = "127.0.0.1:50062"
    tally_address: str = "127.0.0.1:50063"
    # The petitions service: the catalogue, drafts, review, committee work.
    petitions_address: str = "127.0.0.1:50064"
    # gRPC connections per backend; calls go round robin over the healthy
    # ones. Several processes sharing a backend's address each get whole
    # connections (SO_REUSEPORT hashes connections, not calls): with 8, all
    # of them land on one of two processes once in 128 starts.
    backend_channels: int = 8
    # How long start() waits for each backend's first health answer; a
    # backend that is down does not stop the gateway from starting.
    backend_start_wait_seconds: float = 3.0

    # Time budget of one request, passed on to gRPC as the call's deadline.
    request_timeout_seconds: float = 10.0
    # Signing waits for Kafka's acknowledgement (up to its publish timeout).
    sign_timeout_seconds: float = 20.0
    # Largest request body accepted; anything bigger is refused unread.
    max_body_bytes: int = 16 * 1024

    # Origins allowed to call /api/ from another site (exact match, e.g.
    # "https://petitions.example"); empty = same origin only.
    cors_origins: tuple[str, ...] = ()
    # The header a trusted reverse proxy sets with the client address (e.g.
    # "X-Forwarded-For"), believed only from peers inside these networks.
    trusted_proxy_header: str = ""
    trusted_proxy_networks: tuple[str, ...] = ()

    # One GetTally per petition per this interval per process, however many
    # people refresh; and what browsers and CDNs may cache.
    gateway_tally_cache_seconds: float = 1.0
    tally_max_age_seconds: int = 1
    gateway_catalogue_cache_seconds: float = 2.0
    catalogue_max_age_seconds: int = 5

    # Server-Sent Events: a comment line this often keeps proxies from
    # closing an idle stream; browsers reconnect after live_retry_ms.
    live_heartbeat_seconds: float = 15.0
    live_retry_ms: int = 2000
    max_live_clients: int = 20_000

    # The OpenID Connect provider of the code flow (dev: services/devidp).
    oidc_provider_url: str = DEV_OIDC_PROVIDER_URL
    oidc_client_id: str = DEV_OIDC_CLIENT_ID
    # A file name in the secrets directory; empty for a public client.
    oidc_client_secret_file: str = ""
    oidc_scopes: str = "openid"
    # The identified provider of the author sign-in (FranceConnect's second
    # button: names and birthdate are read, by identity only). Its own client
    # registration and scopes: the signer sign-in above must stay anonymous.
    author_oidc_provider_url: str = DEV_OIDC_PROVIDER_URL
    author_oidc_client_id: str = DEV_OIDC_CLIENT_ID
    author_oidc_client_secret_file: str = ""
    # FranceConnect's names for the claims identity needs of an author.
    author_oidc_scopes: str = "openid given_name family_name birthdate"
    # How long a sign-in may take between start and callback.
    oidc_state_seconds: int = 600
    oidc_timeout_seconds: float = 10.0
    # Cookies only over HTTPS; off for http://127.0.0.1 in development.
    cookie_secure: bool = False

    grace_seconds: float = 10.0

    @field_validator("trusted_proxy_networks")
    @classmethod
    def _networks_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("public_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parsed = URL(origin)
            origin_of(origin)
            if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment or parsed.user is not None:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], nothing after)")
        return value

    @property
    def own_origins(self) -> frozenset[str]:
        """The origins of the gateway's own page, as browsers write them in Origin."""
        return frozenset({origin_of(self.public_url), *(origin_of(origin) for origin in self.public_origins)})

    @property
    def listen_address(self) -> str:
        return f"{self.http_host}:{self.http_port}"

    @property
    def proxy_networks(self) -> tuple[IpNetwork, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_proxy_networks)

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/auth/oidc/callback"

    @property
    def author_redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/auth/author/callback"


def origin_of(url: str) -> str:
    """An URL's origin as a browser serialises it in Origin: lower case,
    without the scheme's default port."""
    parsed = URL(url)
    if not parsed.absolute or parsed.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return str(parsed.origin())
