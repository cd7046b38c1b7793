"""`petitions`: the operator's command line.

petitions dev-secrets                   create local secret files (once)
petitions migrate                       create keyspace, tables and topics
petitions dev-sign --persona X          sign as a dev persona (or --email A), end to end
petitions tally PETITION                print a petition's tally
petitions recount [--repair]            prove the tally against Cassandra (and rebuild it)
petitions open-data [PETITION…]         publish counts by territory and country (JSON or CSV)
petitions open-data --metadata [P…]     publish the petitions themselves (state, committee, outcomes)

The life of a petition (the Petitions service):
petitions dev-author-credential --persona X   print an author credential (dev provider)
petitions dev-staff-credential --persona X    print a staff credential (dev provider)
petitions dev-signer-credential --persona X   print a signer credential (dev provider)
petitions draft --type T --title … --text …   deposit a draft (author)
petitions submit PETITION                     submit it (author)
petitions sponsor PETITION --credential S     support it with a signer credential
petitions review PETITION --open | --reject CODE --explanation …   (moderator)
petitions suggest PETITION | assign PETITION COMMITTEE | rapporteur PETITION NAME
petitions class PETITION --reason … | close PETITION --reason …     (clerk)
petitions outcome PETITION --response|--debate --date YYYY-MM-DD --text …   (clerk)
petitions create-petition …                   a petition with every field (administrator)
petitions close-legislature ENDING NEXT       (administrator)
petitions audit [PETITION]                    the audit trail (any staff role)
petitions show PETITION | petition-types | committees

Author and staff commands send the credential given by --credential or the
environment variable PETITIONS_CREDENTIAL as "authorization: Bearer …".

Exit status: 0 done; 1 the service refused or failed the call (standard error
says `error: STATUS REASON: message`, and names the fields at fault); 2 a
command line that is wrong (argparse's usage errors, a malformed date or
threshold), nothing sent; 141 standard output's reader has gone.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2

from petitions.v1 import (
    identity_pb2,
    identity_pb2_grpc,
    petition_pb2,
    petitions_pb2,
    petitions_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
    tally_pb2,
    tally_pb2_grpc,
)
from servicekit import open_data
from servicekit.settings import REPO_ROOT, CommonSettings
from services.petitions import open_data as petition_open_data

# The store drivers (Cassandra, Redis, Kafka's admin client) and aiohttp are
# imported by the few commands that use them: every command is a new process,
# and importing them all would double the start-up of every other command.

# gRPC call metadata, and one call to the Petitions service (a string:
# PetitionsAsyncStub exists only in the generated type stubs).
Metadata: TypeAlias = tuple[tuple[str, str], ...]
PetitionsCall: TypeAlias = "Callable[[petitions_pb2_grpc.PetitionsAsyncStub, Metadata], Awaitable[Any]]"

# The exit status of a command line that is wrong (argparse uses it too).
EXIT_USAGE = 2
# The exit status when the service refused or failed the call.
EXIT_REFUSED = 1


class CliSettings(CommonSettings):
    identity_address: str = "127.0.0.1:50061"
    signing_address: str = "127.0.0.1:50062"
    tally_address: str = "127.0.0.1:50063"
    petitions_address: str = "127.0.0.1:50064"
    # The dev OIDC providers: the anonymous one (to sign) and the identified
    # one (authors and staff: names and birthdate are read).
    # (services.identity.settings.DEV_ISSUER's values, written out: importing
    # identity's settings would bring in its Redis client.)
    devidp_url: str = "http://127.0.0.1:8461"
    devidp_identified_url: str = "http://127.0.0.1:8462"
    devidp_audience: str = "petitions-dev"
    # Where the dev SMTP sink (make up) keeps the messages it receives.
    dev_mail_dir: Path = REPO_ROOT / ".run" / "mail"
    # An author or staff credential (PETITIONS_CREDENTIAL), unless
    # --credential gives one.
    credential: str = ""


class UsageError(Exception):
    """A command line the CLI refuses before sending anything."""


def _print(message: object) -> None:
    print(json.dumps(message, indent=2, sort_keys=True, ensure_ascii=False))


def _as_dict(message: object) -> dict[str, object]:
    converted: dict[str, object] = MessageToDict(message, preserving_proto_field_name=True)  # type: ignore[arg-type]
    return converted


# Parsing the command line's values: each matched whole, so a typo is a
# usage error here rather than a surprise in a stored petition.

THRESHOLD_SPEC = re.compile(r"\A([^:]+):([0-9]+)(?::([0-9]*)(?::(.*))?)?\Z", re.DOTALL)
DAY = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
METHODS = {"oidc": identity_pb2.VERIFICATION_METHOD_OIDC, "email": identity_pb2.VERIFICATION_METHOD_EMAIL}
DISPLAY_NAMES = {
    "initial": identity_pb2.DISPLAY_NAME_FORM_GIVEN_NAME_AND_INITIAL,
    "full": identity_pb2.DISPLAY_NAME_FORM_FULL_NAME,
}


def parse_threshold(spec: str) -> petition_pb2.Threshold:
    """`id:signatures[:min_territories[:label]]`; the label defaults to the
    id and may contain colons."""
    match = THRESHOLD_SPEC.fullmatch(spec)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{spec!r} is not ID:SIGNATURES[:MIN_TERRITORIES[:LABEL]] (e.g. plenary:500000:30:Debated in plenary)"
        )
    identifier, signatures, territories, label = match.groups()
    return petition_pb2.Threshold(
        id=identifier,
        signatures=int(signatures),
        min_territories=int(territories or 0),
        label=label if label else identifier,
    )


def parse_instant(text: str) -> Timestamp:
    """An ISO 8601 date and time with its UTC offset ("2026-06-01T00:00:00Z",
    "2026-06-01T02:00+02:00"): a time without one would be read in whatever
    zone the operator's machine is in."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date and time") from None
    if moment.tzinfo is None or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T.+", text):
        raise argparse.ArgumentTypeError(f"{text!r} needs a date, a time and a UTC offset, e.g. 2026-06-01T00:00:00Z")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def parse_day(text: str) -> Timestamp:
    """YYYY-MM-DD, as midnight UTC of that day (an outcome's date)."""
    try:
        if not DAY.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None
    stamp = Timestamp()
    stamp.FromDatetime(datetime(day.year, day.month, day.day, tzinfo=UTC))
    return stamp


