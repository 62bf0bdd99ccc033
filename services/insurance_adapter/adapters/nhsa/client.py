"""NhsaClient: the hospital's side of the NHSA designated-institution interface, over HTTP.

One method per transaction. Each sends the common envelope through the transport (transport.py),
signs in (9001) lazily and once more when the insurer answers 未签到, and turns every way a call
can end into either a typed result or one of three errors (errors.py): rejected (nothing
happened), unavailable (nothing happened), outcome unknown (it may have happened).

Every mutating method takes an optional `msgid`: a caller that persisted the msgid before sending
re-sends with the same one, and the insurer answers a msgid only once. `new_msgid()` makes one.
Every exchange, whatever its end, is reported to `on_exchange` with the request and response
exactly as sent and received (clear text: the receiver masks before storing). An exception raised
by `on_exchange` propagates to the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind

from services.insurance_adapter.adapters.nhsa.config import NhsaClientConfig
from services.insurance_adapter.adapters.nhsa.errors import (
    InsurerOutcomeUnknown,
    InsurerRejected,
)
from services.insurance_adapter.adapters.nhsa.msgid import MsgidSequence
from services.insurance_adapter.adapters.nhsa.transformers import (
    FeeLine,
    FeeLineResult,
    JsonObject,
    MalformedInsurerReply,
    PersonInfo,
    SettlementBreakdown,
    SettlementRequest,
    StatementResult,
    StatementTotals,
    VisitRegistration,
    fee_results_from_output,
    settlement_or_none,
    statement_input,
)
from services.insurance_adapter.adapters.nhsa.transport import BEIJING, ExchangeRecorder, NhsaTransport
from services.runtime.http11 import Http11Origin
from services.runtime.masking import PatientIdentifier
from services.runtime.telemetry import ATTR_INFNO, ATTR_MSGID, ATTR_SETL_ID, tracer

NOT_SIGNED_IN = "未签到"
ALL_UNSETTLED_BATCHES = "0000"
_tracer = tracer(__name__)
T = TypeVar("T")


class NhsaClient:
    def __init__(
        self,
        config: NhsaClientConfig,
        *,
        http: Http11Origin | None = None,
        on_exchange: ExchangeRecorder | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock or (lambda: datetime.now(BEIJING))
        self._transport = NhsaTransport(config, http, on_exchange, self._clock)
        self._msgids = MsgidSequence(config.fixmedins_code, self._clock, config.msgid_node)
        self._sign_no: str | None = None
        self._sign_in_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> NhsaClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @property
    def sign_no(self) -> str | None:
        return self._sign_no

    def new_msgid(self) -> str:
        """fixmedins_code(12) + yyyyMMddHHmmss(14, Beijing) + node(1) + sequence(3): never the
        same twice in this process, nor across replicas given their own nodes (msgid.py)."""
        return self._msgids.next()

    # 9001

    async def sign_in(self, *, timeout_s: float | None = None) -> str:
        """Sign in (9001) and keep the sign_no for every later message."""
        config, msgid = self._config, self.new_msgid()
        node = {"signIn": {"opter_no": config.opter, "mac": config.terminal_mac, "ip": config.terminal_ip}}
        with self._span("9001", msgid):
            output = await self._transport.exchange("9001", msgid, node, "", "", timeout_s)
            sign_no = _parsed("9001", msgid, _sign_no_of, output)
        self._sign_no = sign_no
        return sign_no

    # 1101, 2201, 2204, 2205

    async def query_person(
        self,
        cert_type: str,
        cert_no: str | PatientIdentifier,
        card_sn: str | None = None,
        *,
        psn_cert_type: str = "01",
        insuplc_admdvs: str = "",
        timeout_s: float | None = None,
    ) -> PersonInfo:
        """1101: who holds this voucher (01 e-voucher token, 02 ID card, 03 social-security card)."""
        number = _reveal(cert_no)
        data = {
            "mdtrt_cert_type": cert_type,
            "mdtrt_cert_no": number,
            "card_sn": card_sn or "",
            "begntime": "",
            "psn_cert_type": psn_cert_type,
            "certno": number if cert_type == "02" else "",
            "psn_name": "",
        }
        return await self._business(
            "1101", {"data": data}, PersonInfo.from_output, insuplc_admdvs, None, timeout_s
        )

    async def register_visit(
        self,
        *,
        psn_no: str,
        insutype: str,
        insuplc_admdvs: str,
        mdtrt_cert_type: str,
        mdtrt_cert_no: str | PatientIdentifier,
        ipt_otp_no: str,
        begntime: datetime,
        dept_code: str,
        dept_name: str,
        atddr_no: str,
        dr_name: str,
        caty: str | None = None,
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> VisitRegistration:
        """2201: register an outpatient visit; the answer's mdtrt_id names it from now on."""
        data = {
            "psn_no": psn_no,
            "insutype": insutype,
            "begntime": begntime.strftime("%Y-%m-%d %H:%M:%S"),
            "mdtrt_cert_type": mdtrt_cert_type,
            "mdtrt_cert_no": _reveal(mdtrt_cert_no),
            "ipt_otp_no": ipt_otp_no,
            "atddr_no": atddr_no,
            "dr_name": dr_name,
            "dept_code": dept_code,
            "dept_name": dept_name,
            "caty": caty or dept_code,
        }
        payload = {"data": data}
        return await self._business(
            "2201", payload, VisitRegistration.from_output, insuplc_admdvs, msgid, timeout_s
        )

    async def upload_fee_details(
        self,
        lines: Sequence[FeeLine],
        *,
        insuplc_admdvs: str,
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[FeeLineResult, ...]:
        """2204: upload a batch of charge lines; the insurer grades and splits each one."""
        if not lines:
            raise ValueError("upload_fee_details needs at least one line")
        payload = {"feedetail": [line.to_input() for line in lines]}
        return await self._business(
            "2204", payload, fee_results_from_output, insuplc_admdvs, msgid, timeout_s
        )

    async def revoke_fee_details(
        self,
        *,
        mdtrt_id: str,
        psn_no: str,
        insuplc_admdvs: str,
        chrg_bchno: str = ALL_UNSETTLED_BATCHES,
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """2205: withdraw an unsettled batch ("0000": every unsettled batch of the visit)."""
        payload = {"data": {"mdtrt_id": mdtrt_id, "chrg_bchno": chrg_bchno, "psn_no": psn_no}}
        await self._business("2205", payload, _ignored, insuplc_admdvs, msgid, timeout_s)

    # 2206, 2207, 2208, 2601, 5203

    async def presettle(
        self, request: SettlementRequest, *, timeout_s: float | None = None
    ) -> SettlementBreakdown:
        """2206: the split the insurer would make now (nothing is booked)."""
        payload = request.presettle_input()
        return await self._business(
            "2206", payload, SettlementBreakdown.from_output, request.insuplc_admdvs, None, timeout_s
        )

    async def settle(
        self,
        request: SettlementRequest,
        presettlement: SettlementBreakdown,
        *,
        invono: str = "",
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> SettlementBreakdown:
        """2207: book the settlement. Resend with the same msgid to learn a lost answer."""
        payload = request.settle_input(presettlement, invono)
        return await self._business(
            "2207", payload, SettlementBreakdown.from_output, request.insuplc_admdvs, msgid, timeout_s
        )

    async def revoke_settlement(
        self,
        *,
        setl_id: str,
        mdtrt_id: str,
        psn_no: str,
        insuplc_admdvs: str,
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> SettlementBreakdown:
        """2208: revoke a settlement; the answer is the offsetting record (negated amounts)."""
        payload = {"data": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}}
        return await self._business(
            "2208", payload, SettlementBreakdown.from_output, insuplc_admdvs, msgid, timeout_s
        )

    async def reverse(
        self,
        omsgid: str,
        oinfno: str,
        *,
        psn_no: str,
        insuplc_admdvs: str = "",
        msgid: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """2601: undo the message `omsgid` (of transaction `oinfno`). The insurer rejects it with
        "原交易不存在" when that message never took effect."""
        payload = {"data": {"psn_no": psn_no, "omsgid": omsgid, "oinfno": oinfno}}
        await self._business("2601", payload, _ignored, insuplc_admdvs, msgid, timeout_s)

    async def query_settlement(
        self,
        *,
        psn_no: str,
        setl_id: str | None = None,
        mdtrt_id: str | None = None,
        medins_setl_id: str | None = None,
        insuplc_admdvs: str = "",
        timeout_s: float | None = None,
    ) -> SettlementBreakdown | None:
        """5203 by setl_id, by the msgid of the 2207 that created it, or by visit; None: no such."""
        data = {"psn_no": psn_no, "setl_id": setl_id or "", "mdtrt_id": mdtrt_id or ""}
        if medins_setl_id:
            data["medins_setl_id"] = medins_setl_id
        return await self._business(
            "5203", {"data": data}, settlement_or_none, insuplc_admdvs, None, timeout_s
        )

    # 3201

    async def reconcile_totals(
        self,
        *,
        insutype: str,
        clr_type: str,
        setl_optins: str,
        stmt_begndate: date,
        stmt_enddate: date,
        totals: StatementTotals,
        timeout_s: float | None = None,
    ) -> StatementResult:
        """3201: compare our totals of one (insutype, clr_type, setl_optins) group with the insurer's."""
        payload = statement_input(insutype, clr_type, setl_optins, (stmt_begndate, stmt_enddate), totals)
        return await self._business("3201", payload, StatementResult.from_output, "", None, timeout_s)

    # the exchange

    async def _business(
        self,
        infno: str,
        payload: JsonObject,
        parse: Callable[[Mapping[str, Any]], T],
        insuplc_admdvs: str,
        msgid: str | None,
        timeout_s: float | None,
    ) -> T:
        msgid = msgid or self.new_msgid()
        with self._span(infno, msgid) as span:
            output = await self._signed_exchange(infno, msgid, payload, insuplc_admdvs, timeout_s)
            result = _parsed(infno, msgid, parse, output)
            if isinstance(result, SettlementBreakdown) and result.setl_id:
                span.set_attribute(ATTR_SETL_ID, result.setl_id)
            return result

    async def _signed_exchange(
        self, infno: str, msgid: str, payload: JsonObject, insuplc_admdvs: str, timeout_s: float | None
    ) -> JsonObject:
        sign_no = await self._current_sign_no()
        try:
            return await self._transport.exchange(infno, msgid, payload, sign_no, insuplc_admdvs, timeout_s)
        except InsurerRejected as rejected:
            if NOT_SIGNED_IN not in rejected.err_msg:
                raise
        # A refused message changed nothing, so it is resent under the same msgid.
        sign_no = await self._sign_in_again(stale=sign_no)
        return await self._transport.exchange(infno, msgid, payload, sign_no, insuplc_admdvs, timeout_s)

    async def _current_sign_no(self) -> str:
        async with self._sign_in_lock:
            return self._sign_no or await self.sign_in()

    async def _sign_in_again(self, stale: str) -> str:
        async with self._sign_in_lock:
            if self._sign_no in (None, stale):  # unless another task has signed in meanwhile
                return await self.sign_in()
            assert self._sign_no is not None
            return self._sign_no

    def _span(self, infno: str, msgid: str) -> Any:
        attributes = {ATTR_INFNO: infno, ATTR_MSGID: msgid}
        return _tracer.start_as_current_span(f"nhsa {infno}", kind=SpanKind.CLIENT, attributes=attributes)


def _parsed(infno: str, msgid: str, parse: Callable[[Mapping[str, Any]], T], output: JsonObject) -> T:
    try:
        return parse(output)
    except MalformedInsurerReply as exc:
        raise InsurerOutcomeUnknown(infno, msgid, f"unreadable output: {exc}") from exc


def _sign_no_of(output: Mapping[str, Any]) -> str:
    node = output.get("signinoutb")
    sign_no = node.get("sign_no") if isinstance(node, Mapping) else None
    if not sign_no:
        raise MalformedInsurerReply("signinoutb.sign_no missing")
    return str(sign_no)


def _ignored(_output: Mapping[str, Any]) -> None:
    return None


def _reveal(value: str | PatientIdentifier) -> str:
    return value.reveal() if isinstance(value, PatientIdentifier) else value
