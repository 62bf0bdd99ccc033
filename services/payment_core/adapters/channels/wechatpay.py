"""WeChat Pay API v3 through the maintained SDK (`wechatpayv3.async_`): Native (QR), JSAPI (the
payer's mini-program / official-account page) and code payments (付款码, the cashier scans).

Public-key mode (微信支付公钥 + its id): the SDK verifies every answer and notification with the
platform public key and never calls /v3/certificates. The same code runs against the simulator
and against the real gateway; only the key directory and the gateway URL differ.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from opentelemetry.trace import SpanKind
from pydantic_settings import BaseSettings, SettingsConfigDict
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType

from services.payment_core.adapters.channels.ports import (
    BillRow,
    ChannelError,
    ChannelNotification,
    ChannelOutcomeUnknown,
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
    check_order_request,
    check_refund_request,
)
from services.payment_core.adapters.channels.wechatpay_bill import parse_trade_bill
from services.payment_core.adapters.channels.wechatpay_transformers import (
    NOT_NOW,
    code_payment_from,
    code_payment_refused,
    notification_from,
    refund_from,
    rejection_reason_of,
    trade_status_from,
)
from services.runtime.config import MeshSettings
from services.runtime.money import Money
from services.runtime.telemetry import ATTR_AMOUNT_FEN, ATTR_CHANNEL, tracer

CHANNEL_NAME = "wechatpay"
PRODUCTION_GATEWAY = "https://api.mch.weixin.qq.com"
# Local span attribute until services.runtime.telemetry grows a channel-reference constant.
ATTR_OUT_TRADE_NO = "medpay.channel.out_trade_no"
BEIJING = ZoneInfo("Asia/Shanghai")
MAX_DESCRIPTION_CHARS = 127
MAX_OPENID_CHARS = 128
_log = logging.getLogger(__name__)

SdkCall = Callable[[], Awaitable[tuple[int, Any]]]
Attributes = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class WechatPayCredentials:
    """What the merchant platform hands out. Secrets stay out of repr."""

    mchid: str
    appid: str
    merchant_serial_no: str
    public_key_id: str
    merchant_private_key: str = field(repr=False)
    platform_public_key: str = field(repr=False)
    apiv3_key: str = field(repr=False)

    @classmethod
    def from_key_dir(cls, directory: Path) -> WechatPayCredentials:
        """Read the key directory laid out by `python -m infra.simulators.wechatpay.keys`."""

        def read(name: str) -> str:
            return (directory / name).read_text(encoding="utf-8").strip()

        return cls(
            mchid=read("mchid.txt"),
            appid=read("appid.txt"),
            merchant_serial_no=read("merchant_serial_no.txt"),
            public_key_id=read("public_key_id.txt"),
            merchant_private_key=read("merchant_private_key.pem"),
            platform_public_key=read("platform_public_key.pem"),
            apiv3_key=read("apiv3_key.txt"),
        )


class WechatPaySettings(BaseSettings):
    """MEDPAY_WECHATPAY_*: where the keys are and which gateway to talk to. Without a gateway URL
    the adapter talks to the local simulator (MEDPAY_HOST:MEDPAY_WECHATPAY_SIM_PORT); production
    sets MEDPAY_WECHATPAY_GATEWAY_URL=https://api.mch.weixin.qq.com. Refund results are notified
    to MEDPAY_WECHATPAY_REFUND_NOTIFY_URL when set, else to payment-core's notify endpoint (the
    one payment notifications use: it reads both)."""

    model_config = SettingsConfigDict(env_prefix="MEDPAY_WECHATPAY_", extra="ignore")

    key_dir: Path = Path("var/keys")
    gateway_url: str | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    refund_notify_url: str | None = None


def build_wechatpay_channel(
    mesh: MeshSettings, settings: WechatPaySettings | None = None, *, notify_url: str | None = None
) -> WechatPayChannel:
    """Composition-root factory. The channel opens its HTTP client on first use; `aclose()` it.
    `notify_url` is payment-core's notify endpoint, where refund results go by default."""
    settings = settings or WechatPaySettings()
    gateway = settings.gateway_url or f"http://{mesh.host}:{mesh.wechatpay_sim_port}"
    return WechatPayChannel(
        WechatPayCredentials.from_key_dir(settings.key_dir),
        gateway,
        timeout=(settings.connect_timeout_s, settings.read_timeout_s),
        refund_notify_url=settings.refund_notify_url or notify_url,
    )


