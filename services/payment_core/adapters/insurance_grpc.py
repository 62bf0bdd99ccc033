"""InsurancePort over gRPC: medpay.insurance.v1.InsuranceService served by insurance-adapter.

The adapter's rich statuses (ErrorInfo.reason, BadRequest) come back as the runtime's errors, so the
service layer branches on the same types whether the insurer is real, simulated or faked. A deadline
that passes on a mutating call is OutcomeUnknown: the adapter may have acted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from medpay.common.v1 import common_pb2
from medpay.insurance.v1 import insurance_pb2, insurance_pb2_grpc

from services.payment_core.adapters.insurance import (
    InsurerSettlement,
    InsurerStatus,
    PresettleAsk,
    Voucher,
)
from services.payment_core.domain.model import ChargeLine, InsuranceSplit
from services.runtime import errors
from services.runtime.interceptors import outbound_timeout

ResponseT = TypeVar("ResponseT")
_DETAILS_KEY = "grpc-status-details-bin"
_BY_REASON: dict[str, type[errors.MedPayError]] = {
    "INSURER_REJECTED": errors.InsurerRejected,
    "INSURER_UNAVAILABLE": errors.InsurerUnavailable,
    "OUTCOME_UNKNOWN": errors.OutcomeUnknown,
    "REQUEST_IN_PROGRESS": errors.OutcomeUnknown,
    "STATE_CONFLICT": errors.StateConflict,
    "REQUEST_ID_REUSED": errors.StateConflict,
    "RESOURCE_NOT_FOUND": errors.NotFound,
}


class GrpcInsurance:
    """The InsurancePort of a running mesh. `close()` it at shutdown."""

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._channel = channel
        self._stub = insurance_pb2_grpc.InsuranceServiceStub(channel)
        self._deadline_s = deadline_s

    async def close(self) -> None:
        await self._channel.close()

    async def presettle(self, ask: PresettleAsk) -> InsurerSettlement:
        request = _presettle_request(ask)
        response = await self._call(self._stub.Presettle, request)
        return settlement_from(response.settlement)

    async def settle(self, request_id: str, settlement_id: str) -> InsurerSettlement:
        request = insurance_pb2.SettleRequest(request_id=request_id, settlement_id=settlement_id)
        response = await self._call(self._stub.Settle, request)
        return settlement_from(response.settlement)

    async def cancel_presettlement(
        self, request_id: str, settlement_id: str, order_ref: str = ""
    ) -> InsurerSettlement:
        request = insurance_pb2.CancelPresettlementRequest(
            request_id=request_id, settlement_id=settlement_id, order_ref="" if settlement_id else order_ref
        )
        response = await self._call(self._stub.CancelPresettlement, request)
        return settlement_from(response.settlement)

    async def revoke_settlement(self, request_id: str, settlement_id: str, reason: str) -> InsurerSettlement:
        request = insurance_pb2.RevokeSettlementRequest(
            request_id=request_id, settlement_id=settlement_id, reason=reason
        )
        response = await self._call(self._stub.RevokeSettlement, request)
        return settlement_from(response.settlement)

    async def represettle(
        self, request_id: str, order_ref: str, revoked_settlement_id: str, lines: tuple[ChargeLine, ...]
    ) -> InsurerSettlement:
        request = insurance_pb2.PresettleRequest(
            request_id=request_id,
            order_ref=order_ref,
            after_revoked_settlement_id=revoked_settlement_id,
            items=[_item(line) for line in lines],
        )
        response = await self._call(self._stub.Presettle, request)
        return settlement_from(response.settlement)

    async def _call(self, method: Callable[..., Awaitable[ResponseT]], request: Any) -> ResponseT:
        # The OpenTelemetry client interceptor (runtime.grpc_client) spans the call itself.
        try:
            return await method(request, timeout=outbound_timeout(self._deadline_s))
        except grpc.aio.AioRpcError as error:
            raise error_from(error) from None


def error_from(error: grpc.aio.AioRpcError) -> errors.MedPayError:
    """The runtime error a failed call to insurance-adapter stands for."""
    status = _rich_status(error)
    message = (status.message if status else None) or error.details() or error.code().name
    info, violations = _details(status)
    if info is not None and info.reason == "FIELD_INVALID" and violations:
        return errors.InvalidArgument([errors.FieldViolation(v.field, v.description) for v in violations])
    if info is not None and info.reason in _BY_REASON:
        return _BY_REASON[info.reason](message, dict(info.metadata))
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.OutcomeUnknown(f"insurance-adapter did not answer in time: {message}")
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return errors.InsurerUnavailable(f"insurance-adapter unreachable: {message}")
    return errors.OutcomeUnknown(f"insurance-adapter failed ({error.code().name}): {message}")


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _details(
    status: status_pb2.Status | None,
) -> tuple[error_details_pb2.ErrorInfo | None, list[error_details_pb2.BadRequest.FieldViolation]]:
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(bad_request.field_violations)
    return info, violations


def _presettle_request(ask: PresettleAsk) -> insurance_pb2.PresettleRequest:
    return insurance_pb2.PresettleRequest(
        request_id=ask.request_id,
        order_ref=ask.order_ref,
        voucher=_voucher(ask.voucher),
        insutype=ask.insutype,
        med_type=ask.med_type,
        use_personal_account=ask.use_personal_account,
        dept_code=ask.dept_code,
        doctor_code=ask.doctor_code,
        doctor_name=ask.doctor_name,
        visit_no=ask.visit_no,
        items=[_item(line) for line in ask.lines],
        dise_codg=ask.dise_codg,
        dise_name=ask.dise_name,
        insuplc_admdvs=ask.insuplc_admdvs,
    )


def _voucher(voucher: Voucher) -> common_pb2.PatientVoucher:
    # The only place the clear identifiers are revealed: they leave for the insurer.
    return common_pb2.PatientVoucher(
        mdtrt_cert_type=voucher.cert_type,
        mdtrt_cert_no=voucher.cert_no.reveal(),
        card_sn=voucher.card_sn.reveal(),
        psn_cert_type=voucher.psn_cert_type,
        psn_name=voucher.psn_name.reveal(),
    )


def _item(line: ChargeLine) -> common_pb2.ChargeItem:
    return common_pb2.ChargeItem(
        hospital_code=line.hospital_code,
        national_code=line.national_code,
        name=line.name,
        chrgitm_lv=line.chrgitm_lv,
        med_chrgitm_type=line.med_chrgitm_type,
        quantity_ten_thousandths=line.quantity_ten_thousandths,
        unit_price_fen=line.unit_price.fen,
        line_total_fen=line.line_total.fen,
        dept_code=line.dept_code,
        doctor_code=line.doctor_code,
        line_no=line.line_no,
    )


def settlement_from(message: insurance_pb2.Settlement) -> InsurerSettlement:
    name = insurance_pb2.SettlementStatus.Name(message.status).removeprefix("SETTLEMENT_STATUS_")
    return InsurerSettlement(
        settlement_id=message.settlement_id,
        status=InsurerStatus(name),
        insutype=message.insutype,
        setl_id=message.setl_id,
        split=split_from(message.breakdown) if message.HasField("breakdown") else None,
        status_reason=message.status_reason,
    )


def split_from(breakdown: common_pb2.SettlementBreakdown) -> InsuranceSplit:
    return InsuranceSplit.from_fen(
        {name: int(getattr(breakdown, f"{name}_fen")) for name in InsuranceSplit.field_names()}
    )
