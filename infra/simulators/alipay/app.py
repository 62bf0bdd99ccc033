"""HTTP face of the simulator: the open-platform gateway (/gateway.do) plus test controls under /sim.

A gateway request is the SDK's: GET (or form POST) of the common parameters with biz_content as a
JSON string, RSA2-signed with the app's private key. The answer is
`{"<method>_response":{...},"sign":"..."}` where the signature covers the exact bytes of the inner
object as written, so the SDK's brace-matching finds and verifies what we signed. Errors carry the
real codes: 40004 + ACQ.* (business), 40002 + isv.* (arguments, signature), and an unsigned
`error_response` for a method the gateway does not know.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime, time
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.alipay import faults as fault_rules
from infra.simulators.alipay.bill import render_trade_bill
from infra.simulators.alipay.gateway import BEIJING, AlipayError, Biz, Effect, invalid, missing
from infra.simulators.alipay.notices import payment_notice, refund_notice
from infra.simulators.alipay.signing import SignatureRefused
from infra.simulators.alipay.simulator import AlipaySimulator

Params = dict[str, str]
Method = Callable[[Params, Biz, str | None], tuple[Biz, Effect]]
_log = logging.getLogger("alipay_sim.api")
JSON_UTF8 = "application/json;charset=utf-8"


class AlipayApi:
    def __init__(self, sim: AlipaySimulator) -> None:
        self.sim = sim
        self.methods: dict[str, tuple[str, Method]] = {
            "alipay.trade.precreate": ("precreate", self.precreate),
            "alipay.trade.pay": ("pay", self.pay),
            "alipay.trade.query": ("query", lambda p, biz, t: (sim.gateway.query(biz), Effect())),
            "alipay.trade.close": ("close", lambda p, biz, t: (sim.gateway.close(biz), Effect())),
            "alipay.trade.cancel": ("cancel", lambda p, biz, t: (sim.gateway.cancel(biz), Effect())),
            "alipay.trade.refund": ("refund", self.refund),
            "alipay.trade.fastpay.refund.query": (
                "refund_query",
                lambda p, biz, t: (sim.gateway.refund_query(biz), Effect()),
            ),
            "alipay.data.dataservice.bill.downloadurl.query": ("bill", self.bill_url),
        }
        self._base_url = ""

    async def gateway(self, request: Request) -> Response:
        params = await _params(request)
        self._base_url = str(request.base_url).rstrip("/")
        method = params.get("method", "")
        if method not in self.methods:
            error = {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-method",
                "sub_msg": "不存在的方法名",
            }
            return Response(json.dumps({"error_response": error}, ensure_ascii=False), media_type=JSON_UTF8)
        operation, action = self.methods[method]
        response_key = method.replace(".", "_") + "_response"
        try:
            self.sim.verifier.verify(params)
        except SignatureRefused as exc:
            refused = {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": str(exc),
                "sub_msg": "验签出错",
            }
            return self.signed(response_key, refused)
        fault = self.sim.faults.take({operation}, fault_rules.REQUEST_MODES)
        if fault is not None and fault.mode == "lost":
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.mode in {"lost", "http_500"}:
            return Response(
                "<html><body>502 Bad Gateway</body></html>", status_code=500, media_type="text/html"
            )
        response = self._answer(params, response_key, action, request.headers.get("traceparent"))
        if fault is not None and fault.mode == "timeout":
            await asyncio.sleep(fault.delay_s)
        return response

    def _answer(self, params: Params, response_key: str, action: Method, traceparent: str | None) -> Response:
        try:
            answer, effect = action(params, _biz(params), traceparent)
        except AlipayError as exc:
            answer, effect = exc.answer(), Effect()
        self._notify(effect)
        _log.info(
            "alipay api", extra={"fields": {"method": params.get("method"), "code": answer.get("code")}}
        )
        return self.signed(response_key, answer)

    def signed(self, response_key: str, answer: Biz) -> Response:
        inner = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        sign = self.sim.signer.sign(inner.encode("utf-8"))
        body = f'{{"{response_key}":{inner},"sign":"{sign}"}}'
        return Response(body.encode("utf-8"), media_type=JSON_UTF8)

    def _notify(self, effect: Effect) -> None:
        if effect.paid is not None:
            self.sim.notifier.send(payment_notice(effect.paid, self.sim.seller_id), "pay_notify")
        if effect.refunded is not None:
            trade, refund = effect.refunded
            refunded = sum(
                r.refund_fen for r in self.sim.store.refunds_of(trade.out_trade_no) if r.gmt_refund_pay
            )
            notice = refund_notice(trade, refund, refunded, self.sim.seller_id)
            self.sim.notifier.send(notice, "refund_notify")

    # --- the methods that need more than the gateway rules -------------------------------------

    def precreate(self, params: Params, biz: Biz, traceparent: str | None) -> tuple[Biz, Effect]:
        return self.sim.gateway.precreate(biz, params.get("notify_url"), traceparent), Effect()

    def pay(self, params: Params, biz: Biz, traceparent: str | None) -> tuple[Biz, Effect]:
        user_paying = self.sim.faults.take({"pay"}, fault_rules.OUTCOME_MODES["pay"]) is not None
        return self.sim.gateway.pay(biz, params.get("notify_url"), traceparent, user_paying)

    def refund(self, _: Params, biz: Biz, traceparent: str | None) -> tuple[Biz, Effect]:
        # Only a refund the gateway has not seen uses up a `processing` fault, not a replay.
        trade_known = self.sim.store.trade(str(biz.get("out_trade_no", ""))) is not None
        key = str(biz.get("out_request_no") or biz.get("out_trade_no", ""))
        fresh = trade_known and self.sim.store.refund(str(biz.get("out_trade_no")), key) is None
        if fresh and self.sim.faults.take({"refund"}, {"not_enough"}) is not None:
            raise AlipayError("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足")
        processing = fresh and self.sim.faults.peek({"refund"}, {"processing"})
        answer, effect = self.sim.gateway.refund(biz, traceparent, processing)
        if processing and answer.get("code") == "10000":
            self.sim.faults.take({"refund"}, {"processing"})
        return answer, effect

    def bill_url(self, _: Params, biz: Biz, __: str | None) -> tuple[Biz, Effect]:
        if biz.get("bill_type") != "trade":
            raise invalid("模拟器只提供 bill_type=trade 的交易收单账单")
        if not biz.get("bill_date"):
            raise missing("bill_date")
        try:
            bill_date = date.fromisoformat(str(biz["bill_date"]))
        except ValueError:
            raise invalid("bill_date 格式为 yyyy-MM-dd（模拟器只提供日账单）") from None
        payments, refunds = self.sim.gateway.bill_day(datetime.combine(bill_date, time(), BEIJING))
        if not payments and not refunds:
            raise AlipayError("isp.bill_not_exist", "账单不存在")
        content = render_trade_bill(self.sim.seller_id, bill_date, payments, refunds, self.sim.config.clock())
        token = self.sim.bills.issue(content)
        query = f"bizType=trade&fileType=csv.zip&bizDates={bill_date:%Y%m%d}&token={token}"
        url = f"{self._base_url}/downloadBillFile.resource?{query}"
        return {"code": "10000", "msg": "Success", "bill_download_url": url}, Effect()

    async def download_bill(self, request: Request) -> Response:
        content = self.sim.bills.fetch(request.query_params.get("token", ""))
        if content is None:
            return Response("链接已失效", status_code=404, media_type="text/plain;charset=utf-8")
        return Response(content, media_type="application/oct-stream")

    # --- /sim: test controls, no signature --------------------------------------------------------

    async def patient_pays(self, request: Request) -> Response:
        """The patient scans and pays (or confirms a bar-code payment); TRADE_SUCCESS is notified."""
        body = await _json_body(request)
        late = self.sim.faults.take({"close", "pay_notify"}, {fault_rules.LATE_SUCCESS}) is not None
        try:
            trade, newly_paid = self.sim.gateway.patient_pays(str(body.get("out_trade_no", "")), late)
        except AlipayError as exc:
            status = 404 if exc.sub_code == "ACQ.TRADE_NOT_EXIST" else 409
            return JSONResponse(exc.answer(), status_code=status)
        if newly_paid:
            self.sim.notifier.send(payment_notice(trade, self.sim.seller_id), "pay_notify")
        return JSONResponse(
            {
                "out_trade_no": trade.out_trade_no,
                "trade_no": trade.trade_no,
                "trade_status": trade.trade_status,
            }
        )

    async def finish_refund(self, request: Request) -> Response:
        body = await _json_body(request)
        out_trade_no, out_request_no = str(body.get("out_trade_no", "")), str(body.get("out_request_no", ""))
        finished = self.sim.gateway.finish_refund(out_trade_no, out_request_no)
        if finished is None:
            return JSONResponse(
                {"code": "INVALID_REQUEST", "message": "no such refund in progress"}, status_code=409
            )
        self._notify(Effect(refunded=finished))
        trade, refund = finished
        answer = {"out_trade_no": trade.out_trade_no, "out_request_no": refund.out_request_no}
        return JSONResponse({**answer, "refund_status": "REFUND_SUCCESS"})

    async def arm_fault(self, request: Request) -> Response:
        body = await _json_body(request)
        operation, mode = str(body.get("operation", "")), str(body.get("mode", ""))
        count, delay_s = body.get("count", 1), body.get("delay_s", fault_rules.DEFAULT_DELAY_S)
        if not isinstance(count, int) or not isinstance(delay_s, (int, float)):
            return JSONResponse({"code": "PARAM_ERROR", "message": "count and delay_s are numbers"}, 400)
        problem = fault_rules.validate(operation, mode, count, float(delay_s))
        if problem is not None:
            return JSONResponse({"code": "PARAM_ERROR", "message": problem}, status_code=400)
        self.sim.faults.arm(fault_rules.Fault(operation, mode, count, float(delay_s)))
        return JSONResponse(self._faults_json(), status_code=201)

    async def list_faults(self, _: Request) -> Response:
        return JSONResponse(self._faults_json())

    async def clear_faults(self, _: Request) -> Response:
        self.sim.faults.clear()
        return Response(status_code=204)

    async def deliveries(self, request: Request) -> Response:
        attempts = self.sim.store.deliveries(request.query_params.get("out_trade_no", ""))
        return JSONResponse(
            [
                {
                    "notify_id": a.notify_id,
                    "out_request_no": a.out_request_no,
                    "delivery": a.delivery,
                    "attempt": a.attempt,
                    "status_code": a.status_code,
                    "answer": a.answer,
                    "acknowledged": a.acknowledged,
                    "error": a.error,
                    "sent_at": a.sent_at.isoformat(),
                }
                for a in attempts
            ]
        )

    async def transactions(self, _: Request) -> Response:
        """Every trade and refund the gateway holds, in Alipay's own states (for tests and
        operators; a precreated QR nobody scanned is not a trade yet, as at the real gateway)."""
        refunds: dict[str, list[dict[str, object]]] = {}
        for refund in self.sim.store.all_refunds():
            refunds.setdefault(refund.out_trade_no, []).append(
                {
                    "out_request_no": refund.out_request_no,
                    "refund_fen": refund.refund_fen,
                    "status": refund.status,
                }
            )
        return JSONResponse(
            [
                {
                    "out_trade_no": trade.out_trade_no,
                    "trade_status": trade.trade_status,
                    "total_fen": trade.total_fen,
                    "refunds": refunds.get(trade.out_trade_no, []),
                }
                for trade in self.sim.store.all_trades()
                if not self.sim.store.is_unscanned(trade.out_trade_no)
            ]
        )

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "SERVING", "app_id": self.sim.app_id})

    def _faults_json(self) -> list[dict[str, object]]:
        return [
            {"operation": f.operation, "mode": f.mode, "remaining": f.remaining, "delay_s": f.delay_s}
            for f in self.sim.faults.armed()
        ]


async def _params(request: Request) -> Params:
    """The common parameters, from the query string (the SDK's GET) and/or a form body."""
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def _biz(params: Params) -> Biz:
    raw = params.get("biz_content")
    if not raw:
        raise missing("biz_content")
    try:
        biz: Any = json.loads(raw)
    except ValueError:
        raise AlipayError(
            "isv.invalid-biz-content", "biz_content 不是合法的 JSON", "40002", "Invalid Arguments"
        ) from None
    if not isinstance(biz, dict):
        raise AlipayError(
            "isv.invalid-biz-content", "biz_content 必须是 JSON 对象", "40002", "Invalid Arguments"
        )
    return biz


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def create_app(sim: AlipaySimulator) -> Starlette:
    api = AlipayApi(sim)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    routes = [
        Route("/gateway.do", api.gateway, methods=["GET", "POST"]),
        Route("/downloadBillFile.resource", api.download_bill, methods=["GET"]),
        Route("/sim/pay", api.patient_pays, methods=["POST"]),
        Route("/sim/refunds/finish", api.finish_refund, methods=["POST"]),
        Route("/sim/faults", api.arm_fault, methods=["POST"]),
        Route("/sim/faults", api.list_faults, methods=["GET"]),
        Route("/sim/faults", api.clear_faults, methods=["DELETE"]),
        Route("/sim/notifications", api.deliveries, methods=["GET"]),
        Route("/sim/transactions", api.transactions, methods=["GET"]),
        Route("/sim/health", api.health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def build_asgi_app(sim: AlipaySimulator) -> ASGIApp:
    """The app wrapped in OpenTelemetry, so the caller's traceparent continues the trace (one
    server span per request, without the per-message receive/send spans)."""
    return OpenTelemetryMiddleware(create_app(sim), exclude_spans=["receive", "send"])
