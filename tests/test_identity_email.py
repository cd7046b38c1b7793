"""Email one-time codes through identity, the real Redis and the dev SMTP
sink: a code proves a mailbox once, within its lifetime and attempts."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
import redis

from petitions.v1 import identity_pb2, signing_pb2
from tests.errors import Rejection, rejection
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def mailbox(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.org"


def refused(call: object) -> Rejection:
    assert isinstance(call, grpc.RpcError)
    return rejection(call)


def store(system: SystemClient) -> redis.Redis:
    return redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])


def test_a_code_from_the_email_gets_a_credential_that_signs(system: SystemClient) -> None:
    address = mailbox()
    started = system.begin_email(address, country="FR", territory="33")

    credential = system.complete_email(started.verification_id, system.code_sent_to(address))

    assert credential.claims.method == identity_pb2.VERIFICATION_METHOD_EMAIL
    assert (credential.claims.country, credential.claims.territory) == ("FR", "33")
    petition = system.create_petition("Signed by email")
    assert system.sign(credential.token, petition.id).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED


def test_one_mailbox_written_two_ways_is_one_person(system: SystemClient) -> None:
    local = f"first.last.{uuid.uuid4().hex[:6]}"
    plain = f"{local.replace('.', '')}@gmail.com"
    decorated = f"  {local.title()}+petitions@GoogleMail.com "

    first = system.email_credential(plain)
    second = system.email_credential(decorated)

    assert first.claims.signer == second.claims.signer
    other = system.email_credential(f"{local.replace('.', '')}x@gmail.com")
    assert other.claims.signer != first.claims.signer


def test_a_used_code_cannot_be_used_again(system: SystemClient) -> None:
    address = mailbox()
    started = system.begin_email(address)
    code = system.code_sent_to(address)
    system.complete_email(started.verification_id, code)

    with pytest.raises(grpc.RpcError) as raised:
        system.complete_email(started.verification_id, code)
    assert (refused(raised.value).code, refused(raised.value).reason) == (
        grpc.StatusCode.NOT_FOUND,
        "VERIFICATION_NOT_FOUND",
    )


def test_wrong_codes_count_down_then_the_verification_is_dead(system: SystemClient) -> None:
    address = mailbox()
    started = system.begin_email(address)
    code = system.code_sent_to(address)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    reasons = []
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as raised:
            system.complete_email(started.verification_id, wrong)
        found = refused(raised.value)
        reasons.append((found.code, found.reason))
    assert reasons[:4] == [(grpc.StatusCode.UNAUTHENTICATED, "CODE_MISMATCH")] * 4
    assert reasons[4] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS")

    with pytest.raises(grpc.RpcError) as raised:
        system.complete_email(started.verification_id, code)  # the right code, too late
    assert refused(raised.value).reason == "VERIFICATION_NOT_FOUND"


def test_an_expired_code_is_refused(system: SystemClient) -> None:
    address = mailbox()
    started = system.begin_email(address)
    code = system.code_sent_to(address)
    key = f"otp:{started.verification_id}"
    redis_store = store(system)
    remaining = redis_store.ttl(key)
    assert 0 < remaining <= 600, "a code must carry its expiry"
    assert started.expires_at.seconds - time.time() == pytest.approx(remaining, abs=5)

    redis_store.pexpire(key, 1)  # its lifetime ends now
    time.sleep(0.05)

    with pytest.raises(grpc.RpcError) as raised:
        system.complete_email(started.verification_id, code)
    assert (refused(raised.value).code, refused(raised.value).reason) == (
        grpc.StatusCode.NOT_FOUND,
        "VERIFICATION_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("email", "field"),
    [("", "email"), ("not-an-address", "email"), ("a@b@c.org", "email")],
)
def test_malformed_addresses_are_invalid_arguments(system: SystemClient, email: str, field: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        system.begin_email(email)
    assert (refused(raised.value).code, refused(raised.value).fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


def test_malformed_codes_are_invalid_arguments(system: SystemClient) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        system.complete_email("some-id", "12ab56")
    assert refused(raised.value).fields == ["code"]


def test_a_blocked_domain_gets_no_email(system: SystemClient) -> None:
    address = f"x-{uuid.uuid4().hex[:8]}@blocked.example"
    with pytest.raises(grpc.RpcError) as raised:
        system.begin_email(address)
    assert (refused(raised.value).code, refused(raised.value).reason) == (grpc.StatusCode.PERMISSION_DENIED, "BLOCKED")
    assert system.mail_to(address, timeout=0.5) == []


def test_one_mailbox_cannot_be_flooded_with_codes(system: SystemClient) -> None:
    address = mailbox("flood")
    for _ in range(3):
        system.begin_email(address)
    with pytest.raises(grpc.RpcError) as raised:
        system.begin_email(address)
    found = refused(raised.value)
    assert (found.code, found.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert found.retry_after_seconds is not None
    assert 0 < found.retry_after_seconds <= 60
    assert len(system.mail_to(address)) == 3


def test_an_address_hitting_the_ip_limit_recovers_after_the_advised_delay(system: SystemClient) -> None:
    ip = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
    for _ in range(5):
        system.exchange(system.id_token(f"ip-{uuid.uuid4().hex[:8]}"), client_ip=ip)
    with pytest.raises(grpc.RpcError) as raised:
        system.exchange(system.id_token(f"ip-{uuid.uuid4().hex[:8]}"), client_ip=ip)
    found = refused(raised.value)
    assert (found.code, found.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert found.retry_after_seconds is not None

    time.sleep(found.retry_after_seconds + 0.1)
    assert system.exchange(system.id_token(f"ip-{uuid.uuid4().hex[:8]}"), client_ip=ip).claims.signer


def test_redis_holds_no_address_and_no_code(system: SystemClient) -> None:
    address = mailbox("secret")
    started = system.begin_email(address)
    code = system.code_sent_to(address)
    redis_store = store(system)
    entry = redis_store.hgetall(f"otp:{started.verification_id}")
    assert entry, "the verification must be stored"
    stored = b" ".join(item if isinstance(item, bytes) else item.encode() for pair in entry.items() for item in pair)
    assert address.encode() not in stored
    assert address.split("@")[0].encode() not in stored
    assert code.encode() not in stored
