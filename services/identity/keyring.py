"""Identity's credential signing keys, loaded from the secrets directory.

Every `*.pem` file in identity-keys/ is a key. The newest by file name signs;
all of them are published, so a credential signed just before a rotation
still verifies. Rotate by adding a newer file; retire by deleting the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit.signer_credential import load_private_key, public_jwks

KEYS_DIRECTORY = "identity-keys"


@dataclass(frozen=True)
class KeyRing:
    signing_key: ed25519.Ed25519PrivateKey
    published: tuple[ed25519.Ed25519PublicKey, ...]

    def jwks_json(self) -> str:
        return public_jwks(list(self.published))


def load_keyring(directory: Path) -> KeyRing:
    files = sorted(directory.glob("*.pem"))
    if not files:
        raise SystemExit(f"no signing key (*.pem) in {directory} (run `petitions dev-secrets` locally)")
    keys = [load_private_key(f.read_bytes()) for f in files]
    return KeyRing(signing_key=keys[-1], published=tuple(k.public_key() for k in reversed(keys)))
