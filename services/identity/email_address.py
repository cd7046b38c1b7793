"""Email addresses reduced to the mailbox they reach, so that one mailbox is
one person however its address is written."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

# Providers that deliver "first.last+tag@" to "firstlast@": dots and
# sub-address tags are ignored, so they are dropped here too.
IGNORES_DOTS_AND_TAGS = {"gmail.com"}
# Domains that are another name for a provider above.
ALIASES = {"googlemail.com": "gmail.com"}
# Providers that deliver "name+tag@" to "name@" but keep dots significant.
IGNORES_TAGS = {
    "outlook.com",
    "hotmail.com",
    "live.com",
    "icloud.com",
    "me.com",
    "fastmail.com",
    "protonmail.com",
    "proton.me",
    "laposte.net",
}


class InvalidEmail(ValueError):
    pass


@dataclass(frozen=True)
class Mailbox:
    address: str
    domain: str


def normalise(raw: str) -> Mailbox:
    """The canonical form of an address; raises InvalidEmail."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidEmail(str(error)) from None
    local, domain = checked.local_part.lower(), checked.ascii_domain.lower()
    domain = ALIASES.get(domain, domain)
    if domain in IGNORES_DOTS_AND_TAGS:
        local = local.split("+", 1)[0].replace(".", "")
    elif domain in IGNORES_TAGS:
        local = local.split("+", 1)[0]
    return Mailbox(f"{local}@{domain}", domain)
