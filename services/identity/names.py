"""The names an identified provider gives, made into the name an author
publishes or a member of staff acts under.

Only these two uses read a name; a signer's never is. The result is public
(an author's display name is petition content) or shown to colleagues and
kept in the audit trail (a staff name), so it is one clean line: the
provider's text, NFC-normalised, whitespace runs made single spaces, no
control character, of bounded length.
"""

from __future__ import annotations

import enum
import unicodedata
from typing import Any

from servicekit.errors import DomainError, ErrorKind
from servicekit.text import has_control_characters

# A petition's author field holds at most 200 characters: two names and a
# space always fit.
MAX_NAME_LENGTH = 99
GIVEN_NAME_CLAIM = "given_name"
FAMILY_NAME_CLAIM = "family_name"


class NameForm(enum.Enum):
    """How much of the verified name the author agreed to publish."""

    # "Marie D.": the given name and the initial of the family name.
    GIVEN_NAME_AND_INITIAL = "given_name_and_initial"
    # "Marie Dupont".
    FULL_NAME = "full_name"


def _missing(claim: str, why: str) -> DomainError:
    return DomainError(
        ErrorKind.FAILED_PRECONDITION,
        "NAME_MISSING",
        f"the identity provider's {claim} {why}; a name is needed here, and only the provider can give it",
    )


def _name(claims: dict[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if value is None:
        raise _missing(claim, "is missing")
    if not isinstance(value, str):
        raise _missing(claim, "is not a text")
    # Whitespace controls (a tab, a line feed) are spacing, not content: they
    # are folded into single spaces before any other control is refused.
    name = " ".join(unicodedata.normalize("NFC", value).split())
    if not name:
        raise _missing(claim, "is blank")
    if has_control_characters(name):
        raise _missing(claim, "holds control characters")
    if len(name) > MAX_NAME_LENGTH:
        raise _missing(claim, f"is longer than {MAX_NAME_LENGTH} characters")
    return name


def _initial(family_name: str) -> str:
    first = family_name[0]
    capital = first.upper()
    # "ß".upper() is "SS": an initial is one letter, so keep it as written.
    return (capital if len(capital) == 1 else first) + "."


def display_name(claims: dict[str, Any], form: NameForm) -> str:
    """The author's display name in the form they chose, or NAME_MISSING."""
    given = _name(claims, GIVEN_NAME_CLAIM)
    family = _name(claims, FAMILY_NAME_CLAIM)
    if form is NameForm.FULL_NAME:
        return f"{given} {family}"
    return f"{given} {_initial(family)}"


def full_name(claims: dict[str, Any]) -> str:
    """A member of staff's name: they act in their own, whole name."""
    return f"{_name(claims, GIVEN_NAME_CLAIM)} {_name(claims, FAMILY_NAME_CLAIM)}"
