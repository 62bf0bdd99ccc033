"""ChannelBillSource over WeChat Pay API v3, through the maintained SDK (`wechatpayv3.async_`).

Two calls, as the API defines them: GET /v3/bill/tradebill (signed answer with a download_url and
the SHA1 of the uncompressed file), then GET of download_url (not signed, so the SDK skips the
check and we verify the hash instead). The SDK runs in public-key mode, so it never asks for
platform certificates, and its gateway is overridden so the same code talks to the simulator.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

# The async client compares against its own enum, not the sync package's WeChatPayType.
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType

from services.reconciliation.adapters.wechatpay_bill import (
    WECHAT_PAY_CHANNEL,
    WECHAT_PAY_SOURCE,
    BillFormatError,
    parse_trade_bill,
)
from services.reconciliation.domain.model import ChannelBill
from services.reconciliation.service_layer.ports import SourceUnavailable
from services.runtime.interceptors import outbound_timeout
from services.runtime.telemetry import tracer

_GZIP_MAGIC = b"\x1f\x8b"
# WeChat's answer for a day on which the merchant had no transaction: the bill is empty, not missing.
_NO_BILL_FOR_DAY = "NO_STATEMENT_EXIST"


@dataclass(frozen=True, slots=True)
class MerchantCredentials:
    """What the merchant platform hands out, read from the key directory. The file names are the
    contract with `python -m infra.simulators.wechatpay.keys`; real keys go in the same files."""

    mchid: str
    appid: str
    serial_no: str
    public_key_id: str
    private_key: str = field(repr=False)
    platform_public_key: str = field(repr=False)
    apiv3_key: str = field(repr=False)

    @classmethod
    def from_directory(cls, directory: Path) -> MerchantCredentials:
        def read(name: str) -> str:
            return (directory / name).read_text(encoding="utf-8").strip()

        return cls(
            mchid=read("mchid.txt"),
            appid=read("appid.txt"),
            serial_no=read("merchant_serial_no.txt"),
            public_key_id=read("public_key_id.txt"),
            private_key=read("merchant_private_key.pem"),
            platform_public_key=read("platform_public_key.pem"),
            apiv3_key=read("apiv3_key.txt"),
        )


class WechatPayTradeBills:
    """Downloads and reads the ALL trade bill of one day."""

    def __init__(self, key_dir: Path, base_url: str, timeout_s: float) -> None:
        self._key_dir = key_dir
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    async def trade_bill(self, business_date: date) -> ChannelBill:
        with tracer(__name__).start_as_current_span("wechatpay trade_bill"):
            credentials = self._credentials()
            try:
                text = await self._download(credentials, business_date)
            except SourceUnavailable:
                raise
            except Exception as error:
                # The SDK raises bare Exception (bad signature, bad key), httpx its own errors, gzip
                # and decoding theirs: every one of them means the bill could not be read.
                raise SourceUnavailable(WECHAT_PAY_SOURCE, f"{type(error).__name__}: {error}") from error
        if text is None:
            return ChannelBill(WECHAT_PAY_SOURCE, WECHAT_PAY_CHANNEL, business_date, ())
        try:
            return parse_trade_bill(text, business_date)
        except BillFormatError as error:
            raise SourceUnavailable(WECHAT_PAY_SOURCE, f"trade bill unusable: {error}") from error

    def _credentials(self) -> MerchantCredentials:
        # Read per run, not at boot: the key files may be written after this service starts.
        try:
            return MerchantCredentials.from_directory(self._key_dir)
        except OSError as error:
            raise SourceUnavailable(WECHAT_PAY_SOURCE, f"merchant keys unreadable: {error}") from error

    async def _download(self, credentials: MerchantCredentials, business_date: date) -> str | None:
        """The bill's text; None when WeChat says the merchant had no transaction that day."""
        async with self._client(credentials) as client:
            status, body = await client.trade_bill(bill_date=business_date.isoformat(), bill_type="ALL")
            answer = _json(body)
            if status != 200:
                if answer.get("code") == _NO_BILL_FOR_DAY:
                    return None
                raise SourceUnavailable(WECHAT_PAY_SOURCE, f"tradebill HTTP {status}: {_error_text(answer)}")
            status, content = await client.download_bill(str(answer.get("download_url", "")))
        if status != 200:
            raise SourceUnavailable(WECHAT_PAY_SOURCE, f"bill download HTTP {status}")
        return _checked_text(_bytes(content), answer)

    def _client(self, credentials: MerchantCredentials) -> AsyncWeChatPay:
        timeout = outbound_timeout(self._timeout_s)
        client = AsyncWeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=credentials.mchid,
            private_key=credentials.private_key,
            cert_serial_no=credentials.serial_no,
            appid=credentials.appid,
            apiv3_key=credentials.apiv3_key,
            timeout=(min(timeout, 5.0), timeout),
            public_key=credentials.platform_public_key,
            public_key_id=credentials.public_key_id,
        )
        # The SDK has no base-URL argument; its gateway is this private attribute (reference §2.5).
        client._core._gate_way = self._base_url
        return client


def _json(body: Any) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


def _error_text(answer: dict[str, Any]) -> str:
    return f"{answer.get('code', '?')} {answer.get('message', '')}".strip()


def _bytes(content: Any) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def _checked_text(content: bytes, answer: dict[str, Any]) -> str:
    """Unzip (tar_type=GZIP), check the SHA1 WeChat announced for the uncompressed file, decode."""
    raw = gzip.decompress(content) if content.startswith(_GZIP_MAGIC) else content
    expected = str(answer.get("hash_value", "")).lower()
    if str(answer.get("hash_type", "SHA1")).upper() != "SHA1" or not expected:
        raise SourceUnavailable(WECHAT_PAY_SOURCE, "tradebill answer has no SHA1 hash to check the file")
    if hashlib.sha1(raw).hexdigest() != expected:
        raise SourceUnavailable(WECHAT_PAY_SOURCE, "bill file does not match the SHA1 WeChat announced")
    return raw.decode("utf-8")
