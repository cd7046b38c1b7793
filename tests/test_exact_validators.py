"""Validators match the whole string (issue 13, item 1).

A pattern written `^...$` and used with `re.match` lets "x\\n" through,
because `$` also matches before a final newline: an admin could create the
petition "name\\n", which then took signatures and broke the gateway's
open-data download. Every input field checked by a pattern gets one test
here: a trailing "\\n", "\\r\\n" and NUL (and, over HTTP, a lone surrogate,
which protobuf cannot carry as a string) are refused with INVALID_ARGUMENT
(gRPC) or 400 (gateway) on that field, and the refused request changed
nothing. A static check keeps `.match(` and `$` out of the tree's patterns.

Also here (issue 13, item 10): the operator CLI under a closed pipe.
"""

from __future__ import annotations

import ast
import asyncio
import fcntl
import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jsonschema_rs
import pytest
from yarl import URL

from petitions.v1 import petition_pb2, petitions_pb2, signing_pb2, tally_pb2
from services.devidp.authorization import AuthorizationRefused, AuthorizationRequest, CodeStore
from services.gateway.pages import OPENAPI_FILE
from tests.errors import Rejection, rejection
from tests.gateway_http import assert_error, client_ip
from tests.harness import REPO, Namespace
from tests.system import SystemClient

# What protobuf can carry in a string field; a lone surrogate it cannot
# (the client refuses to encode it), so gRPC fields are tested with these.
JUNK = {"lf": "\n", "crlf": "\r\n", "nul": "\x00"}
# Over HTTP a lone surrogate can arrive too: JSON may escape one.
HTTP_JUNK = {**JUNK, "surrogate": "\udc80"}
# The same, percent-encoded for a URL; %ED%B2%80 is U+DC80 written as if it
# were UTF-8 (which forbids surrogates).
URL_JUNK = {"lf": "%0A", "crlf": "%0D%0A", "nul": "%00", "surrogate": "%ED%B2%80"}

needs_stack = pytest.mark.stack
junk = pytest.mark.parametrize("suffix", list(JUNK.values()), ids=list(JUNK))
http_junk = pytest.mark.parametrize("suffix", list(HTTP_JUNK.values()), ids=list(HTTP_JUNK))
url_junk = pytest.mark.parametrize("suffix", list(URL_JUNK.values()), ids=list(URL_JUNK))
ACCEPTED = signing_pb2.SignResponse.OUTCOME_ACCEPTED


def refused(call: Callable[[], object], field: str) -> Rejection:
    """The call fails with INVALID_ARGUMENT naming exactly this field."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    rejected = rejection(caught.value)
    assert rejected.code == grpc.StatusCode.INVALID_ARGUMENT, rejected
    assert rejected.fields == [field], rejected
    return rejected


def hex_digits(count: int) -> str:
    return "".join(random.choices("0123456789abcdef", k=count))


def petition_exists(system: SystemClient, petition_id: str) -> bool:
    """Read from Cassandra, as an auditor would, whatever the API says."""
    rows = system.cassandra.execute("SELECT id FROM petition_records WHERE id = %s", (petition_id,))
    return rows.one() is not None


@pytest.fixture(scope="module")
def petition(system: SystemClient) -> petition_pb2.Petition:
    return system.create_petition("Exact validators")


# signing: Sign


@needs_stack
@junk
def test_sign_refuses_a_petition_id_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str
) -> None:
    credential = system.credential(f"exact-{uuid.uuid4().hex[:8]}")
    refused(lambda: system.sign(credential.token, petition.id + suffix), "petition_id")
    # The refusal claimed nothing: the same person can still sign.
    assert system.sign(credential.token, petition.id).outcome == ACCEPTED


@needs_stack
@junk
def test_sign_refuses_an_idempotency_key_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str
) -> None:
    credential = system.credential(f"exact-{uuid.uuid4().hex[:8]}")
    key = f"key-{uuid.uuid4().hex[:8]}"
    refused(lambda: system.sign(credential.token, petition.id, idempotency_key=key + suffix), "idempotency_key")
    assert system.sign(credential.token, petition.id, idempotency_key=key).outcome == ACCEPTED


@needs_stack
@junk
@pytest.mark.parametrize("kind", ["ipv4", "ipv6-scoped"])
def test_sign_refuses_a_client_ip_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str, kind: str
) -> None:
    # An IPv6 scope (the part after %) is free text to Python's ipaddress.
    address = (
        f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        if kind == "ipv4"
        else f"fe80::{random.randrange(1, 0xFFFF):x}%eth0"
    )
    credential = system.credential(f"exact-{uuid.uuid4().hex[:8]}")
    refused(lambda: system.sign(credential.token, petition.id, client_ip=address + suffix), "client_ip")
    assert system.sign(credential.token, petition.id, client_ip=address).outcome == ACCEPTED


@needs_stack
@junk
@pytest.mark.parametrize("method", ["ExchangeIdToken", "BeginEmailVerification", "CompleteEmailVerification"])
def test_identity_refuses_a_client_ip_with_trailing_junk(system: SystemClient, suffix: str, method: str) -> None:
    """Identity checks client_ip through servicekit's fraud limits, the same
    rule as signing's."""
    address = f"fe80::{random.randrange(1, 0xFFFF):x}%eth0" + suffix
    mailbox = f"exact-{uuid.uuid4().hex[:8]}@example.org"
    calls: dict[str, Callable[[], object]] = {
        "ExchangeIdToken": lambda: system.exchange(system.id_token(f"exact-{uuid.uuid4().hex[:8]}"), address),
        "BeginEmailVerification": lambda: system.begin_email(mailbox, client_ip=address),
        "CompleteEmailVerification": lambda: system.complete_email(uuid.uuid4().hex, "123456", client_ip=address),
    }
    refused(calls[method], "client_ip")
    assert not system.mail_to(mailbox, timeout=0), "a refused request sent a code"


