"""Identity's OpenID Connect exchange against real tokens from the dev
providers: every way a token can be wrong is refused, precisely."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from petitions.v1 import identity_pb2
from services.devidp.personas import KEY_FILE, DevTokenMinter
from tests.errors import rejection
from tests.harness import JWKS_REFETCH_INTERVAL_SECONDS
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def provider_key(system: SystemClient) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((system.namespace.secrets_dir / KEY_FILE).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def claims(system: SystemClient, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    subject = f"dev-persona:crafted-{uuid.uuid4().hex[:8]}"
    system.raw_identities.add(subject)
    base: dict[str, Any] = {
        "iss": system.namespace.devidp_url,
        "aud": "petitions-test",
        "sub": subject,
        "iat": now,
        "exp": now + 300,
        "country": "FR",
        "territory": "75",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(system: SystemClient, payload: dict[str, Any], key: ec.EllipticCurvePrivateKey | None = None) -> str:
    real = provider_key(system)
    kid = DevTokenMinter(real, system.namespace.devidp_url).kid
    return jwt.encode(payload, key or real, algorithm="ES256", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(system: SystemClient, token: str) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        system.exchange(token)
    found = rejection(raised.value)
    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ID_TOKEN_REJECTED"), found
    return found.message.lower()


def test_a_genuine_token_is_exchanged_for_a_pseudonymous_credential(system: SystemClient) -> None:
    credential = system.exchange(signed(system, claims(system, sub="dev-persona:genuine-1")))
    assert credential.claims.method == identity_pb2.VERIFICATION_METHOD_OIDC
    assert len(credential.claims.signer) == 64
    assert "genuine" not in credential.token
    payload = jwt.decode(credential.token, options={"verify_signature": False})
    assert payload["sub"] == credential.claims.signer
    assert payload["exp"] - payload["iat"] <= 600


def test_forged_signature_is_refused(system: SystemClient) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    assert "signature" in refused(system, signed(system, claims(system), key=impostor))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"iss": "https://idp.invalid"}, "not trusted"),
        ({"aud": "someone-else"}, "audience"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "not valid yet"),
        ({"sub": None}, "sub"),
    ],
)
def test_tokens_with_wrong_claims_are_refused(system: SystemClient, changes: dict[str, Any], says: str) -> None:
    assert says in refused(system, signed(system, claims(system, **changes)))


def test_alg_none_is_refused(system: SystemClient) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(system)).encode())
    assert "algorithm" in refused(system, f"{header}.{payload}.")


def test_hs256_keyed_with_the_providers_public_key_is_refused(system: SystemClient) -> None:
    """Algorithm confusion: an HMAC "signed" with the public key, which
    anyone can fetch from the JWKS."""
    public_pem = (
        provider_key(system)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    kid = DevTokenMinter(provider_key(system), system.namespace.devidp_url).kid
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{b64(json.dumps(claims(system)).encode())}"
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert "algorithm" in refused(system, f"{signing_input}.{b64(mac)}")


def test_unknown_kid_refetches_the_keys_once_then_refuses(system: SystemClient) -> None:
    sample = f'petitions_identity_jwks_fetches_total{{issuer="{system.namespace.devidp_url}",outcome="fetched"}}'
    # Time is the subject: the minimum refetch interval since any earlier
    # fetch must run out (no state says it has).
    time.sleep(JWKS_REFETCH_INTERVAL_SECONDS + 0.5)
    before = system.metric_value("identity", sample)
    stranger = ec.generate_private_key(ec.SECP256R1())
    first = jwt.encode(claims(system), stranger, algorithm="ES256", headers={"kid": f"rotated-{uuid.uuid4().hex}"})
    second = jwt.encode(claims(system), stranger, algorithm="ES256", headers={"kid": f"rotated-{uuid.uuid4().hex}"})

    assert "unknown key" in refused(system, first)
    assert "unknown key" in refused(system, second)

    # One refetch for the first unknown kid; the second falls inside the
    # minimum refetch interval, so made-up kids cannot hammer the provider.
    assert system.metric_value("identity", sample) == before + 1


def test_identified_mode_reads_the_birthdate_for_adulthood_only(system: SystemClient) -> None:
    adult = system.exchange(system.id_token(f"id-adult-{uuid.uuid4().hex[:6]}", identified=True))
    minor = system.exchange(
        system.id_token(f"id-minor-{uuid.uuid4().hex[:6]}", identified=True, birthdate="2015-06-01")
    )
    anonymous = system.exchange(system.id_token(f"anon-{uuid.uuid4().hex[:6]}"))

    assert (adult.claims.adult, minor.claims.adult, anonymous.claims.adult) == (True, False, False)
    for credential in (adult, minor):
        payload = jwt.decode(credential.token, options={"verify_signature": False})
        assert set(payload) == {"iss", "aud", "sub", "mth", "acr", "cty", "ter", "adl", "adb", "iat", "exp", "jti"}


def test_the_same_subject_at_two_issuers_is_two_persons(system: SystemClient) -> None:
    name = f"twin-{uuid.uuid4().hex[:6]}"
    at_anonymous = system.exchange(system.id_token(name))
    at_identified = system.exchange(system.id_token(name, identified=True))
    again = system.exchange(system.id_token(name))

    assert at_anonymous.claims.signer != at_identified.claims.signer
    assert at_anonymous.claims.signer == again.claims.signer


def test_exchange_limits_and_block_lists(system: SystemClient) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        system.exchange(system.id_token(f"blocked-{uuid.uuid4().hex[:6]}"), client_ip="203.0.113.9")
    assert (rejection(raised.value).code, rejection(raised.value).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "BLOCKED",
    )
    with pytest.raises(grpc.RpcError) as raised:
        system.exchange("", client_ip="198.51.100.1")
    assert rejection(raised.value).fields == ["id_token"]


def test_signing_checks_credentials_offline(system: SystemClient) -> None:
    """Twenty signatures cost identity no more than a key-set refresh or two
    (the test configuration lets verifiers cache the key set for 1 s)."""
    sample = 'petitions_rpc_requests_total{code="OK",method="GetVerificationKeys"}'
    petition = system.create_petition("Offline verification")
    credentials = [system.credential(f"offline-{uuid.uuid4().hex[:8]}").token for _ in range(20)]
    before = system.metric_value("identity", sample)

    for token in credentials:
        system.sign(token, petition.id)

    assert system.metric_value("identity", sample) - before <= 2


GOOD_HEADER = b64(json.dumps({"alg": "ES256", "kid": "any"}).encode())
GOOD_PAYLOAD = b64(json.dumps({"iss": "https://idp.invalid", "sub": "x"}).encode())


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("not-a-jwt", "3 parts"),
        ("..", "empty"),
        ("a.b", "3 parts"),
        # A JWE (RFC 7516): five parts, encrypted to us; we accept only signed tokens.
        (f"{b64(json.dumps({'alg': 'RSA-OAEP', 'enc': 'A256GCM'}).encode())}.a2V5.aXY.Y2lwaGVy.dGFn", "5 parts"),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}.c2ln$", "base64url"),
        (f" {GOOD_HEADER}.{GOOD_PAYLOAD}.c2ln", "base64url"),
        (f"{b64(b'not json')}.{GOOD_PAYLOAD}.c2ln", "header"),
        (f"{b64(b'[1, 2]')}.{GOOD_PAYLOAD}.c2ln", "header"),
        (f"{GOOD_HEADER}.{b64(b'[1, 2]')}.c2ln", "claims"),
        (f"{GOOD_HEADER}.{b64(bytes([0xFF, 0xFE]))}.c2ln", "claims"),
        # Nested deeper than the JSON parser recurses, yet short enough to pass.
        (f"{GOOD_HEADER}.{b64(b'[' * 12_000)}.c2ln", "claims"),
    ],
    ids=[
        "one-part",
        "empty-parts",
        "two-parts",
        "jwe",
        "not-base64url",
        "leading-space",
        "header-not-json",
        "header-not-object",
        "claims-not-object",
        "claims-not-utf8",
        "claims-too-deep",
    ],
)
def test_a_malformed_token_is_an_invalid_argument_on_id_token(system: SystemClient, token: str, says: str) -> None:
    """Not a compact JWS at all: the caller's bug, not a failed proof, so
    INVALID_ARGUMENT on the field (do not retry), never UNAUTHENTICATED."""
    with pytest.raises(grpc.RpcError) as raised:
        system.exchange(token)
    found = rejection(raised.value)
    assert (found.code, found.reason, found.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_ID_TOKEN",
        ["id_token"],
    ), found
    assert says in found.message
