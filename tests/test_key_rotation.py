"""Rotating identity's signing key on a running system: a credential signed
with the previous key keeps working while that key is published, a new key
signs only once verifiers can know it, and a retired key stops working.

Runs its own identity and signing processes on a copy of the secrets, so the
rotation does not change the keys the rest of the suite uses."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from petitions.v1 import identity_pb2, identity_pb2_grpc, signing_pb2, signing_pb2_grpc
from servicekit.signer_credential import key_id
from tests.harness import ServiceProcess, free_port, start_service, wait_serving
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack

# A petition that does not exist: Sign checks the credential first, so a
# valid credential gets NOT_FOUND and an invalid one UNAUTHENTICATED, and
# nothing is ever published.
PROBE_PETITION = "rotation-probe"
# How long a key change may take to be seen by both services (they rescan
# their key directories periodically).
ROTATION_SECONDS = 15.0


@dataclass
class RotatingPair:
    keys_dir: Path
    identity: identity_pb2_grpc.IdentityStub
    signing: signing_pb2_grpc.SigningStub

    def published(self) -> set[str]:
        reply = self.identity.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
        return {str(key.key_id) for key in jwt.PyJWKSet.from_json(reply.jwks_json).keys}

    def credential(self, id_token: str) -> str:
        reply = self.identity.ExchangeIdToken(identity_pb2.ExchangeIdTokenRequest(id_token=id_token), timeout=10)
        return str(reply.token)

    def verdict(self, credential: str) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as raised:
            self.signing.Sign(signing_pb2.SignRequest(credential=credential, petition_id=PROBE_PETITION), timeout=10)
        error = raised.value
        assert isinstance(error, grpc.Call)
        return error.code()


def kid_of(credential: str) -> str:
    return str(jwt.get_unverified_header(credential)["kid"])


@pytest.fixture
def pair(system: SystemClient, tmp_path: Path) -> Iterator[RotatingPair]:
    secrets = tmp_path / "secrets"
    shutil.copytree(system.namespace.secrets_dir, secrets)
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("identity", "signing")}
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_SECRETS_DIR": str(secrets),
        "PETITIONS_IDENTITY_ADDRESS": addresses["identity"],
        "PETITIONS_METRICS_PORT": "0",
    }
    processes: list[ServiceProcess] = []
    channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
    try:
        for name in ("identity", "signing"):
            process = start_service(
                f"rotation-{name}",
                f"services.{name}",
                [],
                env,
                {"PETITIONS_GRPC_ADDRESS": addresses[name]},
                tmp_path,
            )
            processes.append(process)
            wait_serving(process, addresses[name])
        yield RotatingPair(
            secrets / "identity-keys",
            identity_pb2_grpc.IdentityStub(channels["identity"]),
            signing_pb2_grpc.SigningStub(channels["signing"]),
        )
    finally:
        for channel in channels.values():
            channel.close()
        for process in reversed(processes):
            process.stop()


def test_rotation_keeps_credentials_in_flight_and_retirement_ends_them(
    system: SystemClient, pair: RotatingPair
) -> None:
    (old_file,) = sorted(pair.keys_dir.glob("*.pem"))
    old_credential = pair.credential(system.id_token("rotating-person"))
    old_kid = kid_of(old_credential)
    assert pair.verdict(old_credential) == grpc.StatusCode.NOT_FOUND

    new_key = ed25519.Ed25519PrivateKey.generate()
    new_kid = key_id(new_key.public_key())
    (pair.keys_dir / "99990101T000000.pem").write_bytes(
        new_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    eventually(
        lambda: pair.published() == {old_kid, new_kid},
        ROTATION_SECONDS,
        interval=0.2,
        message="the new key was never published",
    )
    eventually(
        lambda: kid_of(pair.credential(system.id_token("rotating-person"))) == new_kid,
        ROTATION_SECONDS,
        interval=0.2,
        message="the new key never started signing",
    )
    new_credential = pair.credential(system.id_token("rotating-person"))

    # Both keys are published: credentials of either verify.
    assert pair.verdict(new_credential) == grpc.StatusCode.NOT_FOUND
    assert pair.verdict(old_credential) == grpc.StatusCode.NOT_FOUND

    old_file.unlink()
    eventually(
        lambda: pair.published() == {new_kid}, ROTATION_SECONDS, interval=0.2, message="the old key was never retired"
    )
    eventually(
        lambda: pair.verdict(old_credential) == grpc.StatusCode.UNAUTHENTICATED,
        ROTATION_SECONDS,
        interval=0.2,
        message="signing still accepts a credential of a retired key",
    )
    assert pair.verdict(new_credential) == grpc.StatusCode.NOT_FOUND