# Errors: the gRPC status, the stable reason and the message, on standard
# error; a script can switch on the reason.


def describe_error(error: grpc.aio.AioRpcError) -> str:
    """`STATUS REASON: message`, then the fields at fault and how long to
    wait, from the google.rpc details the services attach."""
    reason, fields, retry = "", [], None
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status.ParseFromString(value)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.ToTimedelta().total_seconds()
    line = f"{error.code().name}{' ' + reason if reason else ''}: {error.details()}"
    if fields:
        line += f" (fields: {', '.join(fields)})"
    if retry is not None:
        line += f" (retry after {retry:g} s)"
    return line


# Credentials


def _credential(settings: CliSettings, options: argparse.Namespace) -> str:
    return str(getattr(options, "credential", "") or settings.credential)


def _bearer(settings: CliSettings, options: argparse.Namespace) -> Metadata:
    """The call's metadata: the credential, or none (the service then
    refuses with UNAUTHENTICATED CREDENTIAL_REQUIRED, which says what the
    call needs)."""
    token = _credential(settings, options)
    return (("authorization", f"Bearer {token}"),) if token else ()


class DevProviderError(Exception):
    """The dev identity provider did not give a token."""


async def _dev_id_token(provider: str, body: dict[str, object]) -> str:
    """An ID token from a dev provider's shortcut (no login: dev only)."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{provider}/dev/id-token", json=body) as response,
        ):
            response.raise_for_status()
            return str((await response.json())["id_token"])
    except aiohttp.ClientError as error:
        raise DevProviderError(f"dev identity provider at {provider}: {error}") from None


async def _identified_id_token(settings: CliSettings, options: argparse.Namespace) -> str:
    body: dict[str, object] = {
        "persona": options.persona,
        "audience": settings.devidp_audience,
        "identified": True,
        "birthdate": getattr(options, "birthdate", "1990-01-01"),
    }
    for name in ("given_name", "family_name"):
        if getattr(options, name, None) is not None:
            body[name] = getattr(options, name)
    return await _dev_id_token(settings.devidp_identified_url, body)


async def _dev_staff_credential(settings: CliSettings, options: argparse.Namespace) -> int:
    """Prints only the token, so that `export PETITIONS_CREDENTIAL=$(petitions
    dev-staff-credential --persona staff-admin)` works."""
    id_token = await _identified_id_token(settings, options)
    async with grpc.aio.insecure_channel(settings.identity_address) as channel:
        reply = await identity_pb2_grpc.IdentityStub(channel).ExchangeStaffIdToken(
            identity_pb2.ExchangeStaffIdTokenRequest(id_token=id_token), timeout=10
        )
    print(reply.token)
    return 0


async def _dev_signer_credential(settings: CliSettings, options: argparse.Namespace) -> int:
    """A signer credential from the anonymous dev provider (to sponsor)."""
    id_token = await _dev_id_token(
        settings.devidp_url,
        {
            "persona": options.persona,
            "audience": settings.devidp_audience,
            "country": options.country,
            "territory": options.territory,
        },
    )
    async with grpc.aio.insecure_channel(settings.identity_address) as channel:
        reply = await identity_pb2_grpc.IdentityStub(channel).ExchangeIdToken(
            identity_pb2.ExchangeIdTokenRequest(id_token=id_token), timeout=10
        )
    print(reply.token)
    return 0


async def _dev_author_credential(settings: CliSettings, options: argparse.Namespace) -> int:
    id_token = await _identified_id_token(settings, options)
    async with grpc.aio.insecure_channel(settings.identity_address) as channel:
        reply = await identity_pb2_grpc.IdentityStub(channel).ExchangeAuthorIdToken(
            identity_pb2.ExchangeAuthorIdTokenRequest(
                id_token=id_token, display_name=DISPLAY_NAMES[options.display_name]
            ),
            timeout=10,
        )
    print(reply.token)
    return 0


# Signing (dev)


async def _email_credential(
    identity: identity_pb2_grpc.IdentityAsyncStub, settings: CliSettings, options: argparse.Namespace
) -> identity_pb2.SignerCredential:
    """Proves the mailbox the dev way: the code is read from the dev SMTP
    sink's directory, where a person would read their inbox."""
    already = set(settings.dev_mail_dir.glob("*.eml"))
    started = await identity.BeginEmailVerification(
        identity_pb2.BeginEmailVerificationRequest(
            email=options.email, country=options.country, territory=options.territory, client_ip="127.0.0.1"
        ),
        timeout=15,
    )
    for _ in range(100):
        for path in sorted(set(settings.dev_mail_dir.glob("*.eml")) - already):
            message = email.message_from_bytes(path.read_bytes())
            code = re.search(r"\b([0-9]{6})\b", str(message.get("Subject", "")))
            if code and options.email.strip() in message.get_all("X-Delivered-To", []):
                reply: identity_pb2.SignerCredential = await identity.CompleteEmailVerification(
                    identity_pb2.CompleteEmailVerificationRequest(
                        verification_id=started.verification_id, code=code.group(1), client_ip="127.0.0.1"
                    ),
                    timeout=10,
                )
                return reply
        await asyncio.sleep(0.1)
    raise SystemExit(f"no code reached {settings.dev_mail_dir} for {options.email}; is devsmtp running?")


