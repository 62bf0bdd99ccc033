"""The simulator's HTTP face: the NHSA single endpoint behind the TIF gateway, plus /sim controls.

POST /fsi/api/rsfComIfsService/callService   the envelope in, the envelope out (HTTP 401 when the
                                             x-tif-* signature is wrong)
POST /sim/faults      {"infno": "2207", "mode": "timeout|error|reject|unknown_after_commit",
                       "count": 1, "hang_s": 30}   ("*" as infno matches every transaction)
DELETE /sim/faults    disarm everything
POST /sim/sign-ins/expire   every sign_no becomes invalid (the next business call gets 未签到)
GET /sim/health
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.nhsa.faults import Fault, FaultBook, FaultMode
from infra.simulators.nhsa.gateway import gateway_refusal
from infra.simulators.nhsa.platform import NhsaPlatform, Reply
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.wire import loads
from services.runtime.telemetry import ATTR_INFNO, ATTR_MSGID, tracer

CALL_SERVICE_PATH = "/fsi/api/rsfComIfsService/callService"
ATTR_INFCODE = "medpay.nhsa.infcode"
_JSON = "application/json;charset=UTF-8"
_log = logging.getLogger("infra.simulators.nhsa")
_tracer = tracer(__name__)


class NhsaSimulator:
    def __init__(self, platform: NhsaPlatform, settings: NhsaSimSettings, faults: FaultBook) -> None:
        self._platform = platform
        self._settings = settings
        self._faults = faults

    async def call_service(self, request: Request) -> Response:
        refusal = gateway_refusal(request.headers, self._settings.paas_token)
        if refusal is not None:
            return JSONResponse({"code": 401, "message": refusal}, status_code=401)
        envelope = _parsed(await request.body())
        infno, msgid = _header_fields(envelope)
        started = time.perf_counter()
        with _tracer.start_as_current_span(
            f"nhsa.sim {infno}", attributes={ATTR_INFNO: infno, ATTR_MSGID: msgid}
        ) as span:
            response = await self._transact(envelope, infno)
            if isinstance(response, Reply):
                span.set_attribute(ATTR_INFCODE, response.infcode)
                _log_reply(infno, msgid, response, started)
                return Response(response.text, media_type=_JSON)
            return response

    async def _transact(self, envelope: Any, infno: str) -> Reply | Response:
        if self._settings.latency_ms:
            await asyncio.sleep(self._settings.latency_ms / 1000)
        fault = self._faults.take(infno)
        if fault is not None and fault.mode is not FaultMode.UNKNOWN_AFTER_COMMIT:
            return await self._fail(fault)
        reply = await self._platform.answer(envelope)
        if fault is not None:  # the work is committed; the caller waits past its deadline
            await asyncio.sleep(self._hang_s(fault))
        return reply

    async def _fail(self, fault: Fault) -> Response:
        _log.info("fault injected", extra={"fields": {"infno": fault.infno, "mode": fault.mode.value}})
        if fault.mode is FaultMode.TIMEOUT:
            await asyncio.sleep(self._hang_s(fault))
            return JSONResponse({"code": 504, "message": "gateway timeout"}, status_code=504)
        if fault.mode is FaultMode.ERROR:
            return JSONResponse({"code": 503, "message": "service unavailable"}, status_code=503)
        body = {"infcode": -1, "err_msg": "模拟故障：医保平台业务处理失败", "output": None}
        return JSONResponse(body, media_type=_JSON)

    def _hang_s(self, fault: Fault) -> float:
        return fault.hang_s if fault.hang_s is not None else self._settings.hang_s

    async def arm_fault(self, request: Request) -> Response:
        try:
            body = await request.json()
            fault = Fault(str(body["infno"]), FaultMode(body["mode"]), _optional_float(body.get("hang_s")))
            count = int(body.get("count", 1))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault: {exc}"}, status_code=400)
        if not fault.infno or not 1 <= count <= 10_000:
            return JSONResponse({"error": "infno required, count 1..10000"}, status_code=400)
        self._faults.arm(fault, count)
        return JSONResponse({"armed": self._faults.pending()})

    async def clear_faults(self, _request: Request) -> Response:
        self._faults.clear()
        return JSONResponse({"armed": {}})

    async def expire_sign_ins(self, _request: Request) -> Response:
        await self._platform.expire_sign_ins()
        return JSONResponse({"expired": True})

    async def settlements(self, _request: Request) -> Response:
        return JSONResponse(await self._platform.settlement_book())

    async def fee_batches(self, _request: Request) -> Response:
        return JSONResponse(await self._platform.fee_batch_book())

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "nhsa-sim", "armed_faults": self._faults.pending()})


def build_app(platform: NhsaPlatform, settings: NhsaSimSettings, faults: FaultBook | None = None) -> ASGIApp:
    """The Starlette app wrapped in OpenTelemetry middleware, so a caller's traceparent continues."""
    simulator = NhsaSimulator(platform, settings, faults or FaultBook())
    routes = [
        Route(CALL_SERVICE_PATH, simulator.call_service, methods=["POST"]),
        Route("/sim/faults", simulator.arm_fault, methods=["POST"]),
        Route("/sim/faults", simulator.clear_faults, methods=["DELETE"]),
        Route("/sim/sign-ins/expire", simulator.expire_sign_ins, methods=["POST"]),
        Route("/sim/settlements", simulator.settlements, methods=["GET"]),
        Route("/sim/fee-batches", simulator.fee_batches, methods=["GET"]),
        Route("/sim/health", simulator.health, methods=["GET"]),
    ]
    return OpenTelemetryMiddleware(
        Starlette(routes=routes), excluded_urls="sim/health", exclude_spans=["receive", "send"]
    )


def _parsed(body: bytes) -> Any:
    try:
        return loads(body)
    except ValueError:
        return None


def _header_fields(envelope: Any) -> tuple[str, str]:
    if not isinstance(envelope, dict):
        return "", ""
    return str(envelope.get("infno") or ""), str(envelope.get("msgid") or "")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _log_reply(infno: str, msgid: str, reply: Reply, started: float) -> None:
    """Every transaction at DEBUG, not INFO: a formatted record per message is CPU spent on every
    call under load, and the platform's own logs and the traces already record each exchange."""
    if not _log.isEnabledFor(logging.DEBUG):
        return
    fields = {
        "infno": infno,
        "msgid": msgid,
        "infcode": reply.infcode,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if reply.err_msg:
        fields["err_msg"] = reply.err_msg
    _log.debug("nhsa transaction", extra={"fields": fields})
