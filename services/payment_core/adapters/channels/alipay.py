"""Alipay (支付宝开放平台, 当面付 / 统一收单) through the maintained `python-alipay-sdk`.

Public-key mode with RSA2: the SDK signs every request with the app private key and verifies every
answer against the Alipay public key over the exact inner JSON. The same code runs against the
simulator (infra/simulators/alipay) and the real gateway; only the key directory and the gateway
URL differ.

The SDK is synchronous (urllib `urlopen`), so each call runs in a worker thread with
`asyncio.to_thread`; a call in flight cannot be cancelled, only abandoned, and the SDK's own
timeout bounds it. The SDK object is safe to share between threads: it keeps no per-call state.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig
from opentelemetry.trace import SpanKind
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.payment_core.adapters.channels.alipay_bill import detail_text, parse_trade_bill
from services.payment_core.adapters.channels.alipay_transformers import (
    REFUND_SUCCESS,
    checked,
    lost_answer,
    notification_from,
    refund_from_query,
    refund_id_of,
    text,
    time_of,
    trade_status_from,
)
from services.payment_core.adapters.channels.ports import (
    BillRow,
    ChannelError,
    ChannelNotification,
    ChannelProtocolError,
    ChannelRefund,
    ChannelRejected,
    ChannelTradeStatus,
    ChannelUnavailable,
    JsapiPayParams,
    PaymentChannel,
    PaymentCode,
    PlacedJsapiOrder,
    PlacedOrder,
    RefundStatus,
    RejectionReason,
    TradeState,
    check_order_request,
    check_refund_request,
)
from services.runtime.config import MeshSettings
from services.runtime.money import Money
from services.runtime.telemetry import ATTR_AMOUNT_FEN, ATTR_CHANNEL, tracer

CHANNEL_NAME = "alipay"
PRODUCTION_GATEWAY = "https://openapi.alipay.com/gateway.do"
ATTR_OUT_TRADE_NO = "medpay.channel.out_trade_no"
BEIJING = ZoneInfo("Asia/Shanghai")
MAX_SUBJECT_CHARS = 256
BILL_NOT_EXIST = "isp.bill_not_exist"
_log = logging.getLogger(__name__)
# python-alipay-sdk configures its own logger at DEBUG with a console handler of its own, and when
# built verbose logs every request's fields as it signs them (a patient's payment code among them).
# We never build it verbose; the logger is silenced too, so that no setting or later SDK version
# prints a request in clear. Its warnings still go through the service's logging.
_sdk_log = logging.getLogger("python-alipay-sdk")
_sdk_log.setLevel(logging.WARNING)
_sdk_log.handlers.clear()
_sdk_log.propagate = True
# alipay.trade.pay's "等待用户付款": the patient confirms the bar-code payment on the phone.
USER_PAYING_CODE = "10003"


# payment-core offers no Alipay in-app payment (OFFERED_METHODS): refused, never guessed.
def _no_jsapi() -> ChannelRejected:
    return ChannelRejected("METHOD_NOT_OFFERED", "no Alipay JSAPI payment", RejectionReason.INVALID_REQUEST)


Attributes = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class AlipayCredentials:
    """What the open platform hands out (public-key mode). Secrets stay out of repr."""

    app_id: str
    app_private_key: str = field(repr=False)
    alipay_public_key: str = field(repr=False)

    @classmethod
    def from_key_dir(cls, directory: Path) -> AlipayCredentials:
        """Read the key directory laid out by `python -m infra.simulators.alipay.keys`."""

        def read(name: str) -> str:
            return (directory / name).read_text(encoding="utf-8").strip()

        return cls(read("app_id.txt"), read("app_private_key.pem"), read("alipay_public_key.pem"))


class AlipaySettings(BaseSettings):
    """MEDPAY_ALIPAY_*: where the keys are and which gateway to talk to. Without a gateway URL the
    adapter talks to the local simulator (MEDPAY_HOST:MEDPAY_ALIPAY_SIM_PORT); production sets
    MEDPAY_ALIPAY_GATEWAY_URL=https://openapi.alipay.com/gateway.do."""

    model_config = SettingsConfigDict(env_prefix="MEDPAY_ALIPAY_", extra="ignore")

    key_dir: Path = Path("var/keys/alipay")
    gateway_url: str | None = None
    timeout_s: float = 10.0


def build_alipay_channel(mesh: MeshSettings, settings: AlipaySettings | None = None) -> AlipayChannel:
    settings = settings or AlipaySettings()
    gateway = settings.gateway_url or f"http://{mesh.host}:{mesh.alipay_sim_port}/gateway.do"
    return AlipayChannel(AlipayCredentials.from_key_dir(settings.key_dir), gateway, settings.timeout_s)