async def _dev_sign(settings: CliSettings, options: argparse.Namespace) -> int:
    async with (
        grpc.aio.insecure_channel(settings.identity_address) as identity_channel,
        grpc.aio.insecure_channel(settings.signing_address) as signing_channel,
    ):
        identity = identity_pb2_grpc.IdentityStub(identity_channel)
        if options.email:
            credential = await _email_credential(identity, settings, options)
        else:
            id_token = await _dev_id_token(
                settings.devidp_url,
                {
                    "persona": options.persona,
                    "audience": settings.devidp_audience,
                    "country": options.country,
                    "territory": options.territory,
                },
            )
            credential = await identity.ExchangeIdToken(
                identity_pb2.ExchangeIdTokenRequest(id_token=id_token), timeout=10
            )
        receipt = await signing_pb2_grpc.SigningStub(signing_channel).Sign(
            signing_pb2.SignRequest(
                credential=credential.token,
                petition_id=options.petition,
                idempotency_key=options.idempotency_key or uuid.uuid4().hex,
                client_ip="127.0.0.1",
            ),
            timeout=15,
        )
    _print({"signer": credential.claims.signer, "receipt": _as_dict(receipt)})
    return 0


async def _tally(settings: CliSettings, options: argparse.Namespace) -> int:
    async with grpc.aio.insecure_channel(settings.tally_address) as channel:
        tally = await tally_pb2_grpc.TallyStub(channel).GetTally(
            tally_pb2.GetTallyRequest(petition_id=options.petition), timeout=10
        )
    _print(_as_dict(tally))
    return 0


# The Petitions service


async def _call_petitions(settings: CliSettings, options: argparse.Namespace, call: PetitionsCall) -> Any:
    async with grpc.aio.insecure_channel(settings.petitions_address) as channel:
        return await call(petitions_pb2_grpc.PetitionsStub(channel), _bearer(settings, options))


def _printing(
    call: Callable[[argparse.Namespace], PetitionsCall],
) -> Callable[[CliSettings, argparse.Namespace], Awaitable[int]]:
    """A command that makes one Petitions call and prints its answer as
    proto3 JSON."""

    async def command(settings: CliSettings, options: argparse.Namespace) -> int:
        _print(_as_dict(await _call_petitions(settings, options, call(options))))
        return 0

    return command