class WechatPayChannel:
    """The PaymentChannel for WeChat Pay."""

    name = CHANNEL_NAME

    def __init__(
        self,
        credentials: WechatPayCredentials,
        gateway_url: str = PRODUCTION_GATEWAY,
        timeout: tuple[float, float] = (3.0, 10.0),
        refund_notify_url: str | None = None,
        store_id: str = "medpay",
    ) -> None:
        """`refund_notify_url`: where WeChat Pay sends REFUND.* results (the refund request's
        notify_url). Without it the refund's outcome is known only by `query_refund`. `store_id`:
        the merchant's own id of the cashier point (codepay scene_info.store_info.out_id)."""
        self._sdk = AsyncWeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=credentials.mchid,
            private_key=credentials.merchant_private_key,
            cert_serial_no=credentials.merchant_serial_no,
            appid=credentials.appid,
            apiv3_key=credentials.apiv3_key,
            timeout=timeout,
            public_key=credentials.platform_public_key,
            public_key_id=credentials.public_key_id,
        )
        _point_sdk_at(self._sdk, gateway_url)
        self._refund_notify_url = refund_notify_url
        self._appid, self._store_id = credentials.appid, store_id
        self._tracer = tracer(__name__)
        self._open = False

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            await self._sdk.__aexit__(None, None, None)

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        check_order_request(out_trade_no, amount, description, expires_at, MAX_DESCRIPTION_CHARS)
        body = await self._call(
            "place_order",
            lambda: self._sdk.pay(
                description=description,
                out_trade_no=out_trade_no,
                amount={"total": amount.fen, "currency": "CNY"},
                notify_url=notify_url,
                time_expire=expires_at.astimezone(BEIJING).isoformat(timespec="seconds"),
                pay_type=WeChatPayType.NATIVE,
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: amount.fen},
        )
        code_url = _json(body).get("code_url")
        if not isinstance(code_url, str) or not code_url:
            raise ChannelProtocolError("WeChat Pay accepted the order but sent no code_url")
        return PlacedOrder(out_trade_no=out_trade_no, code_url=code_url)

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        check_order_request(out_trade_no, amount, description, expires_at, MAX_DESCRIPTION_CHARS)
        if not payer_openid or len(payer_openid) > MAX_OPENID_CHARS:
            raise ValueError(f"payer_openid must be 1-{MAX_OPENID_CHARS} characters")
        body = await self._call(
            "place_order",
            lambda: self._sdk.pay(
                description=description,
                out_trade_no=out_trade_no,
                amount={"total": amount.fen, "currency": "CNY"},
                payer={"openid": payer_openid},
                notify_url=notify_url,
                time_expire=expires_at.astimezone(BEIJING).isoformat(timespec="seconds"),
                pay_type=WeChatPayType.JSAPI,
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: amount.fen},
        )
        prepay_id = _json(body).get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise ChannelProtocolError("WeChat Pay accepted the JSAPI order but sent no prepay_id")
        return PlacedJsapiOrder(out_trade_no=out_trade_no, prepay_id=prepay_id)

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        """paySign = RSA-SHA256 over "appId\ntimeStamp\nnonceStr\npackage\n" with the merchant key:
        the SDK's `sign` (the signing its examples use for wx.requestPayment)."""
        if not prepay_id:
            raise ValueError("prepay_id is required")
        time_stamp, nonce_str, package = (
            str(int(time.time())),
            secrets.token_hex(16),
            f"prepay_id={prepay_id}",
        )
        pay_sign = self._sdk.sign([self._appid, time_stamp, nonce_str, package])
        return JsapiPayParams(self._appid, time_stamp, nonce_str, package, "RSA", pay_sign)

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        if not out_trade_no or amount.fen <= 0 or not description or len(description) > MAX_DESCRIPTION_CHARS:
            raise ValueError("out_trade_no, a positive amount and a 1-127 character description are required")
        # The code's shape is WeChat Pay's to judge (400 PARAM_ERROR): payment-core checked it already.
        try:
            status, body = await self._call_with_status(
                "codepay",
                lambda: self._sdk.pay(
                    description=description,
                    out_trade_no=out_trade_no,
                    amount={"total": amount.fen, "currency": "CNY"},
                    payer={"auth_code": auth_code.reveal()},
                    scene_info={"store_info": {"out_id": self._store_id}},
                    pay_type=WeChatPayType.CODEPAY,
                ),
                attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: amount.fen},
            )
        except ChannelRejected as refused:
            return code_payment_refused(refused, out_trade_no, amount)
        return code_payment_from(status, _json(body), out_trade_no, amount)

    async def reverse(self, out_trade_no: str) -> None:
        await self._call(
            "reverse",
            lambda: self._sdk.codepay_reverse(out_trade_no),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        body = await self._call(
            "query",
            lambda: self._sdk.query(out_trade_no=out_trade_no),
            mutating=False,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )
        return trade_status_from(_json(body))

    async def close(self, out_trade_no: str) -> None:
        await self._call(
            "close",
            lambda: self._sdk.close(out_trade_no=out_trade_no),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no},
        )

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        check_refund_request(out_refund_no, out_trade_no, refund_amount, order_total)
        body = await self._call(
            "refund",
            lambda: self._sdk.refund(
                out_refund_no=out_refund_no,
                out_trade_no=out_trade_no,
                reason=reason or None,
                amount={"refund": refund_amount.fen, "total": order_total.fen, "currency": "CNY"},
                notify_url=self._refund_notify_url,
            ),
            mutating=True,
            attributes={ATTR_OUT_TRADE_NO: out_trade_no, ATTR_AMOUNT_FEN: refund_amount.fen},
        )
        return refund_from(_json(body))

    async def query_refund(self, out_refund_no: str, out_trade_no: str = "") -> ChannelRefund:
        body = await self._call("query_refund", lambda: self._sdk.query_refund(out_refund_no), mutating=False)
        return refund_from(_json(body))

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        # Lower-case header names: the SDK then reads the `wechatpay-*` spelling whatever the server.
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            callback = self._sdk.callback(lowered, body)
            notification = None if callback is None else notification_from(callback)
        except Exception:  # noqa: BLE001 - the SDK raises bare Exception on foreign algorithms; fail closed
            notification = None
        if notification is None:
            _log.warning("WeChat Pay notification refused: signature, decryption or event type")
        return notification

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        try:
            body = await self._call(
                "trade_bill",
                lambda: self._sdk.trade_bill(bill_date.isoformat(), bill_type="ALL", tar_type="GZIP"),
                mutating=False,
            )
        except ChannelRejected as exc:
            if exc.code == "NO_STATEMENT_EXIST":  # no trade that day: WeChat has no bill to give
                return []
            raise
        descriptor = _json(body)
        url = str(descriptor.get("download_url", ""))
        content = await self._call("download_bill", lambda: self._sdk.download_bill(url), mutating=False)
        return parse_trade_bill(_bill_text(content, str(descriptor.get("hash_value", ""))))

    async def _call(
        self, operation: str, send: SdkCall, *, mutating: bool, attributes: Attributes | None = None
    ) -> Any:
        """One provider call inside one span; non-2xx answers become our exceptions here."""
        return (await self._call_with_status(operation, send, mutating=mutating, attributes=attributes))[1]

    async def _call_with_status(
        self, operation: str, send: SdkCall, *, mutating: bool = True, attributes: Attributes | None = None
    ) -> tuple[int, Any]:
        await self._ensure_open()
        span_attributes = {ATTR_CHANNEL: CHANNEL_NAME, **(attributes or {})}
        with self._tracer.start_as_current_span(
            f"wechatpay {operation}", kind=SpanKind.CLIENT, attributes=span_attributes
        ) as span:
            status, body = await _send(send, mutating)
            span.set_attribute("http.response.status_code", status)
            if not 200 <= status < 300:
                raise _refusal(status, body, mutating)
            return status, body

    async def _ensure_open(self) -> None:
        # In public-key mode the SDK's __aenter__ only builds its httpx client (no I/O, no await
        # before the assignment), so opening lazily cannot race.
        if not self._open:
            await self._sdk.__aenter__()
            self._open = True