class AlipayChannel:
    """The PaymentChannel for Alipay: QR orders by alipay.trade.precreate."""

    name = CHANNEL_NAME

    def __init__(
        self, credentials: AlipayCredentials, gateway_url: str = PRODUCTION_GATEWAY, timeout_s: float = 10.0
    ) -> None:
        self._sdk = AliPay(
            appid=credentials.app_id,
            app_notify_url=None,
            app_private_key_string=credentials.app_private_key,
            alipay_public_key_string=credentials.alipay_public_key,
            sign_type="RSA2",
            config=AliPayConfig(timeout=timeout_s),
        )
        _point_sdk_at(self._sdk, gateway_url)
        self._app_id, self._timeout_s = credentials.app_id, timeout_s
        self._tracer = tracer(__name__)

    async def aclose(self) -> None:
        """Nothing to close: the SDK opens one urllib connection per call."""

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        check_order_request(out_trade_no, amount, description, expires_at, MAX_SUBJECT_CHARS)
        answer = await self._call(
            "place_order",
            lambda: self._sdk.api_alipay_trade_precreate(
                brace_free(description),
                out_trade_no,
                amount.to_yuan_str(),
                notify_url=notify_url,
                time_expire=expires_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: amount.fen},
        )
        return PlacedOrder(out_trade_no=out_trade_no, code_url=text(answer, "qr_code"))

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        raise _no_jsapi()

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        raise _no_jsapi()

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        """alipay.trade.pay, scene bar_code: 10000 paid at once; 10003 (等待用户付款) while the
        patient confirms on the phone, settled by `query` or `cancel` (reverse)."""
        answer = await self._send(
            "pay_by_code",
            lambda: self._sdk.api_alipay_trade_pay(
                out_trade_no,
                "bar_code",
                auth_code.reveal(),
                brace_free(description),
                total_amount=amount.to_yuan_str(),
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: amount.fen},
        )
        if not isinstance(answer, Mapping):
            raise ChannelProtocolError("Alipay pay_by_code answer is not a JSON object")
        if str(answer.get("code", "")) == USER_PAYING_CODE:
            return ChannelTradeStatus(
                out_trade_no, TradeState.PAYING, amount, None, None, channel_state="WAIT_BUYER_PAY"
            )
        body = checked(answer, "pay_by_code", mutating=True)
        return trade_status_from({**body, "trade_status": "TRADE_SUCCESS"}, paid_at_key="gmt_payment")

    async def reverse(self, out_trade_no: str) -> None:
        """alipay.trade.cancel (撤销): unpaid it is closed, paid it is refunded in full. A
        retry_flag of Y means the gateway could not do it now: asked again (same out_trade_no)."""
        answer = await self._call(
            "reverse",
            lambda: self._sdk.api_alipay_trade_cancel(out_trade_no=out_trade_no),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )
        if str(answer.get("retry_flag", "N")) == "Y":
            raise ChannelUnavailable(f"Alipay could not cancel {out_trade_no} now (retry_flag Y)")

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        answer = await self._call(
            "query",
            lambda: self._sdk.api_alipay_trade_query(out_trade_no=out_trade_no),
            mutating=False,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )
        return trade_status_from(answer)

    async def close(self, out_trade_no: str) -> None:
        try:
            await self._call(
                "close",
                lambda: self._sdk.api_alipay_trade_close(out_trade_no=out_trade_no),
                mutating=True,
                attributes={ATTR_OUT_TRADE_NO: out_trade_no},
            )
        except ChannelRejected as refused:
            if refused.code != "ACQ.TRADE_STATUS_ERROR":
                raise
            await self._explain_close_refusal(out_trade_no, refused)

    async def _explain_close_refusal(self, out_trade_no: str, refused: ChannelRejected) -> None:
        """ACQ.TRADE_STATUS_ERROR answers both "already closed" (a no-op for us) and "paid"."""
        state = (await self.query(out_trade_no)).state
        if state is TradeState.CLOSED:
            return
        if state in (TradeState.PAID, TradeState.REFUNDED):
            raise ChannelRejected(refused.code, refused.message, RejectionReason.ALREADY_PAID)
        raise refused

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        """fund_change Y: the money moved now. N: a replay, or a refund not yet confirmed; Alipay's
        rule is to ask alipay.trade.fastpay.refund.query then, which tells which."""
        check_refund_request(out_refund_no, out_trade_no, refund_amount, order_total)
        answer = await self._call(
            "refund",
            lambda: self._sdk.api_alipay_trade_refund(
                refund_amount.to_yuan_str(),
                out_trade_no=out_trade_no,
                out_request_no=out_refund_no,
                refund_reason=brace_free(reason) or None,
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: refund_amount.fen},
        )
        if answer.get("fund_change") != "Y":
            return await self.query_refund(out_refund_no, out_trade_no)
        return ChannelRefund(
            out_refund_no=out_refund_no,
            out_trade_no=text(answer, "out_trade_no"),
            refund_id=refund_id_of(text(answer, "trade_no"), out_refund_no),
            status=RefundStatus.SUCCEEDED,
            # What was refunded of the order. Not send_back_fee: that is the merchant's share of it,
            # lower when a coupon paid part of the order.
            amount=refund_amount,
            success_time=time_of(answer.get("gmt_refund_pay")),
            channel_status=REFUND_SUCCESS,
        )

    async def query_refund(self, out_refund_no: str, out_trade_no: str) -> ChannelRefund:
        if not out_trade_no:
            raise ValueError("Alipay finds a refund only with its order's out_trade_no")
        biz = {
            "out_trade_no": out_trade_no,
            "out_request_no": out_refund_no,
            "query_options": ["gmt_refund_pay"],
        }
        answer = await self._call(
            "query_refund",
            lambda: self._sdk.server_api("alipay.trade.fastpay.refund.query", biz_content=biz),
            mutating=False,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )
        return refund_from_query(answer, out_refund_no)

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        """The signature is in the form itself (sign, sign_type): headers play no part."""
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
            notification = self._verified(params)
        except (ValueError, UnicodeDecodeError, ChannelError, AliPayException):
            notification = None
        if notification is None:
            _log.warning("Alipay notification refused: signature, app_id or content")
        return notification

    def _verified(self, params: dict[str, str]) -> ChannelNotification | None:
        signature = params.pop("sign", "")
        if not signature or params.get("sign_type") != "RSA2" or params.get("app_id") != self._app_id:
            return None
        if not self._sdk.verify(dict(params), signature):  # verify() drops sign_type itself
            return None
        params.pop("sign_type", None)
        return notification_from(params)

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        biz = {"bill_type": "trade", "bill_date": bill_date.isoformat()}
        try:
            answer = await self._call(
                "trade_bill",
                lambda: self._sdk.server_api(
                    "alipay.data.dataservice.bill.downloadurl.query", biz_content=biz
                ),
                mutating=False,
            )
        except ChannelRejected as exc:
            if exc.code == BILL_NOT_EXIST:  # no trade that day: Alipay has no bill to give
                return []
            raise
        url = text(answer, "bill_download_url")
        content = await self._send("download_bill", lambda: _fetch(url, self._timeout_s), mutating=False)
        return parse_trade_bill(detail_text(content))

    async def _call(
        self, operation: str, send: Callable[[], Any], *, mutating: bool, attributes: Attributes | None = None
    ) -> Mapping[str, Any]:
        """One SDK call in a worker thread inside one span; the answer's code is checked here."""
        answer = await self._send(operation, send, mutating=mutating, attributes=attributes)
        if not isinstance(answer, Mapping):
            raise ChannelProtocolError(f"Alipay {operation} answer is not a JSON object")
        return checked(answer, operation, mutating)

    async def _send(
        self, operation: str, send: Callable[[], Any], *, mutating: bool, attributes: Attributes | None = None
    ) -> Any:
        span_attributes = {ATTR_CHANNEL: CHANNEL_NAME, **(attributes or {})}
        with self._tracer.start_as_current_span(
            f"alipay {operation}", kind=SpanKind.CLIENT, attributes=span_attributes
        ):
            try:
                return await asyncio.to_thread(send)
            except Exception as exc:  # every SDK/urllib failure is sorted in one place
                raise _channel_error(exc, operation, mutating) from exc