async def _all_petitions(
    stub: petitions_pb2_grpc.PetitionsAsyncStub, metadata: Metadata
) -> list[petition_pb2.Petition]:
    """Every petition the caller may see (without a credential: the published
    ones), following the pages."""
    petitions: list[petition_pb2.Petition] = []
    page_token = ""
    while True:
        page = await stub.ListPetitions(
            petitions_pb2.ListPetitionsRequest(page_size=500, page_token=page_token), metadata=metadata, timeout=30
        )
        petitions += page.petitions
        page_token = page.next_page_token
        if not page_token:
            return petitions


async def _petition_ids(settings: CliSettings, metadata: Metadata) -> list[str]:
    async with grpc.aio.insecure_channel(settings.petitions_address) as channel:
        return [p.id for p in await _all_petitions(petitions_pb2_grpc.PetitionsStub(channel), metadata)]


def _eligibility(options: argparse.Namespace) -> petition_pb2.Eligibility | None:
    """The eligibility the options give; None when none of them is used (the
    petition then gets the service's default)."""
    if not (options.country or options.adults_only or options.method or options.accept_declared_adults):
        return None
    return petition_pb2.Eligibility(
        countries=options.country,
        adults_only=options.adults_only,
        methods=[METHODS[m] for m in options.method],
        accept_declared_adults=options.accept_declared_adults,
    )