def _point_sdk_at(sdk: Any, gateway_url: str) -> None:
    """The SDK has no base-URL parameter: `Core.__init__` hard-codes https://api.mch.weixin.qq.com
    in the private `_core._gate_way`. Pointing it at the simulator (or at the backup domain
    api2.mch.weixin.qq.com) means setting that attribute. Checked here so an SDK upgrade that
    renames it fails at boot, not at the first payment."""
    core = getattr(sdk, "_core", None)
    if core is None or not isinstance(getattr(core, "_gate_way", None), str):
        raise RuntimeError("wechatpayv3 no longer exposes _core._gate_way; revisit the gateway override")
    core._gate_way = gateway_url.rstrip("/")


async def _send(send: SdkCall, mutating: bool) -> tuple[int, Any]:
    try:
        return await send()
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ChannelUnavailable(f"WeChat Pay unreachable: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise _lost_answer(f"no answer from WeChat Pay: {exc!r}", mutating) from exc
    except Exception as exc:  # the SDK raises bare Exception when a 2xx answer fails verification
        raise _lost_answer(f"unverifiable WeChat Pay answer: {exc}", mutating) from exc


def _lost_answer(message: str, mutating: bool) -> ChannelError:
    return ChannelOutcomeUnknown(message) if mutating else ChannelUnavailable(message)


def _refusal(status: int, body: Any, mutating: bool) -> ChannelError:
    code, message = _error_fields(body)
    if status == 429 or code in NOT_NOW:  # nothing was done; the same request may pass later
        why = NOT_NOW.get(code, "rate limited")
        return ChannelUnavailable(f"WeChat Pay {status} {code} ({why}): {message}")
    if status >= 500:  # SYSTEM_ERROR: "retry with the same parameters"; the effect may exist
        return _lost_answer(f"WeChat Pay {status} {code}: {message}", mutating)
    return ChannelRejected(code, message, rejection_reason_of(code, message))


def _error_fields(body: Any) -> tuple[str, str]:
    try:
        payload = _json(body)
    except ChannelProtocolError:
        return "UNKNOWN", "unreadable error body"
    return str(payload.get("code", "UNKNOWN")), str(payload.get("message", ""))


def _json(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise ChannelProtocolError("WeChat Pay answer is not JSON") from None
    if not isinstance(payload, dict):
        raise ChannelProtocolError("WeChat Pay answer is not a JSON object")
    return payload


def _bill_text(content: Any, sha1: str) -> str:
    """Gunzip, check the SHA1 WeChat gave for the uncompressed file, decode."""
    raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ChannelProtocolError("trade bill is not valid gzip") from exc
    if hashlib.sha1(raw).hexdigest() != sha1.lower():
        raise ChannelProtocolError("trade bill does not match its SHA1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChannelProtocolError("trade bill is not UTF-8") from exc


def _conforms_to_the_port(channel: WechatPayChannel) -> PaymentChannel:
    return channel  # mypy proves WechatPayChannel implements PaymentChannel
