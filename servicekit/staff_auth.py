"""Who may make an administrator's call (InvalidateSignatures in signing,
SelectSignatures in the tally, which signing forwards the credential to): a
member of staff with the administrator role, shown by a staff credential in
the "authorization: Bearer" metadata and checked offline against identity's
keys (the shared admin token is gone). In servicekit because two services
check it the same way.

Refusals, as every petitions call phrases them (petitions.proto): no
credential is UNAUTHENTICATED CREDENTIAL_REQUIRED; a forged, expired or
malformed one is UNAUTHENTICATED CREDENTIAL_REJECTED; a valid credential of
another kind (a signer's, an author's) or a staff credential without the
administrator role is PERMISSION_DENIED WRONG_ROLE.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from servicekit import role_credentials
from servicekit.credential_keys import CredentialKeyCache
from servicekit.errors import DomainError, ErrorKind
from servicekit.identity_keys import IdentityKeysUnavailable
from servicekit.signer_credential import AUDIENCE as SIGNER_AUDIENCE
from servicekit.signer_credential import CredentialRejected, CredentialVerifier

# Every audience identity issues, but staff's, with what to call a holder.
_OTHER_KINDS = {SIGNER_AUDIENCE: "a signer credential", role_credentials.AUTHOR_AUDIENCE: "an author credential"}


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of the "authorization: Bearer <token>" metadata, or ""."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("Bearer "):
                return text.removeprefix("Bearer ").strip()
    return ""


class StaffAuthorisation:
    def __init__(self, keys: CredentialKeyCache[IdentityKeysUnavailable]):
        self._keys = keys

    async def administrator(self, metadata: Iterable[tuple[str, Any]] | None) -> role_credentials.StaffClaims:
        """The administrator calling; raises the refusal otherwise."""
        token = bearer(metadata)
        if not token:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "CREDENTIAL_REQUIRED",
                "this call needs 'authorization: Bearer <staff credential>' of an administrator",
            )
        try:
            claims = await self._keys.verify_with(role_credentials.verify_staff, token)
        except CredentialRejected as error:
            kind = await self._other_kind(token)
            if kind is not None:
                raise DomainError(
                    ErrorKind.PERMISSION_DENIED,
                    "WRONG_ROLE",
                    f"this call needs a staff credential with the administrator role, not {kind}",
                ) from None
            raise DomainError(ErrorKind.UNAUTHENTICATED, "CREDENTIAL_REJECTED", str(error)) from None
        except IdentityKeysUnavailable as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "IDENTITY_UNAVAILABLE", str(error), retry_after_seconds=2
            ) from None
        if role_credentials.ADMINISTRATOR not in claims.roles:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "WRONG_ROLE",
                "this call needs the administrator role; the credential has " + ", ".join(sorted(claims.roles)),
            )
        return claims

    async def _other_kind(self, token: str) -> str | None:
        """What a token that is not a staff credential is, when it is a valid
        credential of another kind; None when it is no valid credential."""

        def check(verifier: CredentialVerifier, text: str) -> str | None:
            for audience, kind in _OTHER_KINDS.items():
                try:
                    verifier.decode(text, audience)
                except CredentialRejected:
                    continue
                return kind
            return None

        try:
            return await self._keys.verify_with(check, token)
        except (CredentialRejected, IdentityKeysUnavailable):
            return None
