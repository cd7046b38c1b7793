"""The life of a petition run with the operator CLI alone (`petitions …`,
as an Assemblée clerk or a UK moderator would): credentials from identity
through the dev providers, every change through the Petitions service, each
command printing the petition as proto3 JSON, and each refusal printing the
gRPC status, reason and message on standard error with exit status 1 and
nothing changed."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from petitions.v1 import petition_pb2, petitions_pb2
from services import cli
from tests.harness import run_cli
from tests.system import SystemClient
from tests.waiting import eventually

Env = dict[str, str]


@pytest.fixture(scope="module")
def env(system: SystemClient) -> Env:
    environment = system.namespace.env(system.stack)
    # The identified provider, where authors and staff sign in.
    assert environment["PETITIONS_DEVIDP_IDENTIFIED_URL"] == system.namespace.identified_devidp_url
    return environment


def ok(env: Env, *args: str) -> Any:
    """Runs `petitions ARGS`, which must succeed; its JSON output."""
    result = run_cli(env, *args)
    assert result.returncode == 0, f"petitions {' '.join(args[:2])} failed:\n{result.stderr}"
    return json.loads(result.stdout)


def refused(env: Env, *args: str) -> str:
    """Runs `petitions ARGS`, which the service must refuse; its standard
    error (nothing on standard output)."""
    result = run_cli(env, *args)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def token(env: Env, *args: str) -> str:
    result = run_cli(env, *args)
    assert result.returncode == 0, f"petitions {args[0]} failed:\n{result.stderr}"
    credential = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", credential), result.stdout
    return credential


def staff(env: Env, persona: str) -> str:
    return token(env, "dev-staff-credential", "--persona", persona)


def author(system: SystemClient, env: Env, birthdate: str = "1985-04-02") -> str:
    persona = f"cli-author-{uuid.uuid4().hex[:8]}"
    system.raw_identities.update({f"dev-persona:{persona}", persona})
    return token(
        env,
        "dev-author-credential",
        "--persona",
        persona,
        "--birthdate",
        birthdate,
        "--given-name",
        "Camille",
        "--family-name",
        "Durand",
    )


def signer(system: SystemClient, env: Env) -> str:
    persona = f"cli-sponsor-{uuid.uuid4().hex[:8]}"
    system.raw_identities.update({f"dev-persona:{persona}", persona})
    return token(env, "dev-signer-credential", "--persona", persona)


def audit_rows(env: Env, credential: str, petition_id: str) -> list[list[str]]:
    """The audit table's rows (header first), cells split on the column gaps."""
    result = run_cli(env, "audit", petition_id, "--credential", credential)
    assert result.returncode == 0, result.stderr
    return [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]


