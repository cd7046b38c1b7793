"""Schema-based fuzzing of the HTTP API from the OpenAPI document in the repo
(schemathesis): valid and invalid requests for every operation; no answer is
a 5xx, every answer is one the document declares, and every error has the
documented Error body.

The live stream is left out: it never ends, so a fuzzer reading it would
wait forever; tests/test_gateway_live.py covers it."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.pages import OPENAPI_FILE
from tests.system import SystemClient

pytestmark = pytest.mark.stack

# Per operation and phase; with the coverage phase's own cases, the whole
# document takes well under a minute against the local stack.
MAX_EXAMPLES = 25
# aiohttp's limit on the request line and on each header line.
PARSER_LINE_LIMIT = 8190
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _schema() -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_path(OPENAPI_FILE)
    schema.config.update(request_timeout=15)
    # Unknown headers and query parameters are not errors on the web (every
    # browser and proxy adds its own), so they are not generated as such.
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none", allow_extra_parameters=False)
    return schema.exclude(path_regex=r"/tally/live$")


# Loaded at import from the file (the session's gateway address is known
# only later, so each call names it); schemathesis's lazy, fixture-loaded
# schema does not work with pytest 9.
schema = _schema()


@schema.parametrize()
def test_the_api_answers_every_generated_request_as_documented(
    case: schemathesis.Case[Any], system: SystemClient
) -> None:
    # A client address of its own per request: the test limits per address
    # are tight, and a 429 would hide what the request itself deserved.
    client = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    headers = {"X-Forwarded-For": client}
    base_url = system.namespace.gateway_url
    response = case.call(base_url=base_url, headers=headers, allow_redirects=False)
    if _beyond_the_parser(response.request):
        # Refused by aiohttp's HTTP parser before any gateway code runs
        # (documented in the OpenAPI description): a plain-text 400.
        assert response.status_code == 400, response.text
        return
    case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs={"base_url": base_url})


def _beyond_the_parser(request: requests.PreparedRequest) -> bool:
    """True when the request line or a header line is longer than the HTTP
    parser accepts."""
    target = urlsplit(str(request.url))
    line = len(f"{request.method!s} {target.path}?{target.query} HTTP/1.1")
    fields = (len(name) + 2 + len(value) for name, value in request.headers.items())
    return max(line, *fields) > PARSER_LINE_LIMIT
