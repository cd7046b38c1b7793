"""Free text that people write (a petition's title, text, author, labels, a
moderation reason) and that others read back: on a page, in open data, in a
CSV opened in a spreadsheet, in a terminal. No validator can say what such
text means, but none of it has any use for control characters (NUL, escape
sequences, a bare CR that rewrites a line), so they are refused; a text of
several lines keeps its line feeds and tabs."""

from __future__ import annotations

import unicodedata

# The whitespace controls a multi-line text may hold.
LINE_CONTROLS = frozenset("\n\t")


def has_control_characters(text: str, *, multiline: bool = False) -> bool:
    """True when text holds a control character (Unicode category Cc), other
    than a line feed or a tab in a multi-line text."""
    allowed = LINE_CONTROLS if multiline else frozenset()
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in text)
