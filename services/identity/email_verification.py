"""Proving control of a mailbox with a one-time code.

The address is used twice and then forgotten: to derive the pseudonym and to
send the code. Redis sees only the pseudonym and a keyed hash of the code.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.request_guard import RequestGuard
from servicekit.signer_credential import SignerClaims
from services.identity.email_address import InvalidEmail, normalise
from services.identity.exchange import DECLARED, CredentialSigner, IssuedCredential
from services.identity.mailer import CodeMailer, MailNotSent
from services.identity.metrics import ADDRESS_LOCKED, CODE_SENT, CODES_SENT, EMAIL, counted_verification
from services.identity.one_time_codes import CheckResult, CodeStoreUnavailable, OneTimeCodes
from services.identity.places import is_country, is_territory
from services.identity.pseudonym import email_pseudonym

# Matched against the whole value (fullmatch): "123456\n" is no code. ASCII
# digits only; \d would take other scripts' digits too.
CODE = re.compile(r"[0-9]{6}")
MAX_VERIFICATION_ID = 64


@dataclass(frozen=True)
class StartedVerification:
    verification_id: str
    expires_at: float


def _unavailable(error: Exception) -> DomainError:
    return DomainError(ErrorKind.UNAVAILABLE, "CODE_STORE_UNAVAILABLE", str(error), retry_after_seconds=2)


def _locked(retry_after_seconds: float) -> DomainError:
    return DomainError(
        ErrorKind.RESOURCE_EXHAUSTED,
        ADDRESS_LOCKED,
        f"too many wrong codes for this email address; retry in {math.ceil(retry_after_seconds)} s",
        retry_after_seconds=retry_after_seconds,
    )


class EmailVerification:
    def __init__(
        self,
        codes: OneTimeCodes,
        mailer: CodeMailer,
        signer: CredentialSigner,
        pseudonym_secret: bytes,
        guard: RequestGuard,
    ):
        self._codes = codes
        self._mailer = mailer
        self._signer = signer
        self._secret = pseudonym_secret
        self._guard = guard

    async def begin(
        self, email: str, country: str, territory: str, client_ip: str, declares_adult: bool = False
    ) -> StartedVerification:
        with counted_verification(EMAIL, success=CODE_SENT):
            return await self._begin(email, country, territory, client_ip, declares_adult)

    async def complete(self, verification_id: str, code: str, client_ip: str) -> IssuedCredential:
        with counted_verification(EMAIL):
            return await self._complete(verification_id, code, client_ip)

    async def _begin(
        self, email: str, country: str, territory: str, client_ip: str, declares_adult: bool
    ) -> StartedVerification:
        if not email:
            raise invalid("email", "is required")
        try:
            mailbox = normalise(email)
        except InvalidEmail as error:
            raise invalid("email", str(error)) from None
        if country and not is_country(country):
            raise invalid("country", "must be an ISO 3166-1 alpha-2 code in capitals, such as FR")
        if territory and not is_territory(territory):
            raise invalid("territory", "must be a code of the territory list, such as 75, 2A or 971")
        self._guard.check_blocked(ip=client_ip, domain=mailbox.domain)
        signer = email_pseudonym(self._secret, mailbox.address)
        # Before the limits: a refusal while locked costs the address nothing.
        await self._refuse_if_locked(signer)
        await self._guard.take(ip=client_ip, email_domain=mailbox.domain, mailbox=signer)
        try:
            # The declaration is kept with the code, so it is the one made
            # together with the proof of this mailbox.
            issued = await self._codes.issue(signer, country, territory, declares_adult)
        except CodeStoreUnavailable as error:
            raise _unavailable(error) from None
        try:
            # The code goes to the address as the person typed it: that is
            # the mailbox they read, whatever the canonical form.
            await self._mailer.send_code(email.strip(), issued.code, self._codes.ttl_seconds // 60)
        except MailNotSent as error:
            await self._codes.forget(issued.verification_id)
            raise DomainError(ErrorKind.UNAVAILABLE, "MAIL_UNAVAILABLE", str(error), retry_after_seconds=30) from None
        CODES_SENT.inc()
        return StartedVerification(issued.verification_id, time.time() + self._codes.ttl_seconds)

    async def _refuse_if_locked(self, signer: str) -> None:
        try:
            locked_for = await self._codes.locked_for(signer)
        except CodeStoreUnavailable as error:
            raise _unavailable(error) from None
        if locked_for > 0:
            raise _locked(locked_for)

    async def _complete(self, verification_id: str, code: str, client_ip: str) -> IssuedCredential:
        if not verification_id or len(verification_id) > MAX_VERIFICATION_ID:
            raise invalid("verification_id", "is required and at most 64 characters")
        if not CODE.fullmatch(code):
            raise invalid("code", "must be the 6 digits from the email")
        self._guard.check_blocked(ip=client_ip)
        await self._guard.take(ip=client_ip)
        try:
            checked = await self._codes.check(verification_id, code)
        except CodeStoreUnavailable as error:
            raise _unavailable(error) from None
        if checked.result is CheckResult.GONE:
            raise DomainError(
                ErrorKind.NOT_FOUND,
                "VERIFICATION_NOT_FOUND",
                "this verification has expired or does not exist; ask for a new code",
            )
        if checked.result is CheckResult.LOCKED:
            raise _locked(checked.retry_after_seconds)
        if checked.result is CheckResult.EXHAUSTED:
            raise DomainError(
                ErrorKind.RESOURCE_EXHAUSTED,
                "TOO_MANY_ATTEMPTS",
                "too many wrong codes; ask for a new code",
            )
        if checked.result is CheckResult.WRONG:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "CODE_MISMATCH",
                f"the code is not right; {checked.attempts_left} attempt(s) left",
            )
        return self._signer.issue(
            SignerClaims(
                signer=checked.signer,
                method="email",
                assurance_level="email",
                country=checked.country,
                territory=checked.territory,
                # The person's own word, which only a petition type that
                # accepts declared adults counts.
                adult=checked.declares_adult,
                adult_basis=DECLARED if checked.declares_adult else "",
            )
        )