def _channel_error(exc: Exception, operation: str, mutating: bool) -> ChannelError:
    if isinstance(exc, ChannelError):
        return exc
    if isinstance(exc, urllib.error.HTTPError):  # 5xx or any non-200: the effect may exist
        return lost_answer(f"Alipay {operation}: HTTP {exc.code}", mutating)
    if isinstance(exc, urllib.error.URLError) and _not_sent(exc.reason):
        return ChannelUnavailable(f"Alipay unreachable: {exc.reason!r}")
    if isinstance(exc, AliPayValidationError):
        return lost_answer(f"Alipay {operation}: answer signature does not verify", mutating)
    if isinstance(exc, AliPayException):  # unsigned answer or error_response: not trustworthy
        return lost_answer(f"Alipay {operation}: unsigned answer ({exc})", mutating)
    if isinstance(exc, (OSError, http.client.HTTPException, ValueError)):  # timeouts, resets, bad JSON
        return lost_answer(f"no usable answer from Alipay {operation}: {exc!r}", mutating)
    raise exc


def _not_sent(reason: object) -> bool:
    """Connection refused, name not resolved or connect timeout: the request never left."""
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror, TimeoutError))


def _fetch(url: str, timeout_s: float) -> bytes:
    # The URL comes from a verified answer of the gateway.
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        content: bytes = response.read()
        return content


def _point_sdk_at(sdk: Any, gateway_url: str) -> None:
    """The SDK has no gateway parameter: `debug` picks prod or sandbox into the private `_gateway`.
    Checked here so an SDK upgrade that renames it fails at boot, not at the first payment."""
    if not isinstance(getattr(sdk, "_gateway", None), str):
        raise RuntimeError("python-alipay-sdk no longer exposes _gateway; revisit the gateway override")
    sdk._gateway = gateway_url


def brace_free(text: str) -> str:
    """Free text the gateway may echo (refund_reason in refund queries) without ASCII braces: the
    SDK finds the signed inner JSON by counting braces and ignores JSON strings, so a brace in an
    echoed value makes a genuine answer fail verification (python-alipay-sdk 3.4,
    `_get_string_to_be_signed`). Full-width braces read the same to a person."""
    return text.replace("{", "｛").replace("}", "｝")


def _conforms_to_the_port(channel: AlipayChannel) -> PaymentChannel:
    return channel  # mypy proves AlipayChannel implements PaymentChannel
