"""Checking what a petition says before it is stored: every field matched
whole, one line where one line is meant, sizes bounded."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from petitions.v1 import petition_pb2
from servicekit.errors import invalid
from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE
from servicekit.text import has_control_characters

# Used with fullmatch (whole strings only; `$` would let "FR\n" through).
COUNTRY = re.compile(r"\A[A-Z]{2}\Z")
THRESHOLD_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
MAX_TITLE = 200
MAX_TEXT = 10_000
# Names, committee notes, reasons and threshold labels: one line each.
MAX_LINE = 200
MAX_REASON = 2_000
MAX_LINKS = 10
MAX_LINK = 2_000


def petition_id_of(requested: str) -> str:
    petition_id = requested or f"p-{uuid.uuid4().hex[:12]}"
    if not PETITION_ID.fullmatch(petition_id):
        raise invalid("id", PETITION_ID_RULE)
    return petition_id


def check_petition_id(petition_id: str, field: str = "petition_id") -> None:
    if not PETITION_ID.fullmatch(petition_id):
        raise invalid(field, PETITION_ID_RULE)


def title_of(title: str) -> str:
    title = title.strip()
    if not title:
        raise invalid("title", "is required")
    if len(title) > MAX_TITLE:
        raise invalid("title", f"is longer than {MAX_TITLE} characters")
    check_line("title", title)
    return title


def check_text(field: str, text: str, limit: int = MAX_TEXT) -> None:
    if len(text) > limit:
        raise invalid(field, f"is longer than {limit} characters")
    if has_control_characters(text, multiline=True):
        raise invalid(field, "must not contain control characters other than line feeds and tabs")


def check_line(field: str, value: str) -> None:
    """A line of free text: at most MAX_LINE characters, no control character."""
    if len(value) > MAX_LINE:
        raise invalid(field, f"is longer than {MAX_LINE} characters")
    if has_control_characters(value):
        raise invalid(field, "must be one line without control characters")


def required_line(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise invalid(field, "is required")
    check_line(field, value)
    return value


def check_thresholds(thresholds: list[petition_pb2.Threshold]) -> list[petition_pb2.Threshold]:
    seen: set[str] = set()
    for index, threshold in enumerate(thresholds):
        field = f"thresholds[{index}]"
        if not THRESHOLD_ID.fullmatch(threshold.id) or threshold.id in seen:
            raise invalid(f"{field}.id", "must be a unique id of a-z, 0-9 and '-' (up to 32)")
        if threshold.signatures <= 0:
            raise invalid(f"{field}.signatures", "must be positive")
        if threshold.min_territories < 0:
            raise invalid(f"{field}.min_territories", "must not be negative")
        check_line(f"{field}.label", threshold.label)
        seen.add(threshold.id)
    return sorted(thresholds, key=lambda t: t.signatures)


def check_countries(countries: list[str]) -> None:
    for country in countries:
        if not COUNTRY.fullmatch(country):
            raise invalid("eligibility.countries", f"{country!r} is not an ISO 3166-1 alpha-2 code")


def check_links(field: str, links: list[str]) -> None:
    if len(links) > MAX_LINKS:
        raise invalid(field, f"at most {MAX_LINKS} links")
    for index, link in enumerate(links):
        parts = urlsplit(link)
        if (
            len(link) > MAX_LINK
            or parts.scheme != "https"
            or not parts.hostname
            or has_control_characters(link)
            or any(c.isspace() for c in link)
        ):
            raise invalid(f"{field}[{index}]", "must be an https URL without spaces")


# A legislature's name, e.g. "17" or "2024-2029" (fullmatch).
LEGISLATURE = re.compile(r"[0-9A-Za-z-]{1,16}")


def check_legislature(field: str, name: str) -> None:
    if not LEGISLATURE.fullmatch(name):
        raise invalid(field, "must be 1 to 16 characters among A-Z, a-z, 0-9 and '-'")


def required_paragraph(field: str, value: str, limit: int = MAX_REASON) -> str:
    """A required paragraph of public text (a rejection's explanation): no
    line breaks, no control character, at most `limit` characters."""
    value = value.strip()
    if not value:
        raise invalid(field, "is required")
    if len(value) > limit:
        raise invalid(field, f"is longer than {limit} characters")
    if has_control_characters(value):
        raise invalid(field, "must be one paragraph, without line breaks or control characters")
    return value
