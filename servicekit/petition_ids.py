"""The petition id rule, written once for every service (signing, tally,
the gateway, the petitions service), so none imports another's internals
for it."""

from __future__ import annotations

import re

# Petition ids appear in URLs, Redis keys and Cassandra partition keys.
# Matched whole (\A…\Z with fullmatch): with .match and `$`, "name\n" passed,
# as Python's `$` also matches before a final newline. The OpenAPI document
# publishes the same rule as PETITION_ID_SCHEMA_PATTERN, in JSON Schema's
# ECMA-262 regexes, where `$` is the end of the string and \A, \Z are not
# anchors at all.
_PETITION_ID_BODY = "[a-z0-9][a-z0-9-]{2,63}"
PETITION_ID = re.compile(rf"\A{_PETITION_ID_BODY}\Z")
PETITION_ID_SCHEMA_PATTERN = f"^{_PETITION_ID_BODY}$"
PETITION_ID_RULE = "must be 3 to 64 characters of a-z, 0-9 and '-'"
