"""One NHSA message on the wire: the envelope, the TIF gateway headers, the HTTP exchange, and
how its ending is classified (errors.py) and reported to the `on_exchange` recorder."""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry import propagate

from services.insurance_adapter.adapters.nhsa.config import NhsaClientConfig
from services.insurance_adapter.adapters.nhsa.errors import (
    InsurerOutcomeUnknown,
    InsurerRejected,
    InsurerUnavailable,
    NhsaError,
)
from services.insurance_adapter.adapters.nhsa.transformers import JsonObject
from services.insurance_adapter.adapters.nhsa.wire import dumps, loads
from services.runtime.http11 import Answer, Http11Origin, NoAnswer, NotConnected, NotSentCompletely
from services.runtime.metrics import http_request_made

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
_GATEWAY_DOWN = frozenset({502, 503})


class ExchangeOutcome(enum.StrEnum):
    """How one exchange ended; the values match the insurance-adapter's message-log outcomes."""

    OK = "OK"
    REJECTED = "REJECTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"


class ExchangeRecorder(Protocol):
    """Called once per exchange, whatever its end, with the JSON exactly as sent and received."""

    async def __call__(
        self,
        infno: str,
        msgid: str,
        request_json: str,
        response_json: str | None,
        outcome: ExchangeOutcome,
        elapsed_ms: int,
    ) -> None: ...


def tif_headers(paas_id: str, paas_token: str, timestamp: int, nonce: str) -> dict[str, str]:
    """The TIF gateway headers: signature = hex SHA-256(timestamp + token + nonce + timestamp)."""
    signed = f"{timestamp}{paas_token}{nonce}{timestamp}".encode()
    return {
        "x-tif-paasid": paas_id,
        "x-tif-timestamp": str(timestamp),
        "x-tif-nonce": nonce,
        "x-tif-signature": hashlib.sha256(signed).hexdigest(),
    }


class NhsaTransport:
    """Sends envelopes for one institution; knows nothing of sign-in or of the transactions."""

    def __init__(
        self,
        config: NhsaClientConfig,
        http: Http11Origin | None,
        on_exchange: ExchangeRecorder | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._http = http if http is not None else Http11Origin(config.base_url, on_request=http_request_made)
        self._owns_http = http is None
        self._on_exchange = on_exchange
        self._clock = clock
        self._path = urlsplit(config.base_url).path.rstrip("/") + config.path

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def exchange(
        self,
        infno: str,
        msgid: str,
        payload: JsonObject,
        sign_no: str,
        insuplc_admdvs: str,
        timeout_s: float | None,
    ) -> JsonObject:
        """Send one envelope; the output node of an infcode-0 answer, else a typed NhsaError."""
        request_json = dumps(self._envelope(infno, msgid, payload, sign_no, insuplc_admdvs))
        started = time.perf_counter()
        response_json: str | None = None
        try:
            response = await self._post(infno, msgid, request_json, timeout_s)
            response_json = response.text
            output = _output_of(infno, msgid, response)
        except NhsaError as error:
            await self._record(infno, msgid, request_json, response_json, _outcome_of(error), started)
            raise
        await self._record(infno, msgid, request_json, response_json, ExchangeOutcome.OK, started)
        return output

    async def _post(self, infno: str, msgid: str, request_json: str, timeout_s: float | None) -> Answer:
        config = self._config
        headers = tif_headers(config.paas_id, config.paas_token, int(time.time()), secrets.token_hex(16))
        headers["content-type"] = "application/json;charset=UTF-8"
        propagate.inject(headers)  # traceparent: the insurer-side spans join this trace
        deadline = timeout_s or config.timeout_s
        connect = min(deadline, config.connect_timeout_s)
        try:
            return await self._http.post(self._path, request_json.encode(), headers, deadline, connect)
        except NotConnected as exc:
            raise InsurerUnavailable(infno, msgid, f"not sent: {exc}") from exc
        except NotSentCompletely as exc:
            raise InsurerUnavailable(infno, msgid, f"not sent completely: {exc}") from exc
        except NoAnswer as exc:
            raise InsurerOutcomeUnknown(infno, msgid, f"sent, no answer: {exc}") from exc

    def _envelope(
        self, infno: str, msgid: str, payload: JsonObject, sign_no: str, insuplc_admdvs: str
    ) -> JsonObject:
        config = self._config
        return {
            "infno": infno,
            "msgid": msgid,
            "mdtrtarea_admvs": config.mdtrtarea_admvs,
            "insuplc_admdvs": insuplc_admdvs,
            "recer_sys_code": config.recer_sys_code,
            "dev_no": "",
            "dev_safe_info": "",
            "cainfo": "",
            "signtype": "",
            "infver": config.infver,
            "opter_type": config.opter_type,
            "opter": config.opter,
            "opter_name": config.opter_name,
            "inf_time": self._clock().astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "fixmedins_code": config.fixmedins_code,
            "fixmedins_name": config.fixmedins_name,
            "sign_no": sign_no,
            "input": payload,
        }

    async def _record(
        self,
        infno: str,
        msgid: str,
        request_json: str,
        response_json: str | None,
        outcome: ExchangeOutcome,
        started: float,
    ) -> None:
        if self._on_exchange is not None:
            elapsed_ms = round((time.perf_counter() - started) * 1000)
            await self._on_exchange(infno, msgid, request_json, response_json, outcome, elapsed_ms)


def _output_of(infno: str, msgid: str, response: Answer) -> JsonObject:
    """The output node of a successful answer, or the error this answer amounts to."""
    status = response.status
    if status in _GATEWAY_DOWN or 400 <= status < 500:
        raise InsurerUnavailable(infno, msgid, f"refused by the gateway: HTTP {status}")
    if status != 200:
        raise InsurerOutcomeUnknown(infno, msgid, f"HTTP {status}")
    try:
        body = loads(response.body)
    except ValueError as exc:
        raise InsurerOutcomeUnknown(infno, msgid, "reply is not JSON") from exc
    if not isinstance(body, dict) or body.get("infcode") is None:
        raise InsurerOutcomeUnknown(infno, msgid, "reply has no infcode")
    if str(body["infcode"]) != "0":
        raise InsurerRejected(infno, str(body.get("err_msg") or f"infcode {body['infcode']}"), msgid)
    output = body.get("output")
    return output if isinstance(output, dict) else {}


def _outcome_of(error: NhsaError) -> ExchangeOutcome:
    if isinstance(error, InsurerRejected):
        return ExchangeOutcome.REJECTED
    if isinstance(error, InsurerUnavailable):
        return ExchangeOutcome.UNAVAILABLE
    return ExchangeOutcome.UNKNOWN