# the petitions service


def _create(system: SystemClient, petition_id: str, **fields: Any) -> Callable[[], object]:
    return lambda: system.create_petition("Junk", id=petition_id, **fields)


@needs_stack
@junk
def test_create_petition_refuses_an_id_with_trailing_junk(system: SystemClient, suffix: str) -> None:
    petition_id = f"t-{uuid.uuid4().hex[:12]}"
    refused(_create(system, petition_id + suffix), "id")
    assert not petition_exists(system, petition_id + suffix)


@needs_stack
@junk
def test_create_petition_refuses_a_threshold_id_with_trailing_junk(system: SystemClient, suffix: str) -> None:
    petition_id = f"t-{uuid.uuid4().hex[:12]}"
    thresholds = [petition_pb2.Threshold(id="debate" + suffix, label="Debate", signatures=10)]
    refused(_create(system, petition_id, thresholds=thresholds), "thresholds[0].id")
    assert not petition_exists(system, petition_id)


@needs_stack
@junk
def test_create_petition_refuses_an_eligible_country_with_trailing_junk(system: SystemClient, suffix: str) -> None:
    petition_id = f"t-{uuid.uuid4().hex[:12]}"
    eligibility = petition_pb2.Eligibility(countries=["FR" + suffix])
    refused(_create(system, petition_id, eligibility=eligibility), "eligibility.countries")
    assert not petition_exists(system, petition_id)


# Free text: no control character (a NUL, an escape sequence, a bare CR
# that rewrites a line in a terminal or a CSV); a multi-line text keeps its
# line feeds and tabs.
CONTROLS = {"nul": "\x00", "escape": "\x1b[2J", "cr": "\r", "del": "\x7f", "c1": "\x85"}


@needs_stack
@pytest.mark.parametrize("control", CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("title", lambda bad: {"title": f"A {bad} title"}),
        ("text", lambda bad: {"text": f"First line\nsecond {bad} line"}),
        ("author", lambda bad: {"author": f"Jean {bad}"}),
        ("author_name", lambda bad: {"author_name": f"Jean {bad}"}),
        ("rapporteur", lambda bad: {"rapporteur": f"Mme {bad}"}),
        ("thresholds[0].label", lambda bad: {"thresholds": [petition_pb2.Threshold(id="d", label=bad, signatures=5)]}),
    ],
    ids=["title", "text", "author", "author_name", "rapporteur", "label"],
)
def test_create_petition_refuses_control_characters_in_free_text(
    system: SystemClient, control: str, field: str, fields: Callable[[str], dict[str, Any]]
) -> None:
    petition_id = f"t-{uuid.uuid4().hex[:12]}"
    values = {"title": "Free text", **fields(control)}
    title = values.pop("title")
    refused(lambda: system.create_petition(title, id=petition_id, **values), field)
    assert not petition_exists(system, petition_id)


