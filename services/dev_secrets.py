"""Creates the secret files a local system needs, once.

Production secrets come from the platform's secret store (mounted as files
in the same layout); this only fills an empty local directory.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

# The file names come from each service's settings module, never from its
# server (the import contract "operator-tools" in pyproject.toml checks it).
from services.devidp.settings import KEY_FILE as DEVIDP_KEY_FILE
from services.gateway.settings import COOKIE_SECRET_FILE
from services.identity.settings import KEYS_DIRECTORY, PSEUDONYM_SECRET_FILE
from services.signing.settings import IP_HASH_SECRET_FILE


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_dev_secrets(directory: Path) -> list[Path]:
    """Creates each missing secret; returns the files it created."""
    created: list[Path] = []
    keys = directory / KEYS_DIRECTORY
    if not list(keys.glob("*.pem")):
        path = keys / f"{time.strftime('%Y%m%dT%H%M%S')}.pem"
        _write_private(path, _pem(ed25519.Ed25519PrivateKey.generate()))
        created.append(path)
    # No admin token any more: staff act with their own staff credentials.
    for name in (PSEUDONYM_SECRET_FILE, IP_HASH_SECRET_FILE, COOKIE_SECRET_FILE):
        path = directory / name
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(32).encode())
            created.append(path)
    devidp = directory / DEVIDP_KEY_FILE
    if not devidp.exists():
        _write_private(devidp, _pem(ec.generate_private_key(ec.SECP256R1())))
        created.append(devidp)
    return created
