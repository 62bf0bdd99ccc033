"""Read AIP-193 rich errors (ErrorInfo + BadRequest) off a failed aio call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status on {error.code()}: {error.details()}")


def error_reason(error: grpc.aio.AioRpcError) -> str:
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo in the status")


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    for detail in rich_status(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return [violation.field for violation in bad_request.field_violations]
    return []