@needs_stack
def test_a_petition_text_keeps_its_line_feeds_and_tabs(system: SystemClient) -> None:
    text = "Considérant que :\n\t- premier point ;\n\t- second point.\n"
    assert system.create_petition("Several lines", text=text, author="Anne-Marie Dupré").text == text


@needs_stack
@pytest.mark.parametrize("field", ["author", "author_name", "rapporteur"])
def test_create_petition_refuses_a_line_of_free_text_too_long(system: SystemClient, field: str) -> None:
    petition_id = f"t-{uuid.uuid4().hex[:12]}"
    too_long: dict[str, Any] = {field: "x" * 201}
    refused(lambda: system.create_petition("Long", id=petition_id, **too_long), field)
    assert not petition_exists(system, petition_id)


@needs_stack
@junk
@pytest.mark.parametrize("method", ["GetPetition", "ClosePetition", "ClassPetition", "SuggestCommittee"])
def test_petition_reads_and_changes_refuse_a_petition_id_with_trailing_junk(
    system: SystemClient, suffix: str, method: str
) -> None:
    opened = system.create_petition("Open", open_now=True)
    request = {
        "GetPetition": petitions_pb2.GetPetitionRequest(petition_id=opened.id + suffix),
        "ClosePetition": petitions_pb2.ClosePetitionRequest(petition_id=opened.id + suffix, reason="junk"),
        "ClassPetition": petitions_pb2.ClassPetitionRequest(petition_id=opened.id + suffix, reason="junk"),
        "SuggestCommittee": petitions_pb2.SuggestCommitteeRequest(petition_id=opened.id + suffix),
    }[method]
    stub = getattr(system.petitions, method)
    refused(lambda: stub(request, metadata=system.staff("staff-clerk"), timeout=10), "petition_id")
    unchanged = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=opened.id), timeout=10)
    assert (unchanged.state, unchanged.version) == (petition_pb2.PETITION_STATE_OPEN, opened.version)


@needs_stack
@junk
def test_list_petitions_refuses_a_page_token_with_trailing_junk(system: SystemClient, suffix: str) -> None:
    for _ in range(2):
        system.create_petition("Listed")
    first = system.petitions.ListPetitions(petitions_pb2.ListPetitionsRequest(page_size=1), timeout=10)
    assert first.next_page_token
    request = petitions_pb2.ListPetitionsRequest(page_size=1, page_token=first.next_page_token + suffix)
    refused(lambda: system.petitions.ListPetitions(request, timeout=10), "page_token")


# signing: moderation


def _invalidate(
    system: SystemClient, petition_id: str, signers: list[str], ip_hash: str = "", reason: str = "exact validators"
) -> Callable[[], object]:
    request = signing_pb2.InvalidateSignaturesRequest(
        petition_id=petition_id, signers=signers, ip_hash=ip_hash, reason=reason
    )
    return lambda: system.signing.InvalidateSignatures(request, metadata=system.admin(), timeout=30)


@needs_stack
@junk
@pytest.mark.parametrize("field", ["petition_id", "signers[0]", "ip_hash"])
def test_invalidate_signatures_refuses_a_field_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str, field: str
) -> None:
    ends_before = system.end_offsets()
    if field == "petition_id":
        call = _invalidate(system, petition.id + suffix, [hex_digits(64)])
    elif field == "signers[0]":
        call = _invalidate(system, petition.id, [hex_digits(64) + suffix])
    else:
        call = _invalidate(system, petition.id, [], ip_hash=hex_digits(32) + suffix)
    refused(call, field)
    assert system.end_offsets() == ends_before, "a refused invalidation published something"