def test_an_assemblee_petition_from_deposit_to_classement_with_the_cli_alone(system: SystemClient, env: Env) -> None:
    # A minor cannot deposit: identity refuses the author credential.
    minor = f"cli-minor-{uuid.uuid4().hex[:8]}"
    system.raw_identities.update({f"dev-persona:{minor}", minor})
    stderr = refused(env, "dev-author-credential", "--persona", minor, "--birthdate", "2014-05-01")
    assert "FAILED_PRECONDITION AUTHOR_NOT_ADULT" in stderr

    writer = author(system, env)
    draft = ok(
        env,
        "draft",
        "--credential",
        writer,
        "--type",
        "assemblee",
        "--title",
        "Rénover les écoles et les collèges",
        "--text",
        "Des écoles dignes pour chaque élève :\nun plan de rénovation des collèges.",
    )
    petition_id = draft["id"]
    assert draft["state"] == "PETITION_STATE_DRAFT"
    assert draft["author_name"] == "Camille D."

    # The author credential may come from the environment as well.
    submitted = ok({**env, "PETITIONS_CREDENTIAL": writer}, "submit", petition_id)
    assert submitted["state"] == "PETITION_STATE_SUBMITTED"

    moderator = staff(env, "staff-moderator-a")
    opened = ok(env, "review", petition_id, "--open", "--credential", moderator)
    assert opened["state"] == "PETITION_STATE_OPEN"

    # Anonymous adults sign it (the adults-only provider, FranceConnect-like).
    signing_env = {**env, "PETITIONS_DEVIDP_URL": system.namespace.adults_devidp_url}

    def signed() -> Any:
        result = run_cli(
            signing_env, "dev-sign", "--persona", f"cli-signer-{uuid.uuid4().hex[:8]}", "--petition", petition_id
        )
        # Until signing's view has the opening (within a second).
        return json.loads(result.stdout) if result.returncode == 0 else None

    assert eventually(signed, 15, interval=0.5)["receipt"]["outcome"] == "OUTCOME_ACCEPTED"

    clerk = staff(env, "staff-clerk")
    suggestions = ok(env, "suggest", petition_id, "--credential", clerk)["suggestions"]
    best = suggestions[0]
    assert best["committee"] == "affaires-culturelles"
    assert best["explanation"], "each suggestion says which rules matched"
    assigned = ok(env, "assign", petition_id, best["committee"], "--note", "suggested", "--credential", clerk)
    assert assigned["committee"] == "affaires-culturelles"
    assert [a["committee"] for a in assigned["assignments"]] == ["affaires-culturelles"]
    named = ok(env, "rapporteur", petition_id, "Mme Sophie Martin", "--credential", clerk)
    assert named["rapporteur"] == "Mme Sophie Martin"
    classed = ok(env, "class", petition_id, "--reason", "Examinée et classée par la commission", "--credential", clerk)
    assert classed["state"] == "PETITION_STATE_CLASSED"
    assert classed["closed_reason"] == "Examinée et classée par la commission"

    # Classement closes signing, in every signing process within a second.
    def not_open() -> str | None:
        result = run_cli(
            signing_env, "dev-sign", "--persona", f"cli-late-{uuid.uuid4().hex[:8]}", "--petition", petition_id
        )
        return result.stderr if result.returncode == 1 else None

    assert "FAILED_PRECONDITION PETITION_NOT_OPEN" in eventually(not_open, 15, interval=0.5)

    # The audit trail prints every step: who (role and name), what, the
    # states before and after, the reason given.
    header, *rows = audit_rows(env, clerk, petition_id)
    assert header == ["time", "version", "role", "actor", "action", "state", "reason"]
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [
        ("1", "author", "create", "- → draft"),
        ("2", "author", "submit", "draft → submitted"),
        ("3", "moderator", "open", "submitted → open"),
        ("4", "clerk", "assign", "open → open"),
        ("5", "clerk", "rapporteur", "open → open"),
        ("6", "clerk", "class", "open → classed"),
    ]
    assert rows[0][3] == "-", "an author's name is on the petition, not in the trail"
    assert rows[2][3] != "-", "staff act in their own name"
    assert rows[3][3] != "-", "staff act in their own name"
    assert rows[3][6] == "suggested"
    assert rows[5][6] == "Examinée et classée par la commission"
    assert all(re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z", r[0]) for r in rows)

    raw = ok(env, "audit", petition_id, "--format", "json", "--credential", moderator)["entries"]
    assert [(e["version"], e["action"]) for e in raw] == [
        ("1", "create"),
        ("2", "submit"),
        ("3", "open"),
        ("4", "assign"),
        ("5", "rapporteur"),
        ("6", "class"),
    ]


def test_a_uk_petition_with_sponsors_to_response_and_debate_and_a_duplicate_rejected(
    system: SystemClient, env: Env
) -> None:
    writer = author(system, env)
    petition_id = ok(
        env,
        "draft",
        "--credential",
        writer,
        "--type",
        "uk",
        "--title",
        "Fund local libraries",
        "--text",
        "Keep them open.",
    )["id"]
    gathering = ok(env, "submit", petition_id, "--credential", writer)
    assert (gathering["state"], gathering["sponsors_required"]) == ("PETITION_STATE_GATHERING_SPONSORS", 5)

    sponsors = [signer(system, env) for _ in range(5)]
    for count, sponsor in enumerate(sponsors[:4], start=1):
        answer = ok(env, "sponsor", petition_id, "--credential", sponsor)
        assert (answer["counted"], answer["petition"]["sponsors"]) == (True, count)
    again = ok(env, "sponsor", petition_id, "--credential", sponsors[0])
    assert again.get("counted", False) is False, "a repeated sponsor counts once"
    assert again["petition"]["sponsors"] == 4
    complete = ok(env, "sponsor", petition_id, "--credential", sponsors[4])
    assert complete["petition"]["state"] == "PETITION_STATE_SUBMITTED"

    moderator = staff(env, "staff-moderator-b")
    assert ok(env, "review", petition_id, "--open", "--credential", moderator)["state"] == "PETITION_STATE_OPEN"

    clerk = staff(env, "staff-clerk")
    # A response at 10,000 is recorded while signing goes on.
    responded = ok(
        env,
        "outcome",
        petition_id,
        "--response",
        "--date",
        "2026-03-02",
        "--text",
        "The Government supports local libraries.",
        "--link",
        "https://petition.parliament.uk/petitions/1/response",
        "--credential",
        clerk,
    )
    assert responded["state"] == "PETITION_STATE_OPEN"
    [response] = responded["outcomes"]
    assert (response["kind"], response["date"], response["links"]) == (
        "KIND_RESPONSE",
        "2026-03-02T00:00:00Z",
        ["https://petition.parliament.uk/petitions/1/response"],
    )
    closed = ok(env, "close", petition_id, "--reason", "closed early by the committee", "--credential", clerk)
    assert closed["state"] == "PETITION_STATE_CLOSED"
    debated = ok(
        env,
        "outcome",
        petition_id,
        "--debate",
        "--date",
        "2026-04-20",
        "--text",
        "Debated in Westminster Hall.",
        "--link",
        "https://hansard.parliament.uk/debate/1",
        "--link",
        "https://parliamentlive.tv/event/1",
        "--credential",
        clerk,
    )
    assert debated["state"] == "PETITION_STATE_DEBATED"
    assert [o["kind"] for o in debated["outcomes"]] == ["KIND_RESPONSE", "KIND_DEBATE"]

    # A second deposit of the same demand is rejected as its duplicate.
    duplicate = ok(env, "draft", "--credential", writer, "--title", "Save our libraries", "--text", "Same thing.")["id"]
    ok(env, "submit", duplicate, "--credential", writer)
    rejected = ok(
        env,
        "review",
        duplicate,
        "--reject",
        "duplicate",
        "--explanation",
        "There is already a petition about this issue.",
        "--duplicate-of",
        petition_id,
        "--credential",
        moderator,
    )
    assert rejected["state"] == "PETITION_STATE_REJECTED"
    assert rejected["rejection"] == {
        "reason_code": "duplicate",
        "explanation": "There is already a petition about this issue.",
        "duplicate_of": petition_id,
    }
    header, *rows = audit_rows(env, moderator, petition_id)
    assert header[4] == "action"
    actions = [r[4] for r in rows]
    assert actions[:2] == ["create", "submit"]
    assert actions[-4:] == ["open", "respond", "close", "debate"]
    assert rows[-2][5:] == ["open → closed", "closed early by the committee"]
    assert rows[-1][5] == "closed → debated"


def _version_and_trail(env: Env, credential: str, petition_id: str) -> tuple[str, int]:
    shown = ok(env, "show", petition_id, "--credential", credential)
    return shown["version"], len(audit_rows(env, credential, petition_id))


def test_refusals_print_status_and_reason_exit_1_and_change_nothing(system: SystemClient, env: Env) -> None:
    writer = author(system, env)
    petition_id = ok(env, "draft", "--credential", writer, "--title", "Refusals change nothing")["id"]
    ok(env, "submit", petition_id, "--credential", writer)
    moderator = staff(env, "staff-moderator-a")
    clerk = staff(env, "staff-clerk")
    before = _version_and_trail(env, moderator, petition_id)

    # A clerk cannot decide admissibility; an author credential is no staff one.
    assert "PERMISSION_DENIED WRONG_ROLE" in refused(env, "review", petition_id, "--open", "--credential", clerk)
    assert "PERMISSION_DENIED WRONG_ROLE" in refused(env, "review", petition_id, "--open", "--credential", writer)
    # No credential at all: the service says so, the CLI says where one goes.
    no_credential = refused({**env, "PETITIONS_CREDENTIAL": ""}, "review", petition_id, "--open")
    assert "UNAUTHENTICATED CREDENTIAL_REQUIRED" in no_credential
    assert "PETITIONS_CREDENTIAL" in no_credential
    # An unknown rejection code; a class before the petition is open.
    assert "NOT_FOUND UNKNOWN_REASON" in refused(
        env, "review", petition_id, "--reject", "no-such-reason", "--explanation", "x", "--credential", moderator
    )
    not_open = refused(env, "class", petition_id, "--reason", "too early", "--credential", clerk)
    assert "FAILED_PRECONDITION ILLEGAL_TRANSITION" in not_open
    assert "SUBMITTED" in not_open.upper()
    assert _version_and_trail(env, moderator, petition_id) == before

    # Two decisions: the second names the state the first left.
    ok(env, "review", petition_id, "--open", "--credential", moderator)
    after = _version_and_trail(env, moderator, petition_id)
    second = refused(env, "review", petition_id, "--open", "--credential", staff(env, "staff-moderator-b"))
    assert "FAILED_PRECONDITION ILLEGAL_TRANSITION" in second
    assert "OPEN" in second.upper()
    # A stale expected version is refused as a conflict.
    stale = refused(env, "rapporteur", petition_id, "M. Durand", "--expected-version", "1", "--credential", clerk)
    assert "FAILED_PRECONDITION VERSION_CONFLICT" in stale
    # Outcome links must be https.
    bad_link = refused(
        env,
        "outcome",
        petition_id,
        "--response",
        "--date",
        "2026-01-05",
        "--text",
        "x",
        "--link",
        "http://insecure.example/response",
        "--credential",
        clerk,
    )
    assert "INVALID_ARGUMENT" in bad_link
    assert re.search(r"\(fields: [a-z_.]*links\[0\]\)", bad_link), bad_link
    assert _version_and_trail(env, moderator, petition_id) == after


def test_create_petition_takes_every_field_as_an_administrator(system: SystemClient, env: Env) -> None:
    admin = staff(env, "staff-admin")
    petition_id = f"cli-{uuid.uuid4().hex[:10]}"
    created = ok(
        env,
        "create-petition",
        "--credential",
        admin,
        "--id",
        petition_id,
        "--type",
        "uk",
        "--title",
        "Imported from the previous platform",
        "--text",
        "Body",
        "--author",
        "imported-author-pseudonym",
        "--author-name",
        "Marie D.",
        "--committee",
        "lois",
        "--rapporteur",
        "M. Jean Dupont",
        "--opens-at",
        "2026-01-01T00:00:00Z",
        "--closes-at",
        "2036-07-01T02:00:00+02:00",
        "--threshold",
        "committee:100:2:Examined: by the committee",
        "--threshold",
        "response:10",
        "--country",
        "FR",
        "--country",
        "BE",
        "--adults-only",
        "--method",
        "oidc",
        "--method",
        "email",
        "--accept-declared-adults",
    )
    assert created["id"] == petition_id
    assert (created["type"], created["state"]) == ("uk", "PETITION_STATE_OPEN")
    assert (created["author"], created["author_name"]) == ("imported-author-pseudonym", "Marie D.")
    assert (created["committee"], created["rapporteur"]) == ("lois", "M. Jean Dupont")
    assert (created["opens_at"], created["closes_at"]) == ("2026-01-01T00:00:00Z", "2036-07-01T00:00:00Z")
    assert created["thresholds"] == [
        {"id": "response", "label": "response", "signatures": "10"},
        {"id": "committee", "label": "Examined: by the committee", "signatures": "100", "min_territories": 2},
    ]
    assert created["eligibility"] == {
        "countries": ["FR", "BE"],
        "adults_only": True,
        "methods": ["VERIFICATION_METHOD_OIDC", "VERIFICATION_METHOD_EMAIL"],
        "accept_declared_adults": True,
    }
    # A draft, and the same id again (--exist-ok for scripts that re-run).
    draft = ok(env, "create-petition", "--credential", admin, "--title", "Held back", "--draft")
    assert draft["state"] == "PETITION_STATE_DRAFT"
    again = run_cli(env, "create-petition", "--credential", admin, "--id", petition_id, "--title", "x", "--exist-ok")
    assert (again.returncode, again.stdout.strip()) == (0, f"petition {petition_id} already exists")
    assert "ALREADY_EXISTS" in refused(
        env, "create-petition", "--credential", admin, "--id", petition_id, "--title", "x"
    )

    # Only an administrator; a clerk's credential changes nothing.
    other = f"cli-{uuid.uuid4().hex[:10]}"
    assert "PERMISSION_DENIED WRONG_ROLE" in refused(
        env, "create-petition", "--credential", staff(env, "staff-clerk"), "--id", other, "--title", "No"
    )
    assert "NOT_FOUND PETITION_NOT_FOUND" in refused(env, "show", other, "--credential", admin)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create-petition", "--title", "x", "--threshold", "debate"], "is not ID:SIGNATURES"),
        (["create-petition", "--title", "x", "--threshold", "debate:1e5"], "is not ID:SIGNATURES"),
        (["create-petition", "--title", "x", "--threshold", "debate:100:many"], "is not ID:SIGNATURES"),
        (["create-petition", "--title", "x", "--opens-at", "2026-01-01T00:00:00"], "a time and a UTC offset"),
        (["create-petition", "--title", "x", "--closes-at", "2026-01-01"], "a time and a UTC offset"),
        (["create-petition", "--title", "x", "--method", "sms"], "argument --method: invalid choice: 'sms'"),
        (["outcome", "p-1", "--response", "--date", "2026-02-30", "--text", "x"], "is not a date YYYY-MM-DD"),
        (["outcome", "p-1", "--response", "--date", "2026-02-01\n", "--text", "x"], "is not a date YYYY-MM-DD"),
        (
            ["outcome", "p-1", "--response", "--debate", "--date", "2026-02-01", "--text", "x"],
            "argument --debate: not allowed with argument --response",
        ),
        (["review", "p-1", "--open", "--reject", "duplicate"], "argument --reject: not allowed with argument --open"),
        (["review", "p-1", "--open", "--duplicate-of", "p-2"], "--explanation and --duplicate-of go with --reject"),
        (["open-data", "--metadata", "--format", "csv"], "--metadata is published as JSON only"),
    ],
)
def test_a_malformed_command_line_is_a_usage_error_and_sends_nothing(args: list[str], says: str) -> None:
    # No service is reachable at these addresses: a usage error must be
    # decided before anything is sent.
    result = run_cli({"PETITIONS_PETITIONS_ADDRESS": "127.0.0.1:1", "PATH": "/usr/bin:/bin"}, *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_close_legislature_refusals_change_nothing(system: SystemClient, env: Env) -> None:
    admin = staff(env, "staff-admin")
    types = ok(env, "petition-types")
    current = types["current_legislature"]
    assert "PERMISSION_DENIED WRONG_ROLE" in refused(
        env, "close-legislature", current, str(int(current) + 1), "--credential", staff(env, "staff-clerk")
    )
    # Not the current legislature.
    assert refused(env, "close-legislature", "1", "2", "--credential", admin).startswith("error: ")
    assert ok(env, "petition-types")["current_legislature"] == current


@pytest.mark.legislature_end
def test_close_legislature_closes_and_archives_every_petition_of_it(system: SystemClient, env: Env) -> None:
    """Archives every petition of the session's legislature: runs after the
    other tests (legislature_end)."""
    admin = staff(env, "staff-admin")
    current = ok(env, "petition-types")["current_legislature"]
    following = str(int(current) + 1)
    open_one = ok(env, "create-petition", "--credential", admin, "--title", "Open at the end")["id"]
    answer = ok(env, "close-legislature", current, following, "--credential", admin)
    assert answer["closed"] >= 1
    assert answer["archived"] >= answer["closed"]
    assert ok(env, "show", open_one)["state"] == "PETITION_STATE_ARCHIVED"
    assert ok(env, "petition-types")["current_legislature"] == following
    assert ok(env, "draft", "--credential", author(system, env), "--title", "Next one")["legislature"] == following


def test_petition_types_and_committees_are_listed(system: SystemClient, env: Env) -> None:
    types = ok(env, "petition-types")
    assert {t["id"] for t in types["types"]} >= {"assemblee", "uk"}
    assert "duplicate" in {r["code"] for r in types["rejection_reasons"]}
    committees = ok(env, "committees")["committees"]
    assert "lois" in {c["id"] for c in committees}


def test_audit_of_every_petition_names_the_petition_of_each_entry(system: SystemClient, env: Env) -> None:
    petition = system.create_petition("Audited among all")
    result = run_cli(env, "audit", "--credential", staff(env, "staff-moderator-a"))
    assert result.returncode == 0, result.stderr
    header, *rows = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert header[:2] == ["petition", "time"]
    assert [petition.id, "1", "administrator"] in [[r[0], r[2], r[3]] for r in rows]


def test_the_audit_table_keeps_each_entry_on_one_line() -> None:
    entry = petitions_pb2.AuditEntry(
        petition_id="p-1",
        version=3,
        role="moderator",
        actor_name="Ada M.",
        action="reject",
        state_before=petition_pb2.PETITION_STATE_SUBMITTED,
        state_after=petition_pb2.PETITION_STATE_REJECTED,
        reason="Duplicate:\n\tsee p-0",
    )
    entry.at.FromSeconds(1_780_000_000)
    table = cli.audit_table([entry], with_petition=False).splitlines()
    assert len(table) == 2
    assert re.split(r"\s{2,}", table[1]) == [
        "2026-05-28T20:26:40Z",
        "3",
        "moderator",
        "Ada M.",
        "reject",
        "submitted → rejected",
        "Duplicate: see p-0",
    ]


def test_the_cli_defaults_are_the_local_systems_dev_providers() -> None:
    from deploy.local.system import DEV_ISSUERS
    from services.identity.settings import DEV_ISSUER

    defaults = cli.CliSettings.model_fields
    assert defaults["devidp_url"].default == DEV_ISSUER.issuer == DEV_ISSUERS[0]["issuer"]
    assert defaults["devidp_audience"].default == DEV_ISSUER.audience == DEV_ISSUERS[0]["audience"]
    assert defaults["devidp_identified_url"].default == DEV_ISSUERS[1]["issuer"]
