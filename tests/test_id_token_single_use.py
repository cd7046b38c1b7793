"""An ID token buys one signer credential, once: identity remembers each
token it exchanged (a keyed hash of its jti, or of the whole token, in
Redis until the token expires) and refuses it again; a token bound to a
nonce needs that nonce; a token for several audiences must name us as its
authorized party; a token without a usable subject is refused. All through
identity's gRPC API, against the real service and Redis."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
import redis

from petitions.v1 import identity_pb2, identity_pb2_grpc
from services.gateway.oidc_flow import OidcCodeFlow, SealedCookie, SignInFailed
from tests.errors import Rejection, rejection
from tests.harness import PrivateRedis, free_port, start_service, wait_serving
from tests.system import SystemClient
from tests.test_identity_oidc import claims, signed
from tests.waiting import eventually

pytestmark = pytest.mark.stack

OUR_CLIENT_ID = "petitions-test"
# The test configuration's leeway is identity's default.
LEEWAY_SECONDS = 30


def exchange(
    system: SystemClient, token: str, nonce: str = "", stub: identity_pb2_grpc.IdentityStub | None = None
) -> identity_pb2.SignerCredential:
    reply: identity_pb2.SignerCredential = (stub or system.identity).ExchangeIdToken(
        identity_pb2.ExchangeIdTokenRequest(id_token=token, nonce=nonce), timeout=10
    )
    return reply


def refusal(system: SystemClient, token: str, nonce: str = "") -> Rejection:
    with pytest.raises(grpc.RpcError) as raised:
        exchange(system, token, nonce)
    return rejection(raised.value)


def outcome_of(system: SystemClient, token: str, stub: identity_pb2_grpc.IdentityStub | None = None) -> str:
    """ "issued", or the reason of the refusal."""
    try:
        exchange(system, token, stub=stub)
    except grpc.RpcError as error:
        return rejection(error).reason
    return "issued"


def assert_rejected(system: SystemClient, token: str, says: str, nonce: str = "") -> None:
    found = refusal(system, token, nonce)
    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ID_TOKEN_REJECTED"), found
    assert says in found.message.lower(), found


def assert_reused(system: SystemClient, token: str, nonce: str = "") -> None:
    found = refusal(system, token, nonce)
    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ID_TOKEN_REUSED"), found


def test_a_dev_provider_token_is_exchanged_once(system: SystemClient) -> None:
    persona = f"once-{uuid.uuid4().hex[:8]}"
    # Two tokens for one person in the same second differ (each has its own
    # jti), so each is exchanged once.
    first, second = system.id_token(persona), system.id_token(persona)
    assert first != second

    credentials = [exchange(system, first), exchange(system, second)]

    assert credentials[0].claims.signer == credentials[1].claims.signer
    assert_reused(system, first)
    assert_reused(system, second)


def test_a_token_without_jti_is_single_use_too(system: SystemClient) -> None:
    token = signed(system, claims(system))
    assert "jti" not in jwt.decode(token, options={"verify_signature": False})

    exchange(system, token)

    assert_reused(system, token)


def test_concurrent_exchanges_of_one_token_issue_one_credential(system: SystemClient) -> None:
    token = system.id_token(f"race-{uuid.uuid4().hex[:8]}")

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(lambda _: outcome_of(system, token), range(8)))

    assert outcomes == ["ID_TOKEN_REUSED"] * 7 + ["issued"]


def test_redis_holds_a_keyed_hash_of_the_used_token_until_it_expires(system: SystemClient, redis_url: str) -> None:
    """Nothing in Redis links back to the token: not its jti, not a plain
    hash of it; and the mark lasts until the token could no longer verify."""
    jti = f"jti-{uuid.uuid4().hex}"
    lifetime = 1000  # far above any other key's expiry in a test session
    token = signed(system, claims(system, jti=jti, exp=int(time.time()) + lifetime))
    store = redis.Redis.from_url(redis_url)
    try:
        before = set(store.scan_iter(count=1000))
        exchange(system, token)
        added = set(store.scan_iter(count=1000)) - before
        long_lived = {key: store.ttl(key) for key in added if store.ttl(key) > lifetime / 2}

        assert len(long_lived) == 1, long_lived
        [(key, ttl)] = long_lived.items()
        assert lifetime + LEEWAY_SECONDS - 5 <= ttl <= lifetime + LEEWAY_SECONDS + 1
        value = store.get(key) or b""
        for trace in (jti, hashlib.sha256(jti.encode()).hexdigest(), hashlib.sha256(token.encode()).hexdigest()):
            assert trace.encode() not in key + value
    finally:
        store.close()
    assert_reused(system, token)


def test_a_token_bound_to_a_nonce_needs_that_nonce(system: SystemClient) -> None:
    """The code flow's tokens carry the nonce of their sign-in: without it
    (a token lifted from someone else's sign-in) they buy nothing."""
    nonce = f"nonce-{uuid.uuid4().hex}"
    token = signed(system, claims(system, nonce=nonce))

    assert_rejected(system, token, "nonce")
    assert_rejected(system, token, "nonce", nonce="another-sign-in")
    # Refusals spend nothing: the rightful caller still gets its credential.
    exchange(system, token, nonce=nonce)
    assert_reused(system, token, nonce=nonce)
    # And the other way: the gateway sends the nonce of its sign-in, which a
    # token minted outside that sign-in (no nonce claim) cannot match.
    assert_rejected(system, signed(system, claims(system)), "nonce", nonce="the-gateways-nonce")


def test_several_audiences_need_an_azp_naming_us(system: SystemClient) -> None:
    """OpenID Connect Core 3.1.3.7: with several audiences, azp must be
    present and be our client id."""
    audiences = [OUR_CLIENT_ID, "another-client"]

    assert_rejected(system, signed(system, claims(system, aud=audiences)), "azp")
    assert_rejected(system, signed(system, claims(system, aud=audiences, azp="another-client")), "azp")
    assert exchange(system, signed(system, claims(system, aud=audiences, azp=OUR_CLIENT_ID))).claims.signer


@pytest.mark.parametrize("audience", [OUR_CLIENT_ID, [OUR_CLIENT_ID]])
def test_an_azp_naming_another_client_is_refused(system: SystemClient, audience: Any) -> None:
    assert_rejected(system, signed(system, claims(system, aud=audience, azp="another-client")), "azp")


@pytest.mark.parametrize(
    "subject",
    ["", " ", " dev-persona:padded", "a" * 256, "dev-persona\x00someone", "dev-persona:\u00e9"],
    ids=["empty", "blank", "padded", "too-long", "nul", "non-ascii"],
)
def test_a_token_without_a_usable_subject_is_refused(system: SystemClient, subject: str) -> None:
    """An empty subject would make everyone with one the same person; OIDC
    subjects are 1 to 255 printable ASCII characters."""
    assert_rejected(system, signed(system, claims(system, sub=subject)), "sub")


@contextlib.contextmanager
def private_identity(
    system: SystemClient, name: str, settings: dict[str, str]
) -> Iterator[identity_pb2_grpc.IdentityStub]:
    """An identity process of its own, in the session's namespace, with
    some settings changed."""
    address = f"127.0.0.1:{free_port()}"
    process = start_service(
        name,
        "services.identity",
        [],
        system.namespace.env(system.stack),
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": str(free_port()), **settings},
        system.namespace.work_dir / "logs",
    )
    try:
        wait_serving(process, address)
        with grpc.insecure_channel(address) as channel:
            yield identity_pb2_grpc.IdentityStub(channel)
    finally:
        process.stop()


def test_without_redis_a_token_is_not_accepted_but_unavailable(
    system: SystemClient, private_redis: PrivateRedis
) -> None:
    """An identity on a private Redis, with no rate limits (so nothing else
    needs Redis on the way): when Redis dies, an exchange cannot prove the
    token unused and answers UNAVAILABLE with retry advice; the token is
    still good once Redis is back."""
    settings = {"PETITIONS_REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0", "PETITIONS_RATE_LIMITS": "{}"}
    with private_identity(system, "identity-private-redis", settings) as stub:
        persona = f"outage-{uuid.uuid4().hex[:8]}"
        exchange(system, system.id_token(persona), stub=stub)
        token = system.id_token(persona)

        private_redis.kill()
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            exchange(system, token, stub=stub)
        refused_after = time.monotonic() - began
        found = rejection(raised.value)
        assert (found.code, found.reason) == (grpc.StatusCode.UNAVAILABLE, "ID_TOKEN_LEDGER_UNAVAILABLE"), found
        assert found.retry_after_seconds is not None
        assert found.retry_after_seconds > 0
        assert refused_after < 15, f"refused only after {refused_after:.1f} s"

        private_redis.start()
        assert exchange(system, token, stub=stub).claims.signer
        with pytest.raises(grpc.RpcError) as raised:
            exchange(system, token, stub=stub)
        assert rejection(raised.value).reason == "ID_TOKEN_REUSED"


def test_a_token_refused_by_a_rate_limit_is_not_spent(system: SystemClient) -> None:
    """A refusal after the token was checked (here the person's limit, one
    sign-in then one a second) spends nothing: the same token is good once
    the limit lets the person in again."""
    limits = {"signer": {"burst": 1, "per_minute": 60}}
    with private_identity(system, "identity-tight-limits", {"PETITIONS_RATE_LIMITS": json.dumps(limits)}) as stub:
        persona = f"limited-{uuid.uuid4().hex[:8]}"
        exchange(system, system.id_token(persona), stub=stub)
        token = system.id_token(persona)
        with pytest.raises(grpc.RpcError) as raised:
            exchange(system, token, stub=stub)
        assert rejection(raised.value).reason == "RATE_LIMITED"

        def let_in() -> str | None:
            seen = outcome_of(system, token, stub)
            return None if seen == "RATE_LIMITED" else seen

        outcome = eventually(let_in, 10, message="the limit never let the person in again")
        assert outcome == "issued"
        with pytest.raises(grpc.RpcError) as raised:
            exchange(system, token, stub=stub)
        assert rejection(raised.value).reason == "ID_TOKEN_REUSED"


async def test_the_gateways_code_flow_never_exchanges_a_token_without_its_nonce() -> None:
    """The code flow's half of the nonce rule: a sign-in whose sealed state
    has no nonce ends before the code is redeemed, so identity is never
    asked to exchange a code-flow token without one."""
    sealer = SealedCookie(b"k" * 32, "oidc-sign-in")
    cookie = sealer.seal({"state": "s", "nonce": "", "verifier": "v", "return_to": "/"}, time.time() + 60)
    async with aiohttp.ClientSession() as http:
        flow = OidcCodeFlow(
            # Nothing listens there: reaching the provider is a failure too.
            provider_url=f"http://127.0.0.1:{free_port()}",
            client_id="petitions-test",
            client_secret="",
            redirect_uri="http://127.0.0.1/auth/oidc/callback",
            scopes="openid",
            state_seconds=60,
            cookie=sealer,
            http=http,
            timeout_seconds=2,
        )
        with pytest.raises(SignInFailed) as failed:
            await flow.complete({"state": "s", "code": "a-code"}, cookie)
    assert failed.value.reason == "SIGN_IN_EXPIRED"