@needs_stack
@pytest.mark.parametrize("control", CONTROLS.values(), ids=CONTROLS.keys())
def test_invalidate_signatures_refuses_control_characters_in_its_reason(
    system: SystemClient, petition: petition_pb2.Petition, control: str
) -> None:
    ends_before = system.end_offsets()
    refused(_invalidate(system, petition.id, [hex_digits(64)], reason=f"fraud{control}"), "reason")
    assert system.end_offsets() == ends_before, "a refused invalidation published something"


# tally


@needs_stack
@junk
def test_get_tally_refuses_a_petition_id_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str
) -> None:
    refused(lambda: system.get_tally(petition.id + suffix), "petition_id")


@needs_stack
@junk
def test_watch_tally_refuses_a_petition_id_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str
) -> None:
    def watch() -> object:
        stream = system.tally.WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition.id + suffix), timeout=10)
        try:
            return next(stream)
        finally:
            stream.cancel()

    refused(watch, "petition_id")


# The gateway


async def _http(namespace: Namespace, method: str, path_and_query: str, **options: Any) -> tuple[int, Any]:
    """One request, the URL sent exactly as written (already percent-encoded)."""
    url = URL(namespace.gateway_url + path_and_query, encoded=True)
    headers = {"X-Forwarded-For": client_ip(), **options.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, **options) as response,
    ):
        return response.status, await response.json(content_type=None)


def assert_field_refused(status: int, body: Any, field: str) -> None:
    error = assert_error(status, body, 400, "INVALID_FIELD")
    assert [v["field"] for v in error["field_violations"]] == [field], body


GATEWAY_PETITION_ROUTES = [
    pytest.param("GET", "", id="petition"),
    pytest.param("POST", "/signatures", id="signatures"),
    pytest.param("GET", "/tally", id="tally"),
    pytest.param("GET", "/tally/live", id="tally-live"),
    pytest.param("GET", "/open-data.json", id="open-data-json"),
    pytest.param("GET", "/open-data.csv", id="open-data-csv"),
]


@needs_stack
@url_junk
@pytest.mark.parametrize(("method", "route"), GATEWAY_PETITION_ROUTES)
async def test_gateway_refuses_a_petition_id_path_segment_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str, method: str, route: str
) -> None:
    # A POST carries an empty JSON object, so that only the path is wrong.
    body_of_post: dict[str, Any] = {"json": {}} if method == "POST" else {}
    status, body = await _http(
        system.namespace, method, f"/api/v1/petitions/{petition.id}{suffix}{route}", **body_of_post
    )
    assert_field_refused(status, body, "petition_id")


@needs_stack
@http_junk
async def test_gateway_refuses_an_idempotency_key_body_field_with_trailing_junk(
    system: SystemClient, petition: petition_pb2.Petition, suffix: str
) -> None:
    credential = system.credential(f"exact-{uuid.uuid4().hex[:8]}")
    # json.dumps escapes the control characters and the surrogate.
    body = json.dumps({"idempotency_key": "abcdefgh" + suffix}).encode()
    status, answer = await _http(
        system.namespace,
        "POST",
        f"/api/v1/petitions/{petition.id}/signatures",
        headers={"Authorization": f"Bearer {credential.token}", "Content-Type": "application/json"},
        data=body,
    )
    assert_field_refused(status, answer, "idempotency_key")
    assert system.sign(credential.token, petition.id).outcome == ACCEPTED


