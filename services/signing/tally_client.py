"""Asking the tally which stored signatures a moderation selection names
(SelectSignatures): the tally owns the signatures table, signing reads it
only through this call. The administrator's staff credential is forwarded,
since the answer names signers by pseudonym."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.errors import DomainError, ErrorKind
from services.signing.moderation import Selection

# The tally reads one petition's rows from every shard: seconds at most.
SELECT_TIMEOUT_SECONDS = 20.0
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def select_request(selection: Selection) -> tally_pb2.SelectSignaturesRequest:
    request = tally_pb2.SelectSignaturesRequest(
        petition_id=selection.petition_id, signers=selection.signers, ip_hash=selection.ip_hash
    )
    if selection.signed_after is not None and selection.signed_before is not None:
        request.signed_after.CopyFrom(_timestamp(selection.signed_after))
        request.signed_before.CopyFrom(_timestamp(selection.signed_before))
    return request


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return "TALLY_REFUSED"


class TallySignatures:
    """The signers of the stored signatures a selection names."""

    def __init__(self, stub: tally_pb2_grpc.TallyAsyncStub):
        self._stub = stub

    async def __call__(self, selection: Selection, credential: str) -> list[str]:
        try:
            reply: tally_pb2.SelectSignaturesResponse = await self._stub.SelectSignatures(
                select_request(selection),
                metadata=(("authorization", f"Bearer {credential}"),),
                timeout=SELECT_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _UNAVAILABLE:
                raise DomainError(
                    ErrorKind.UNAVAILABLE,
                    "TALLY_UNAVAILABLE",
                    f"the tally could not be asked for the stored signatures ({error.code().name}); "
                    "the request can be repeated safely",
                    retry_after_seconds=2,
                ) from None
            # Signing checked the credential and the selection first, so a
            # refusal here is the tally's own view of them: passed on as it
            # said it, under the same status.
            kind = ErrorKind.__members__.get(error.code().name, ErrorKind.UNAVAILABLE)
            raise DomainError(kind, _reason(error), f"tally: {error.details()}") from None
        return [signature.signer for signature in reply.signatures]


@asynccontextmanager
async def tally_signatures(address: str) -> AsyncIterator[TallySignatures]:
    """A client with its own channel to the tally's readers, closed on exit
    (connected on first use: the tally need not be up when signing starts)."""
    channel = grpc.aio.insecure_channel(address)
    try:
        yield TallySignatures(tally_pb2_grpc.TallyStub(channel))
    finally:
        await channel.close()
