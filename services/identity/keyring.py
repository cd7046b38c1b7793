"""Identity's credential signing keys, loaded from the secrets directory.

Every `*.pem` file in identity-keys/ is a key. The newest by file name signs;
all of them are published, so a credential signed just before a rotation
still verifies. Rotate by adding a newer file; retire by deleting the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit.signer_credential import key_id, load_private_key, public_jwks

KEYS_DIRECTORY = "identity-keys"


@dataclass(frozen=True)
class KeyRing:
    signing_key: ed25519.Ed25519PrivateKey
    published: tuple[ed25519.Ed25519PublicKey, ...]

    def jwks_json(self) -> str:
        return public_jwks(list(self.published))

    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self.published]


def load_keyring(directory: Path) -> KeyRing:
    files = sorted(directory.glob("*.pem"))
    if not files:
        raise SystemExit(f"no signing key (*.pem) in {directory} (run `petitions dev-secrets` locally)")
    keys = [load_private_key(f.read_bytes()) for f in files]
    return KeyRing(signing_key=keys[-1], published=tuple(k.public_key() for k in reversed(keys)))


class ReloadingKeyRing:
    """The key ring as the key directory says it is now: re-read
    periodically, so adding a key (rotation) or deleting one (retirement)
    takes effect without a restart."""

    def __init__(self, directory: Path):
        self._directory = directory
        self.current = load_keyring(directory)

    def reload(self) -> bool:
        """Re-reads the directory; True when the set of keys changed. A
        directory left without keys keeps the last good ring."""
        files = sorted(self._directory.glob("*.pem"))
        if not files:
            return False
        ring = load_keyring(self._directory)
        changed = ring.jwks_json() != self.current.jwks_json()
        self.current = ring
        return changed