@needs_stack
@url_junk
async def test_gateway_refuses_a_page_token_with_trailing_junk(system: SystemClient, suffix: str) -> None:
    for _ in range(2):
        system.create_petition("Listed")
    status, first = await _http(system.namespace, "GET", "/api/v1/petitions?page_size=1")
    assert status == 200, first
    token = first["next_page_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
    status, body = await _http(system.namespace, "GET", f"/api/v1/petitions?page_size=1&page_token={token}{suffix}")
    assert_field_refused(status, body, "page_token")


@needs_stack
@url_junk
@pytest.mark.parametrize(("field", "value"), [("state", "PETITION_STATE_OPEN"), ("page_size", "1")])
async def test_gateway_refuses_a_listing_query_field_with_trailing_junk(
    system: SystemClient, suffix: str, field: str, value: str
) -> None:
    status, body = await _http(system.namespace, "GET", f"/api/v1/petitions?{field}={value}{suffix}")
    assert_field_refused(status, body, field)


@needs_stack
@pytest.mark.parametrize("digits", ["%C2%B2", "1%C2%B2", "%D9%A1"])
async def test_gateway_refuses_a_page_size_in_digits_other_than_ascii(system: SystemClient, digits: str) -> None:
    # "²" is str.isdigit() but not int(): it used to be a 500.
    status, body = await _http(system.namespace, "GET", f"/api/v1/petitions?page_size={digits}")
    assert_field_refused(status, body, "page_size")


async def _raw_request(namespace: Namespace, head: bytes) -> tuple[int, Any]:
    """One HTTP/1.1 request written byte for byte: a client library would
    refuse or re-encode the header values these tests send."""
    url = URL(namespace.gateway_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head + f"Host: {url.host}\r\nX-Forwarded-For: {client_ip()}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


# "1000" with a superscript two, and 1000 in Arabic-Indic digits, are
# digits to str.isdigit(); aiohttp reads header bytes as UTF-8. The first
# crashed int() (a 500), the second was taken as 1000.
@needs_stack
@pytest.mark.parametrize("value", ["1000\u00b2", "\u0661\u0660\u0660\u0660"], ids=["superscript", "arabic-indic"])
async def test_gateway_refuses_a_timeout_header_of_non_ascii_digits(
    system: SystemClient, petition: petition_pb2.Petition, value: str
) -> None:
    head = f"GET /api/v1/petitions/{petition.id}/tally HTTP/1.1\r\nX-Request-Timeout-Ms: {value}\r\n".encode()
    status, body = await _raw_request(system.namespace, head)
    assert_field_refused(status, body, "X-Request-Timeout-Ms")


# The dev identity provider: its persona form's fields (pure logic; its
# HTTP form strips whitespace before these checks, so only a unit test
# reaches them with a trailing newline).

DEV_AUTHORIZATION = AuthorizationRequest("client", "http://127.0.0.1/callback", "state", "nonce", "")


@http_junk
@pytest.mark.parametrize("field", ["persona", "country", "territory"])
def test_dev_provider_refuses_a_sign_in_field_with_trailing_junk(suffix: str, field: str) -> None:
    values = {"persona": "alice", "country": "FR", "territory": "75"}
    codes = CodeStore()
    assert codes.issue(DEV_AUTHORIZATION, **values)
    values[field] += suffix
    with pytest.raises(AuthorizationRefused, match=field):
        codes.issue(DEV_AUTHORIZATION, **values)


# The OpenAPI document publishes the petition id's pattern; JSON Schema reads
# it as an ECMA-262 regex, where `$` is the end of the string and \A, \Z are
# not anchors at all.


# (A lone surrogate cannot be given to jsonschema_rs, which takes UTF-8; the
# gateway refuses one before any schema.)
@pytest.mark.parametrize("value", ["demo", *(f"demo{suffix}" for suffix in JUNK.values())])
def test_the_published_petition_id_pattern_is_exact_in_json_schema(value: str) -> None:
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    schemas = [
        parameter["schema"]
        for path in document["paths"].values()
        for operation in path.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "petition_id"
    ]
    assert schemas
    for schema in schemas:
        assert jsonschema_rs.validator_for(schema).is_valid(value) is (value == "demo"), schema


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_every_published_pattern_is_a_json_schema_regex_anchored_at_both_ends() -> None:
    # A Python-only anchor (\A, \Z) is not ECMA-262: a client's validator
    # refuses the schema, or reads the pattern as something else.
    patterns = set(_patterns(json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))))
    assert patterns
    for pattern in patterns:
        assert pattern.startswith("^"), pattern
        assert pattern.endswith("$"), pattern
        jsonschema_rs.validator_for({"type": "string", "pattern": pattern})


# The static check: no pattern in the tree can end at a newline.