async def _create_petition(settings: CliSettings, options: argparse.Namespace) -> int:
    request = petitions_pb2.CreatePetitionRequest(
        id=options.id,
        type=options.type,
        title=options.title,
        text=options.text,
        author=options.author,
        author_name=options.author_name,
        committee=options.committee,
        rapporteur=options.rapporteur,
        thresholds=options.threshold,
        open=not options.draft,
    )
    eligibility = _eligibility(options)
    if eligibility is not None:
        request.eligibility.CopyFrom(eligibility)
    if options.opens_at is not None:
        request.opens_at.CopyFrom(options.opens_at)
    if options.closes_at is not None:
        request.closes_at.CopyFrom(options.closes_at)
    try:
        petition = await _call_petitions(
            settings, options, lambda stub, metadata: stub.CreatePetition(request, metadata=metadata, timeout=30)
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.ALREADY_EXISTS and options.exist_ok:
            print(f"petition {options.id} already exists")
            return 0
        raise
    _print(_as_dict(petition))
    return 0


def _draft(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.CreateDraftRequest(id=options.id, type=options.type, title=options.title, text=options.text)
    return lambda stub, metadata: stub.CreateDraft(request, metadata=metadata, timeout=30)


def _submit(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.SubmitPetitionRequest(
        petition_id=options.petition, expected_version=options.expected_version
    )
    return lambda stub, metadata: stub.SubmitPetition(request, metadata=metadata, timeout=30)


def _sponsor(options: argparse.Namespace) -> PetitionsCall:
    # The signer credential travels in the request, not as a bearer.
    request = petitions_pb2.SponsorPetitionRequest(petition_id=options.petition, credential=options.signer_credential)
    return lambda stub, metadata: stub.SponsorPetition(request, timeout=30)


def _review(options: argparse.Namespace) -> PetitionsCall:
    if options.open:
        if options.explanation or options.duplicate_of:
            raise UsageError("--explanation and --duplicate-of go with --reject, not --open")
        request = petitions_pb2.ReviewPetitionRequest(
            petition_id=options.petition,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_OPEN,
            expected_version=options.expected_version,
        )
    else:
        request = petitions_pb2.ReviewPetitionRequest(
            petition_id=options.petition,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_REJECT,
            rejection=petition_pb2.Rejection(
                reason_code=options.reject, explanation=options.explanation, duplicate_of=options.duplicate_of
            ),
            expected_version=options.expected_version,
        )
    return lambda stub, metadata: stub.ReviewPetition(request, metadata=metadata, timeout=30)


def _suggest(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.SuggestCommitteeRequest(petition_id=options.petition)
    return lambda stub, metadata: stub.SuggestCommittee(request, metadata=metadata, timeout=30)


def _assign(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.AssignCommitteeRequest(
        petition_id=options.petition,
        committee=options.committee,
        note=options.note,
        expected_version=options.expected_version,
    )
    return lambda stub, metadata: stub.AssignCommittee(request, metadata=metadata, timeout=30)


def _rapporteur(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.NameRapporteurRequest(
        petition_id=options.petition, rapporteur=options.name, expected_version=options.expected_version
    )
    return lambda stub, metadata: stub.NameRapporteur(request, metadata=metadata, timeout=30)


def _class(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.ClassPetitionRequest(
        petition_id=options.petition, reason=options.reason, expected_version=options.expected_version
    )
    return lambda stub, metadata: stub.ClassPetition(request, metadata=metadata, timeout=30)


def _close(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.ClosePetitionRequest(
        petition_id=options.petition, reason=options.reason, expected_version=options.expected_version
    )
    return lambda stub, metadata: stub.ClosePetition(request, metadata=metadata, timeout=30)


def _outcome(options: argparse.Namespace) -> PetitionsCall:
    kind = petition_pb2.Outcome.KIND_RESPONSE if options.response else petition_pb2.Outcome.KIND_DEBATE
    outcome = petition_pb2.Outcome(kind=kind, text=options.text, links=options.link)
    outcome.date.CopyFrom(options.date)
    request = petitions_pb2.RecordOutcomeRequest(
        petition_id=options.petition, outcome=outcome, expected_version=options.expected_version
    )
    return lambda stub, metadata: stub.RecordOutcome(request, metadata=metadata, timeout=30)


def _close_legislature(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.CloseLegislatureRequest(legislature=options.ending, next_legislature=options.next)
    # Closes and archives every petition of the legislature: more than one
    # write per petition, so it may take a while on a real one.
    return lambda stub, metadata: stub.CloseLegislature(request, metadata=metadata, timeout=600)


def _show(options: argparse.Namespace) -> PetitionsCall:
    request = petitions_pb2.GetPetitionRequest(petition_id=options.petition)
    return lambda stub, metadata: stub.GetPetition(request, metadata=metadata, timeout=30)


def _petition_types(options: argparse.Namespace) -> PetitionsCall:
    return lambda stub, metadata: stub.ListPetitionTypes(petitions_pb2.ListPetitionTypesRequest(), timeout=30)


def _committees(options: argparse.Namespace) -> PetitionsCall:
    return lambda stub, metadata: stub.ListCommittees(petitions_pb2.ListCommitteesRequest(), timeout=30)


# The audit trail


AUDIT_COLUMNS = ("time", "version", "role", "actor", "action", "state", "reason")


def _one_line(text: str) -> str:
    """A cell of the table: line feeds and tabs of a reason become spaces,
    so each entry stays on one line."""
    return " ".join(text.split())


def audit_table(entries: Sequence[petitions_pb2.AuditEntry], *, with_petition: bool) -> str:
    """One line per entry: when, the version it produced, who (role and
    name), what, the state before → after, and the reason given."""
    header = (("petition",) if with_petition else ()) + AUDIT_COLUMNS
    rows = [header]
    for entry in entries:
        at = entry.at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if entry.HasField("at") else ""
        row = (
            at,
            str(entry.version),
            entry.role,
            entry.actor_name or "-",
            entry.action,
            f"{_state(entry.state_before)} → {_state(entry.state_after)}",
            _one_line(entry.reason),
        )
        rows.append(((entry.petition_id,) if with_petition else ()) + row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def _state(state: petition_pb2.PetitionState.ValueType) -> str:
    return "-" if state == petition_pb2.PETITION_STATE_UNSPECIFIED else petition_open_data.state_name(state)


async def _audit(settings: CliSettings, options: argparse.Namespace) -> int:
    async def trail(stub: petitions_pb2_grpc.PetitionsAsyncStub, metadata: Metadata) -> list[petitions_pb2.AuditEntry]:
        entries: list[petitions_pb2.AuditEntry] = []
        page_token = ""
        while True:
            page = await stub.GetAuditTrail(
                petitions_pb2.GetAuditTrailRequest(petition_id=options.petition, page_size=500, page_token=page_token),
                metadata=metadata,
                timeout=30,
            )
            entries += page.entries
            page_token = page.next_page_token
            if not page_token:
                return entries

    entries = await _call_petitions(settings, options, trail)
    if options.format == "json":
        _print({"entries": [_as_dict(e) for e in entries]})
    else:
        sys.stdout.write(audit_table(entries, with_petition=not options.petition))
    return 0


# Open data


async def _open_data(settings: CliSettings, options: argparse.Namespace) -> int:
    if options.metadata:
        document = await _metadata_document(settings, options)
    else:
        # Open data is what the public sees: listed without a credential.
        petitions = options.petitions or await _petition_ids(settings, ())
        async with grpc.aio.insecure_channel(settings.tally_address) as channel:
            tally = tally_pb2_grpc.TallyStub(channel)
            tallies = [
                await tally.GetTally(tally_pb2.GetTallyRequest(petition_id=petition_id), timeout=10)
                for petition_id in petitions
            ]
        document = open_data.to_csv(tallies) if options.format == "csv" else open_data.to_json(tallies)
    if options.output:
        await asyncio.to_thread(Path(options.output).write_text, document, encoding="utf-8")
    else:
        sys.stdout.write(document)
    return 0


async def _metadata_document(settings: CliSettings, options: argparse.Namespace) -> str:
    """Read as the public reads: without a credential, so only published
    petitions come back (a draft named on the command line is NOT_FOUND)."""
    if options.format != "json":
        raise UsageError("--metadata is published as JSON only (--format json)")
    async with grpc.aio.insecure_channel(settings.petitions_address) as channel:
        stub = petitions_pb2_grpc.PetitionsStub(channel)
        if options.petitions:
            petitions = [
                await stub.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=p), timeout=30)
                for p in options.petitions
            ]
        else:
            petitions = await _all_petitions(stub, ())
        committees = await stub.ListCommittees(petitions_pb2.ListCommitteesRequest(), timeout=30)
        types = await stub.ListPetitionTypes(petitions_pb2.ListPetitionTypesRequest(), timeout=30)
    return petition_open_data.to_json(
        petitions,
        committees={c.id: c.name for c in committees.committees},
        rejection_reasons={r.code: r.label for r in types.rejection_reasons},
    )


# Operations


async def _recount(settings: CliSettings, options: argparse.Namespace) -> int:
    """Prints each petition's differences between Cassandra and the live
    counters; with --repair rebuilds the counters and checks again."""
    # Which petitions: asked of the Petitions service (the only reader of
    # its tables); with a staff credential, unpublished ones too.
    petitions = options.petitions or await _petition_ids(settings, _bearer(settings, options))
    from servicekit.signature_topic import check_signature_partitions
    from servicekit.stores import CassandraSession, redis_client
    from services.tally.counters import ShardedCounters
    from services.tally.recount import Recount

    # A recount over fewer shards than the topic has would compare two
    # partial sums and find them equal.
    await check_signature_partitions(settings, "petitions recount")

    cassandra = CassandraSession(settings)
    await cassandra.start()
    redis = redis_client(settings)
    try:
        recount = Recount.prepared(
            cassandra, ShardedCounters(redis, settings.signatures_topic), settings.signature_partitions
        )
        differing = 0
        for petition_id in petitions:
            comparison = await recount.compare(petition_id)
            if comparison.differences and options.repair:
                await recount.repair(petition_id)
                print(f"{petition_id}: repaired ({'; '.join(comparison.differences)})")
                comparison = await recount.compare(petition_id)
            if comparison.differences:
                differing += 1
                print(f"{petition_id}: DIFFERS: {'; '.join(comparison.differences)}")
            else:
                print(f"{petition_id}: {comparison.expected.total} signatures, no difference")
        return 1 if differing else 0
    finally:
        await redis.aclose()
        await cassandra.stop()


async def _migrate(settings: CliSettings, options: argparse.Namespace) -> int:
    from services.migrations import MigrationRefused, migrate

    try:
        created = await migrate(settings)
    except MigrationRefused as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"schema ready in keyspace {settings.keyspace}; topics created: {', '.join(created) or 'none'}")
    return 0


# The command line


def _with_credential(parser: argparse.ArgumentParser, who: str) -> argparse.ArgumentParser:
    parser.add_argument(
        "--credential",
        default="",
        help=f"{who} credential (default: $PETITIONS_CREDENTIAL)",
    )
    return parser


def _with_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--expected-version",
        type=int,
        default=0,
        help="refuse (VERSION_CONFLICT) unless the petition is still at this version; 0 = current",
    )
    return parser


def _petition_parsers(commands: Any) -> None:
    for name, who in (("dev-staff-credential", "staff"), ("dev-author-credential", "author")):
        dev = commands.add_parser(
            name, help=f"print a {who} credential for a dev persona (identified dev provider; dev only)"
        )
        dev.add_argument("--persona", required=True)
        dev.add_argument("--birthdate", default="1990-01-01", help="YYYY-MM-DD (a minor is refused as author)")
        if who == "author":
            dev.add_argument("--given-name", default=None)
            dev.add_argument("--family-name", default=None)
            dev.add_argument(
                "--display-name", choices=tuple(DISPLAY_NAMES), default="initial", help="the published name's form"
            )

    signer = commands.add_parser(
        "dev-signer-credential", help="print a signer credential for a dev persona (anonymous dev provider; dev only)"
    )
    signer.add_argument("--persona", required=True)
    signer.add_argument("--country", default="FR")
    signer.add_argument("--territory", default="75")

    create = _with_credential(
        commands.add_parser("create-petition", help="create a petition with every field (open unless --draft)"),
        "administrator's",
    )
    create.add_argument("--id", default="")
    create.add_argument("--type", default="", help="a petition type (default: the service's default type)")
    create.add_argument("--title", required=True)
    create.add_argument("--text", default="")
    create.add_argument("--author", default="", help="author pseudonym (imports)")
    create.add_argument("--author-name", default="", help="the author's published name")
    create.add_argument("--committee", default="")
    create.add_argument("--rapporteur", default="")
    create.add_argument("--opens-at", type=parse_instant, default=None, metavar="ISO8601")
    create.add_argument("--closes-at", type=parse_instant, default=None, metavar="ISO8601")
    create.add_argument(
        "--threshold",
        action="append",
        type=parse_threshold,
        default=[],
        metavar="ID:SIGNATURES[:MIN_TERRITORIES[:LABEL]]",
        help="may be repeated",
    )
    create.add_argument("--country", action="append", default=[], help="ISO 3166-1 alpha-2; may be repeated")
    create.add_argument("--adults-only", action="store_true")
    create.add_argument("--method", action="append", choices=tuple(METHODS), default=[], help="may be repeated")
    create.add_argument("--accept-declared-adults", action="store_true")
    create.add_argument("--draft", action="store_true")
    create.add_argument("--exist-ok", action="store_true", help="succeed if the id is taken")

    draft = _with_credential(commands.add_parser("draft", help="deposit a draft petition (author)"), "author")
    draft.add_argument("--id", default="")
    draft.add_argument("--type", default="", help="a petition type (default: the service's default type)")
    draft.add_argument("--title", required=True)
    draft.add_argument("--text", default="")

    submit = _with_version(
        _with_credential(commands.add_parser("submit", help="submit a draft for moderation (author)"), "author")
    )
    submit.add_argument("petition")

    sponsor = commands.add_parser("sponsor", help="sponsor a petition gathering sponsors (signer)")
    sponsor.add_argument("petition")
    sponsor.add_argument(
        "--credential", dest="signer_credential", required=True, help="a signer credential (sent in the request)"
    )

    review = _with_version(
        _with_credential(commands.add_parser("review", help="open or reject a submitted petition (moderator)"), "staff")
    )
    review.add_argument("petition")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--open", action="store_true")
    decision.add_argument("--reject", metavar="REASON_CODE", help="a reason code (petition-types lists them)")
    review.add_argument("--explanation", default="", help="public; required with --reject")
    review.add_argument("--duplicate-of", default="", metavar="PETITION")

    suggest = _with_credential(commands.add_parser("suggest", help="suggest committees (any staff role)"), "staff")
    suggest.add_argument("petition")

    assign = _with_version(
        _with_credential(commands.add_parser("assign", help="assign to a committee (clerk)"), "staff")
    )
    assign.add_argument("petition")
    assign.add_argument("committee")
    assign.add_argument("--note", default="")

    rapporteur = _with_version(
        _with_credential(commands.add_parser("rapporteur", help="name the rapporteur (clerk)"), "staff")
    )
    rapporteur.add_argument("petition")
    rapporteur.add_argument("name")

    for name, help_text in (
        ("class", "class (file) an open petition: signing closes (clerk)"),
        ("close", "close an open petition before its deadline (clerk or administrator)"),
    ):
        closing = _with_version(_with_credential(commands.add_parser(name, help=help_text), "staff"))
        closing.add_argument("petition")
        closing.add_argument("--reason", required=True)

    outcome = _with_version(
        _with_credential(commands.add_parser("outcome", help="record a response or a debate (clerk)"), "staff")
    )
    outcome.add_argument("petition")
    kind = outcome.add_mutually_exclusive_group(required=True)
    kind.add_argument("--response", action="store_true")
    kind.add_argument("--debate", action="store_true")
    outcome.add_argument("--date", type=parse_day, required=True, metavar="YYYY-MM-DD")
    outcome.add_argument("--text", required=True)
    outcome.add_argument("--link", action="append", default=[], metavar="URL", help="https; may be repeated")

    legislature = _with_credential(
        commands.add_parser(
            "close-legislature", help="close and archive every petition of a legislature (administrator)"
        ),
        "administrator's",
    )
    legislature.add_argument("ending")
    legislature.add_argument("next")

    audit = _with_credential(
        commands.add_parser("audit", help="the audit trail of a petition, or of all (any staff role)"), "staff"
    )
    audit.add_argument("petition", nargs="?", default="")
    audit.add_argument("--format", choices=("table", "json"), default="table")

    show = _with_credential(
        commands.add_parser("show", help="print a petition (unpublished ones need staff or its author)"),
        "staff or author",
    )
    show.add_argument("petition")
    commands.add_parser("petition-types", help="the petition types, reason codes and current legislature")
    commands.add_parser("committees", help="the committee registry")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petitions", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev-secrets", help="create missing local secret files")
    commands.add_parser("migrate", help="create keyspace, tables and topics (idempotent)")

    sign = commands.add_parser("dev-sign", help="sign as a dev persona through identity and signing")
    who = sign.add_mutually_exclusive_group(required=True)
    who.add_argument("--persona", help="sign in at the dev OIDC provider as this made-up person")
    who.add_argument("--email", help="prove this mailbox with a one-time code (read from the dev mailbox)")
    sign.add_argument("--petition", default="demo")
    sign.add_argument("--country", default="FR")
    sign.add_argument("--territory", default="75")
    sign.add_argument("--idempotency-key", default="")

    recount = _with_credential(
        commands.add_parser(
            "recount", help="recompute counts from Cassandra and compare with the live tally (exit 1 on a difference)"
        ),
        "staff (to include unpublished petitions)",
    )
    recount.add_argument("petitions", nargs="*", help="petition ids (default: every petition)")
    recount.add_argument("--repair", action="store_true", help="rebuild the live counters from Cassandra")

    tally = commands.add_parser("tally", help="print a petition's tally")
    tally.add_argument("petition", nargs="?", default="demo")

    published = commands.add_parser(
        "open-data", help="counts by territory and country, or with --metadata the petitions, as open data"
    )
    published.add_argument("petitions", nargs="*", help="petition ids (default: every published petition)")
    published.add_argument(
        "--metadata", action="store_true", help="the petitions' metadata, state, committee and outcomes (JSON)"
    )
    published.add_argument("--format", choices=("json", "csv"), default="json")
    published.add_argument("--output", default="", help="write to this file instead of standard output")

    _petition_parsers(commands)
    return parser


# The exit status when standard output's reader has gone (`petitions ... |
# head`): 128 + SIGPIPE, what a shell reports for any Unix tool that SIGPIPE
# ended, so `set -o pipefail` scripts see the same status as for `yes | head`.
# Not 1: that already means "failed" (an RPC error) or, for recount, "the counts
# differ", and a reader leaving early is neither.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """The command's exit status. Python ignores SIGPIPE, so a reader that
    leaves early shows up as BrokenPipeError at the next write; restoring
    SIGPIPE's default instead would also kill the process on a write to a
    closed gRPC or Redis socket, so the error is caught here."""
    try:
        try:
            return _run(argv)
        finally:
            # Written out here, inside the handler, rather than at
            # interpreter exit, where a broken pipe prints "Exception
            # ignored"; also after a SystemExit.
            sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can reach the reader: standard output goes to
        # /dev/null so that the interpreter's own flush at exit is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


HANDLERS: dict[str, Callable[[CliSettings, argparse.Namespace], Awaitable[int]]] = {
    "migrate": _migrate,
    "create-petition": _create_petition,
    "dev-sign": _dev_sign,
    "tally": _tally,
    "recount": _recount,
    "open-data": _open_data,
    "dev-staff-credential": _dev_staff_credential,
    "dev-author-credential": _dev_author_credential,
    "dev-signer-credential": _dev_signer_credential,
    "draft": _printing(_draft),
    "submit": _printing(_submit),
    "sponsor": _printing(_sponsor),
    "review": _printing(_review),
    "suggest": _printing(_suggest),
    "assign": _printing(_assign),
    "rapporteur": _printing(_rapporteur),
    "class": _printing(_class),
    "close": _printing(_close),
    "outcome": _printing(_outcome),
    "close-legislature": _printing(_close_legislature),
    "audit": _audit,
    "show": _printing(_show),
    "petition-types": _printing(_petition_types),
    "committees": _printing(_committees),
}


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    settings = CliSettings()
    if options.command == "dev-secrets":
        from services.dev_secrets import ensure_dev_secrets

        created = ensure_dev_secrets(settings.secrets_dir)
        print(f"secrets in {settings.secrets_dir}: created {len(created)}")
        return 0
    return asyncio.run(_handle(parser, settings, options))


async def _handle(parser: argparse.ArgumentParser, settings: CliSettings, options: argparse.Namespace) -> int:
    try:
        return await HANDLERS[options.command](settings, options)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"petitions {options.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        if error.code() == grpc.StatusCode.UNAUTHENTICATED and not _credential(settings, options):
            print(
                "hint: pass --credential TOKEN or set PETITIONS_CREDENTIAL"
                " (dev: petitions dev-staff-credential --persona staff-admin)",
                file=sys.stderr,
            )
        return EXIT_REFUSED
    except DevProviderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
