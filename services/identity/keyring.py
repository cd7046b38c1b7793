"""Identity's credential signing keys, loaded from the secrets directory.

Every `*.pem` file in identity-keys/ is a key, and every key is published
(GetVerificationKeys). The newest key by file name signs, but only once it
has been published for longer than verifiers may cache the key set: a
verifier then always knows a key before it sees a credential signed with it.
Rotate by adding a newer file; retire by deleting the old one once the
credentials it signed have expired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit.signer_credential import key_id, load_private_key, public_jwks

# Defined in settings (dev-secrets reads it there); re-exported for the server.
from services.identity.settings import KEYS_DIRECTORY as KEYS_DIRECTORY


@dataclass(frozen=True)
class KeyRing:
    signing_key: ed25519.Ed25519PrivateKey
    published: tuple[ed25519.Ed25519PublicKey, ...]

    def jwks_json(self) -> str:
        return public_jwks(list(self.published))

    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self.published]


def load_keyring(directory: Path, activation_delay_seconds: float, now: float | None = None) -> KeyRing:
    files = sorted(directory.glob("*.pem"))
    if not files:
        raise SystemExit(f"no signing key (*.pem) in {directory} (run `petitions dev-secrets` locally)")
    keys = [(f.stat().st_mtime, load_private_key(f.read_bytes())) for f in files]
    moment = time.time() if now is None else now
    active = [key for written, key in keys if moment - written >= activation_delay_seconds]
    # With no key old enough (a first start), the oldest one signs.
    signing = active[-1] if active else keys[0][1]
    return KeyRing(signing_key=signing, published=tuple(key.public_key() for _, key in reversed(keys)))


class ReloadingKeyRing:
    """The key ring as the key directory says it is now: re-read
    periodically, so adding a key (rotation) or deleting one (retirement)
    takes effect without a restart."""

    def __init__(self, directory: Path, activation_delay_seconds: float):
        self._directory = directory
        self._delay = activation_delay_seconds
        self.current = load_keyring(directory, activation_delay_seconds)

    def reload(self) -> bool:
        """Re-reads the directory; True when the published keys or the
        signing key changed. A directory left without keys keeps the last
        good ring."""
        if not any(self._directory.glob("*.pem")):
            return False
        ring = load_keyring(self._directory, self._delay)
        before = self.current
        self.current = ring
        return ring.jwks_json() != before.jwks_json() or key_id(ring.signing_key.public_key()) != key_id(
            before.signing_key.public_key()
        )
