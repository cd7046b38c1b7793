"""How many signer credentials one core verifies per second (what signing
does for every Sign, offline), next to how many it signs (identity) and how
many dev ID tokens it mints (what load tests need per simulated person).

    .venv/bin/python -m loadtests.bench_credentials [--seconds 5]

Single-threaded on purpose: the figure is per core. Prints each rate and
the ratio of verification to a bare loop that only decodes the token's
header (the floor every verifier pays).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from servicekit import signer_credential
from servicekit.signer_credential import CredentialVerifier, SignerClaims
from services.devidp.personas import DevTokenMinter, Persona


def rate(operation: Callable[[int], object], seconds: float) -> float:
    """Calls per second of operation(i), measured over about `seconds`."""
    done = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            operation(done)
            done += 1
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()

    key = ed25519.Ed25519PrivateKey.generate()
    verifier = CredentialVerifier(signer_credential.public_jwks([key.public_key()]))
    tokens = [
        signer_credential.issue(key, SignerClaims(uuid.uuid4().hex, "oidc", "eidas1", "FR", "75", True), 600)[0]
        for _ in range(1000)
    ]
    claims = SignerClaims(uuid.uuid4().hex, "oidc", "eidas1", "FR", "75", True)
    minter = DevTokenMinter(ec.generate_private_key(ec.SECP256R1()), "http://127.0.0.1:8461")

    header_only = rate(lambda i: jwt.get_unverified_header(tokens[i % 1000]), options.seconds)
    verify = rate(lambda i: verifier.verify(tokens[i % 1000]), options.seconds)
    issue = rate(lambda i: signer_credential.issue(key, claims, 600), options.seconds)
    mint = rate(lambda i: minter.mint(Persona(f"load-{i}"), "petitions-dev"), options.seconds)

    print(f"credential verifications/s (1 core): {verify:10.0f}")
    print(f"credential issues/s        (1 core): {issue:10.0f}")
    print(f"dev ID tokens minted/s     (1 core): {mint:10.0f}")
    print(f"header decodes/s           (1 core): {header_only:10.0f}")
    print(f"verification / header-decode ratio: {verify / header_only:.3f}")


if __name__ == "__main__":
    main()
