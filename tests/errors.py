"""Reading the google.rpc details of a failed call, as a front end would."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class Rejection:
    code: grpc.StatusCode
    reason: str
    fields: list[str]
    retry_after_seconds: float | None
    message: str


def rejection(call: grpc.RpcError) -> Rejection:
    assert isinstance(call, grpc.Call)
    status = rpc_status.from_call(call)
    reason, fields, retry = "", [], None
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry = info_retry.retry_delay.ToTimedelta().total_seconds()
    return Rejection(call.code(), reason, fields, retry, str(call.details()))
