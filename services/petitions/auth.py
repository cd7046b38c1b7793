"""Who is calling: the credential in the "authorization: Bearer" metadata,
checked offline against identity's keys, and the role it may act in.

Refusals change nothing and say what to do: no credential is
UNAUTHENTICATED CREDENTIAL_REQUIRED; a forged, expired or malformed one is
UNAUTHENTICATED CREDENTIAL_REJECTED; a valid credential of the wrong kind (a
signer's or author's on a staff call) or without the role the call needs is
PERMISSION_DENIED WRONG_ROLE.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from servicekit import role_credentials
from servicekit.credential_keys import CredentialKeyCache
from servicekit.errors import DomainError, ErrorKind
from servicekit.identity_keys import IdentityKeysUnavailable
from servicekit.signer_credential import AUDIENCE as SIGNER_AUDIENCE
from servicekit.signer_credential import CredentialRejected, CredentialVerifier, VerifiedCredential
from services.petitions import lifecycle
from services.petitions.changes import Actor

# grpc's invocation metadata: pairs of key and value (str, or bytes for -bin keys).
Metadata = Any

ROLE_ACTORS = {
    role_credentials.MODERATOR: lifecycle.Actor.MODERATOR,
    role_credentials.CLERK: lifecycle.Actor.CLERK,
    role_credentials.ADMINISTRATOR: lifecycle.Actor.ADMINISTRATOR,
}


def bearer(metadata: Metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            if text.startswith("Bearer ") and text[7:].strip():
                return text[7:].strip()
    return ""


def _audience_of(verifier: CredentialVerifier, token: str, audiences: Iterable[str]) -> str | None:
    for audience in audiences:
        try:
            verifier.decode(token, audience)
        except CredentialRejected:
            continue
        return audience
    return None


class Callers:
    def __init__(self, keys: CredentialKeyCache[IdentityKeysUnavailable]):
        self._keys = keys

    async def _check(self, check: Any, token: str) -> Any:
        try:
            return await self._keys.verify_with(check, token)
        except IdentityKeysUnavailable:
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "IDENTITY_UNAVAILABLE",
                "identity's keys cannot be fetched to check the credential; retry",
                retry_after_seconds=1.0,
            ) from None

    async def _wrong_kind(self, token: str, wanted: str) -> DomainError:
        """The refusal for a token that is not a valid `wanted` credential:
        WRONG_ROLE when it is a valid credential of another kind."""
        other = [a for a in (SIGNER_AUDIENCE, role_credentials.AUTHOR_AUDIENCE, role_credentials.STAFF_AUDIENCE)]
        other.remove(wanted)
        found = await self._check(lambda verifier, t: _audience_of(verifier, t, other), token)
        if found is not None:
            kind = {SIGNER_AUDIENCE: "a signer", role_credentials.AUTHOR_AUDIENCE: "an author"}.get(found, "a staff")
            needed = "a staff" if wanted == role_credentials.STAFF_AUDIENCE else "an author"
            return DomainError(
                ErrorKind.PERMISSION_DENIED, "WRONG_ROLE", f"this call needs {needed} credential, not {kind} credential"
            )
        return DomainError(ErrorKind.UNAUTHENTICATED, "CREDENTIAL_REJECTED", "the credential is not valid")

    async def staff(self, metadata: Metadata, action: lifecycle.Action | None, *roles: str) -> Actor:
        """The staff member calling, acting in the first of `roles` they hold
        that may take `action`."""
        token = bearer(metadata)
        if not token:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "CREDENTIAL_REQUIRED",
                "this call needs 'authorization: Bearer <staff credential>'",
            )
        try:
            claims: role_credentials.StaffClaims = await self._check(role_credentials.verify_staff, token)
        except CredentialRejected:
            raise await self._wrong_kind(token, role_credentials.STAFF_AUDIENCE) from None
        allowed = lifecycle.allowed_actors(action) if action is not None else frozenset(ROLE_ACTORS.values())
        for role in roles:
            if role in claims.roles and ROLE_ACTORS[role] in allowed:
                return Actor(claims.staff, claims.name, ROLE_ACTORS[role])
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "WRONG_ROLE",
            f"this call needs the role {' or '.join(roles)}; the credential has {', '.join(sorted(claims.roles))}",
        )

    async def optional_staff(self, metadata: Metadata) -> Actor | None:
        """A staff caller of a read (who may see unpublished petitions), or
        None for anyone else; a bad staff credential is still refused."""
        if not bearer(metadata):
            return None
        try:
            return await self.staff(metadata, None, *ROLE_ACTORS)
        except DomainError as refused:
            if refused.reason == "WRONG_ROLE":
                return None
            raise

    async def author(self, metadata: Metadata) -> role_credentials.AuthorClaims:
        token = bearer(metadata)
        if not token:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "CREDENTIAL_REQUIRED",
                "this call needs 'authorization: Bearer <author credential>'",
            )
        try:
            claims: role_credentials.AuthorClaims = await self._check(role_credentials.verify_author, token)
        except CredentialRejected:
            raise await self._wrong_kind(token, role_credentials.AUTHOR_AUDIENCE) from None
        return claims

    async def optional_author(self, metadata: Metadata) -> role_credentials.AuthorClaims | None:
        if not bearer(metadata):
            return None
        try:
            return await self.author(metadata)
        except DomainError:
            return None

    async def signer(self, token: str) -> VerifiedCredential:
        """A signer credential given in a request (SponsorPetition)."""
        try:
            verified: VerifiedCredential = await self._check(CredentialVerifier.verify, token)
        except CredentialRejected as error:
            raise DomainError(ErrorKind.UNAUTHENTICATED, "CREDENTIAL_REJECTED", str(error)) from None
        return verified