SOURCE_DIRS = ("services", "servicekit", "deploy", "tools", "loadtests")


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for directory in SOURCE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_re(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "re"


def _literal(node: ast.expr) -> str:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def _compiled_patterns(tree: ast.Module) -> dict[str, str]:
    """Names bound to re.compile(...) in a module, with their pattern."""
    return {
        target.id: _literal(node.value.args[0]) if node.value.args else ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "compile"
        and _is_re(node.value.func.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _ends_at_dollar(pattern: str) -> bool:
    return pattern.endswith("$") and not pattern.endswith("\\$")


def _pattern_flaws(path: Path, tree: ast.Module, compiled: dict[str, str]) -> Iterator[str]:
    """`.match(...)` (re's or a compiled pattern's, defined here or imported,
    e.g. `model.PETITION_ID.match`): it accepts any string that merely
    starts right; and `.search(...)` with a pattern ending in `$`, which also
    matches before a final newline. A validator uses fullmatch."""
    where = path.relative_to(REPO)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        is_pattern = owner_name in compiled and not _is_re(owner)
        if node.func.attr == "match" and (_is_re(owner) or is_pattern):
            yield f"{where}:{node.lineno}: .match() accepts a prefix; use .fullmatch()"
        if node.func.attr == "search":
            pattern = _literal(node.args[0]) if _is_re(owner) and node.args else compiled.get(owner_name, "")
            if (_is_re(owner) or is_pattern) and _ends_at_dollar(pattern):
                yield f"{where}:{node.lineno}: {pattern!r} ends in $, which matches before a final newline"


def test_no_pattern_in_the_tree_lets_a_trailing_newline_through() -> None:
    sources = list(_sources())
    compiled = {name: pattern for _, tree in sources for name, pattern in _compiled_patterns(tree).items()}
    flaws = [flaw for path, tree in sources for flaw in _pattern_flaws(path, tree, compiled)]
    assert not flaws, "\n".join(flaws)


# The operator CLI in a pipeline (issue 13, item 10): `petitions ... | head`
# must end quietly when head has read enough. Exit status 141 (128 +
# SIGPIPE) is what a shell reports for any Unix tool whose reader left.


def _petitions_command() -> list[str]:
    """The installed console script, as an operator runs it."""
    script = Path(sys.executable).parent / "petitions"
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]


def _run_into_pipe(env: dict[str, str], args: list[str], *, lines_read: int) -> tuple[int, str]:
    """Runs `petitions ARGS | head -n LINES_READ` (0: a reader that has
    already gone); the exit status and standard error."""
    read_end, write_end = os.pipe()
    # One page: output longer than that cannot all be in the pipe when the
    # reader goes (a default pipe holds 64 KiB).
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    if not lines_read:
        os.close(read_end)
    with subprocess.Popen(
        [*_petitions_command(), *args], cwd=REPO, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True
    ) as process:
        os.close(write_end)
        if lines_read:
            seen = b""
            while seen.count(b"\n") < lines_read:
                chunk = os.read(read_end, 1)
                assert chunk, f"the command ended before writing {lines_read} lines"
                seen += chunk
            os.close(read_end)
        _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def assert_quiet_exit(status: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipeError" not in stderr, stderr
    assert stderr == "", stderr
    assert status == 141, (status, stderr)


@needs_stack
@pytest.mark.parametrize("form", ["json", "csv"])
def test_cli_open_data_into_a_pipe_whose_reader_has_gone_exits_quietly(
    system: SystemClient, petition: petition_pb2.Petition, form: str
) -> None:
    env = system.namespace.env(system.stack)
    assert_quiet_exit(*_run_into_pipe(env, ["open-data", "--format", form, petition.id], lines_read=0))


@needs_stack
def test_cli_tally_into_a_pipe_whose_reader_has_gone_exits_quietly(
    system: SystemClient, petition: petition_pb2.Petition
) -> None:
    """Short output: it is written when Python flushes standard output at
    exit, after the reader has gone."""
    env = system.namespace.env(system.stack)
    assert_quiet_exit(*_run_into_pipe(env, ["tally", petition.id], lines_read=0))


@needs_stack
def test_cli_recount_into_a_pipe_closed_after_one_line_exits_quietly(system: SystemClient) -> None:
    """`petitions recount | head -1` over many petitions: a line each (45
    bytes), far more than the pipe holds, so the reader goes mid-output."""
    petitions = [system.create_petition(f"Recounted {i}").id for i in range(150)]
    env = system.namespace.env(system.stack)
    assert_quiet_exit(*_run_into_pipe(env, ["recount", *petitions], lines_read=1))
