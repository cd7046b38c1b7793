"""`petitions`: the operator's command line.

petitions dev-secrets            create local secret files (once)
petitions migrate                create keyspace, tables and topics
petitions create-petition ...    create (and open) a petition
petitions dev-sign --persona X   sign as a dev persona (or --email A), end to end
petitions tally PETITION         print a petition's tally
petitions recount [--repair]     prove the tally against Cassandra (and rebuild it)
petitions open-data [PETITION…]  publish counts by territory and country (JSON or CSV)
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
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import grpc
from google.protobuf.json_format import MessageToDict

from petitions.v1 import (
    identity_pb2,
    identity_pb2_grpc,
    petition_pb2,
    signing_pb2,
    signing_pb2_grpc,
    tally_pb2,
    tally_pb2_grpc,
)
from servicekit.settings import REPO_ROOT, CommonSettings
from servicekit.stores import CassandraSession, redis_client
from services.catalogue.store import PetitionStore
from services.dev_secrets import ensure_dev_secrets
from services.identity.settings import DEV_ISSUER
from services.migrations import migrate
from services.signing.server import ADMIN_TOKEN_FILE
from services.tally import open_data
from services.tally.counters import ShardedCounters
from services.tally.recount import Recount


class CliSettings(CommonSettings):
    identity_address: str = "127.0.0.1:50061"
    signing_address: str = "127.0.0.1:50062"
    tally_address: str = "127.0.0.1:50063"
    devidp_url: str = DEV_ISSUER.issuer
    devidp_audience: str = DEV_ISSUER.audience
    # Where the dev SMTP sink (make up) keeps the messages it receives.
    dev_mail_dir: Path = REPO_ROOT / ".run" / "mail"


def _print(message: object) -> None:
    print(json.dumps(message, indent=2, sort_keys=True))


def _as_dict(message: object) -> dict[str, object]:
    converted: dict[str, object] = MessageToDict(message, preserving_proto_field_name=True)  # type: ignore[arg-type]
    return converted


async def _create_petition(settings: CliSettings, options: argparse.Namespace) -> int:
    thresholds = []
    for spec in options.threshold:
        identifier, signatures, *label = spec.split(":", 2)
        thresholds.append(
            petition_pb2.Threshold(id=identifier, signatures=int(signatures), label=label[0] if label else identifier)
        )
    token = settings.read_secret(ADMIN_TOKEN_FILE).decode()
    async with grpc.aio.insecure_channel(settings.signing_address) as channel:
        stub = signing_pb2_grpc.SigningStub(channel)
        try:
            petition = await stub.CreatePetition(
                signing_pb2.CreatePetitionRequest(
                    id=options.id,
                    title=options.title,
                    text=options.text,
                    thresholds=thresholds,
                    open=not options.draft,
                ),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS and options.exist_ok:
                print(f"petition {options.id} already exists")
                return 0
            raise
    _print(_as_dict(petition))
    return 0


async def _dev_id_token(settings: CliSettings, options: argparse.Namespace) -> str:
    body = {
        "persona": options.persona,
        "audience": settings.devidp_audience,
        "country": options.country,
        "territory": options.territory,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{settings.devidp_url}/dev/id-token", json=body) as response,
    ):
        response.raise_for_status()
        return str((await response.json())["id_token"])


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
            credential = await identity.ExchangeIdToken(
                identity_pb2.ExchangeIdTokenRequest(id_token=await _dev_id_token(settings, options)), timeout=10
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


async def _petition_ids(settings: CliSettings) -> list[str]:
    """Every petition in the catalogue, through signing's public listing."""
    ids: list[str] = []
    async with grpc.aio.insecure_channel(settings.signing_address) as channel:
        signing = signing_pb2_grpc.SigningStub(channel)
        page_token = ""
        while True:
            page = await signing.ListPetitions(
                signing_pb2.ListPetitionsRequest(page_size=500, page_token=page_token), timeout=30
            )
            ids += [p.id for p in page.petitions]
            page_token = page.next_page_token
            if not page_token:
                return ids


async def _open_data(settings: CliSettings, options: argparse.Namespace) -> int:
    petitions = options.petitions or await _petition_ids(settings)
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


async def _recount(settings: CliSettings, options: argparse.Namespace) -> int:
    """Prints each petition's differences between Cassandra and the live
    counters; with --repair rebuilds the counters and checks again."""
    cassandra = CassandraSession(settings)
    await cassandra.start()
    redis = redis_client(settings)
    try:
        recount = Recount(cassandra, ShardedCounters(redis, settings.signatures_topic), settings.signature_partitions)
        recount.prepare()
        petitions = options.petitions or [p.id for p in await PetitionStore(cassandra).list_all()]
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
    created = await migrate(settings)
    print(f"schema ready in keyspace {settings.keyspace}; topics created: {', '.join(created) or 'none'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petitions", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev-secrets", help="create missing local secret files")
    commands.add_parser("migrate", help="create keyspace, tables and topics (idempotent)")

    create = commands.add_parser("create-petition", help="create a petition (open unless --draft)")
    create.add_argument("--id", default="")
    create.add_argument("--title", required=True)
    create.add_argument("--text", default="")
    create.add_argument(
        "--threshold", action="append", default=[], metavar="ID:SIGNATURES[:LABEL]", help="may be repeated"
    )
    create.add_argument("--draft", action="store_true")
    create.add_argument("--exist-ok", action="store_true", help="succeed if the id is taken")

    sign = commands.add_parser("dev-sign", help="sign as a dev persona through identity and signing")
    who = sign.add_mutually_exclusive_group(required=True)
    who.add_argument("--persona", help="sign in at the dev OIDC provider as this made-up person")
    who.add_argument("--email", help="prove this mailbox with a one-time code (read from the dev mailbox)")
    sign.add_argument("--petition", default="demo")
    sign.add_argument("--country", default="FR")
    sign.add_argument("--territory", default="75")
    sign.add_argument("--idempotency-key", default="")

    recount = commands.add_parser(
        "recount", help="recompute counts from Cassandra and compare with the live tally (exit 1 on a difference)"
    )
    recount.add_argument("petitions", nargs="*", help="petition ids (default: every petition)")
    recount.add_argument("--repair", action="store_true", help="rebuild the live counters from Cassandra")

    tally = commands.add_parser("tally", help="print a petition's tally")
    tally.add_argument("petition", nargs="?", default="demo")

    published = commands.add_parser("open-data", help="counts by territory and country, as open data")
    published.add_argument("petitions", nargs="*", help="petition ids (default: every petition)")
    published.add_argument("--format", choices=("json", "csv"), default="json")
    published.add_argument("--output", default="", help="write to this file instead of standard output")
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


def _run(argv: Sequence[str] | None) -> int:
    options = _parser().parse_args(argv)
    settings = CliSettings()
    if options.command == "dev-secrets":
        created = ensure_dev_secrets(settings.secrets_dir)
        print(f"secrets in {settings.secrets_dir}: created {len(created)}")
        return 0
    handlers = {
        "migrate": _migrate,
        "create-petition": _create_petition,
        "dev-sign": _dev_sign,
        "tally": _tally,
        "recount": _recount,
        "open-data": _open_data,
    }
    try:
        return asyncio.run(handlers[options.command](settings, options))
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as error:
        print(f"error: dev identity provider at {settings.devidp_url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
