"""HTTP face of the simulator: the WeChat Pay API v3 routes plus test controls under /sim.

Every /v3 request must carry a valid WECHATPAY2-SHA256-RSA2048 Authorization (401 SIGN_ERROR
otherwise); every /v3 JSON answer, errors and 204 included, is signed with the platform key. The
bill file itself is not signed, as on the real gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.wechatpay import faults as fault_rules
from infra.simulators.wechatpay.bill import render_all_bill
from infra.simulators.wechatpay.codepay import USERPAYING_MESSAGE
from infra.simulators.wechatpay.gateway import BALANCE_TOO_LOW, RefundPlan, WechatError, param_error
from infra.simulators.wechatpay.notifier import Notice
from infra.simulators.wechatpay.shapes import placed_json, refund_json, transaction_json
from infra.simulators.wechatpay.signing import SignatureRefused
from infra.simulators.wechatpay.simulator import WechatPaySimulator
from infra.simulators.wechatpay.store import SimOrder

Payload = dict[str, object]
Answer = tuple[int, Payload | None]
Action = Callable[[Request, Payload], Answer]
_log = logging.getLogger("wechatpay_sim.api")


class WechatPayApi:
    def __init__(self, sim: WechatPaySimulator) -> None:
        self.sim = sim

    async def serve(self, request: Request, operation: str | None, action: Action) -> Response:
        """Verify, apply any armed request fault, run the action, sign the answer."""
        raw = await request.body()
        refusal = self._refusal(request, raw)
        if refusal is not None:
            return refusal
        fault = self.sim.faults.take({operation}, fault_rules.REQUEST_MODES) if operation else None
        if fault is not None and fault.mode == "lost":  # nothing done; the answer comes too late
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.mode in {"lost", "http_500"}:
            return self.signed(500, {"code": "SYSTEM_ERROR", "message": "系统错误"})
        if fault is not None and fault.mode == "frequency_limited":
            return self.signed(429, {"code": "FREQUENCY_LIMITED", "message": "频率超限"})
        response = self._answer(request, raw, action)
        if fault is not None and fault.mode == "timeout":  # done, but the answer comes too late
            await asyncio.sleep(fault.delay_s)
        return response

    def _refusal(self, request: Request, raw: bytes) -> Response | None:
        try:
            authorization = request.headers.get("authorization")
            self.sim.verifier.verify(request.method, _signed_target(request), raw, authorization)
        except SignatureRefused as exc:
            return self.signed(401, {"code": "SIGN_ERROR", "message": f"签名错误: {exc}"})
        return None

    def _answer(self, request: Request, raw: bytes, action: Action) -> Response:
        try:
            status, payload = action(request, _json_object(raw))
        except WechatError as exc:
            status, payload = exc.status, {"code": exc.code, "message": exc.message}
        _log.info("wechatpay api", extra={"fields": {"path": request.url.path, "status": status}})
        return self.signed(status, payload)

    def signed(self, status: int, payload: Payload | None) -> Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = self.sim.signer.headers_for(body)
        media_type = None if payload is None else "application/json; charset=utf-8"
        return Response(body, status_code=status, headers=headers, media_type=media_type)

    # --- /v3 actions: synchronous, so each is atomic in the event loop ---------------------------

    def place(self, trade_type: str) -> Action:
        def action(request: Request, body: Payload) -> Answer:
            order = self.sim.gateway.place_order(trade_type, body, request.headers.get("traceparent"))
            return 200, placed_json(order)

        return action

    def codepay(self, request: Request, body: Payload) -> Answer:
        """200 with the transaction when the phone paid at once; 202 USERPAYING while the patient
        enters the password (the merchant queries, then reverses if it never ends)."""
        fault = self.sim.faults.take({"codepay"}, fault_rules.CODEPAY_PATIENT_MODES)
        patient = None if fault is None else (fault.mode, fault.delay_s)
        order = self.sim.codepay.pay(body, request.headers.get("traceparent"), patient)
        order = self.sim.gateway.order(order.out_trade_no)  # as the patient left it by now
        if order.trade_state == "USERPAYING":
            return 202, {"code": "USERPAYING", "message": USERPAYING_MESSAGE}
        if order.trade_state in ("SUCCESS", "REFUND"):
            return 200, transaction_json(order)
        raise WechatError(400, "INVALID_REQUEST", f"订单状态为{order.trade_state}")

    def reverse(self, request: Request, body: Payload) -> Answer:
        out_trade_no = request.path_params["out_trade_no"]
        self.sim.codepay.reverse(out_trade_no, body, self.sim.gateway.order(out_trade_no))
        return 200, {
            "appid": self.sim.merchant.appid,
            "mchid": self.sim.merchant.mchid,
            "out_trade_no": out_trade_no,
        }

    def query_by_out_trade_no(self, request: Request, _: Payload) -> Answer:
        _check_mchid_param(request, self.sim.merchant.mchid)
        return 200, transaction_json(self.sim.gateway.order(request.path_params["out_trade_no"]))

    def query_by_transaction_id(self, request: Request, _: Payload) -> Answer:
        _check_mchid_param(request, self.sim.merchant.mchid)
        order = self.sim.gateway.order_by_transaction_id(request.path_params["transaction_id"])
        return 200, transaction_json(order)

    def close(self, request: Request, body: Payload) -> Answer:
        self.sim.gateway.close(request.path_params["out_trade_no"], body)
        return 204, None

    def refund(self, request: Request, body: Payload) -> Answer:
        """PROCESSING (or SUCCESS) now; the refund desk finishes it and sends REFUND.*."""
        traceparent = request.headers.get("traceparent")
        refund, order, created = self.sim.gateway.refund(body, traceparent, self._refund_plan)
        if created:
            self.sim.refund_desk.accepted(refund, order)
        return 200, refund_json(refund, order)

    def _refund_plan(self) -> RefundPlan:
        if self.sim.faults.take({"refund"}, {fault_rules.NOT_ENOUGH}) is not None:
            raise WechatError(403, "NOT_ENOUGH", BALANCE_TOO_LOW)
        fault = self.sim.faults.take({"refund"}, fault_rules.REFUND_OUTCOME_MODES)
        return self.sim.refund_desk.plan(fault)

    def query_refund(self, request: Request, _: Payload) -> Answer:
        refund, order = self.sim.gateway.refund_record(request.path_params["out_refund_no"])
        return 200, refund_json(refund, order)

    def reroute_refund(self, request: Request, body: Payload) -> Answer:
        """apply-abnormal-refund: what a person does for an ABNORMAL refund."""
        refund_id = request.path_params["refund_id"]
        plan = self.sim.refund_desk.rerouted_plan()
        refund, order = self.sim.gateway.reroute_abnormal_refund(refund_id, body, plan)
        self.sim.refund_desk.accepted(refund, order)
        return 200, refund_json(refund, order)

    def trade_bill(self, request: Request, _: Payload) -> Answer:
        bill_date, tar_type = _bill_request(request)
        payments, refunds = self.sim.gateway.bill_day(bill_date)
        if not payments and not refunds:
            raise WechatError(400, "NO_STATEMENT_EXIST", "账单不存在")
        token, sha1 = self.sim.bills.issue(render_all_bill(payments, refunds), tar_type)
        # The SDK strips its gateway prefix from download_url, so the URL must start with our base.
        download_url = f"{str(request.base_url).rstrip('/')}/v3/billdownload/file?token={token}"
        return 200, {"hash_type": "SHA1", "hash_value": sha1, "download_url": download_url}

    async def download_bill(self, request: Request) -> Response:
        refusal = self._refusal(request, await request.body())
        if refusal is not None:
            return refusal
        content = self.sim.bills.fetch(request.query_params.get("token", ""))
        if content is None:
            return self.signed(404, {"code": "RESOURCE_NOT_EXISTS", "message": "下载链接已失效"})
        return Response(content, media_type="application/octet-stream")

    # --- /sim: test controls, no signature ---------------------------------------------------------

    async def patient_pays(self, request: Request) -> Response:
        """ "The patient scans and pays": the order becomes SUCCESS and the notification goes out."""
        try:
            body = _json_object(await request.body())
            out_trade_no = str(body.get("out_trade_no", ""))
            order, newly_paid = self.sim.gateway.patient_pays(out_trade_no, self._late_success)
        except WechatError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        if newly_paid and order.notify_url:  # code payments have no notify_url
            self.sim.notifier.send(_payment_notice(order), "pay_notify")
        return JSONResponse(transaction_json(order))

    async def patient_cancels(self, request: Request) -> Response:
        """Test control: the patient closes the password prompt of a USERPAYING code payment."""
        try:
            out_trade_no = str(_json_object(await request.body()).get("out_trade_no", ""))
            order = self.sim.codepay.cancel(self.sim.gateway.order(out_trade_no))
        except WechatError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        return JSONResponse(transaction_json(order))

    async def finish_refund(self, request: Request) -> Response:
        """Test control: a PROCESSING refund reaches its planned outcome now (and notifies)."""
        try:
            out_refund_no = str(_json_object(await request.body()).get("out_refund_no", ""))
            refund, _ = self.sim.gateway.refund_record(out_refund_no)
        except WechatError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        finished = self.sim.refund_desk.finish_now(out_refund_no)
        if finished is None:
            message = f"refund is {refund.status}, not PROCESSING"
            return JSONResponse({"code": "INVALID_REQUEST", "message": message}, status_code=409)
        return JSONResponse(refund_json(*finished))

    def _late_success(self) -> bool:
        operations = {"close", "pay_notify"}
        return self.sim.faults.take(operations, {fault_rules.LATE_SUCCESS}) is not None

    async def arm_fault(self, request: Request) -> Response:
        try:
            body = _json_object(await request.body())
        except WechatError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        operation, mode = str(body.get("operation", "")), str(body.get("mode", ""))
        count, delay_s = body.get("count", 1), body.get("delay_s", self._default_delay_s(mode))
        if not isinstance(count, int) or not isinstance(delay_s, (int, float)):
            return JSONResponse({"code": "PARAM_ERROR", "message": "count and delay_s are numbers"}, 400)
        problem = fault_rules.validate(operation, mode, count, float(delay_s))
        if problem is not None:
            return JSONResponse({"code": "PARAM_ERROR", "message": problem}, status_code=400)
        self.sim.faults.arm(fault_rules.Fault(operation, mode, count, float(delay_s)))
        return JSONResponse(self._faults_json(), status_code=201)

    def _default_delay_s(self, mode: str) -> float:
        if mode in fault_rules.REFUND_OUTCOME_MODES:  # a refund outcome comes after the usual delay
            return self.sim.refund_desk.delay_s
        return fault_rules.DEFAULT_DELAY_S

    async def list_faults(self, _: Request) -> Response:
        return JSONResponse(self._faults_json())

    async def clear_faults(self, _: Request) -> Response:
        self.sim.faults.clear()
        return Response(status_code=204)

    async def deliveries(self, request: Request) -> Response:
        """Every delivery attempt of the order's notifications (or of one refund's), in order."""
        params = request.query_params
        attempts = self.sim.store.deliveries(params.get("out_trade_no", ""), params.get("out_refund_no"))
        return JSONResponse(
            [
                {
                    "event_id": a.event_id,
                    "event_type": a.event_type,
                    "delivery": a.delivery,
                    "attempt": a.attempt,
                    "status_code": a.status_code,
                    "acknowledged": a.acknowledged,
                    "error": a.error,
                    "out_refund_no": a.out_refund_no,
                    "sent_at": a.sent_at.isoformat(),
                }
                for a in attempts
            ]
        )

    async def transactions(self, _: Request) -> Response:
        """Every transaction and refund the gateway holds (for tests and operators)."""
        refunds: dict[str, list[dict[str, object]]] = {}
        for refund in self.sim.store.all_refunds():
            refunds.setdefault(refund.out_trade_no, []).append(
                {
                    "out_refund_no": refund.out_refund_no,
                    "refund_fen": refund.refund_fen,
                    "status": refund.status,
                }
            )
        return JSONResponse(
            [
                {
                    "out_trade_no": order.out_trade_no,
                    "trade_state": order.trade_state,
                    "total_fen": order.total_fen,
                    "refunds": refunds.get(order.out_trade_no, []),
                }
                for order in self.sim.store.all_orders()
            ]
        )

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "SERVING", "mchid": self.sim.merchant.mchid})

    def _faults_json(self) -> list[dict[str, object]]:
        return [
            {"operation": f.operation, "mode": f.mode, "remaining": f.remaining, "delay_s": f.delay_s}
            for f in self.sim.faults.armed()
        ]


def _payment_notice(order: SimOrder) -> Notice:
    return Notice(
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        transaction_json(order),
        order.notify_url,
        order.out_trade_no,
        None,
        order.traceparent,
    )


def _signed_target(request: Request) -> str:
    """PATH?QUERY exactly as sent on the wire: the signature covers the raw bytes."""
    path: bytes = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
    query: bytes = request.scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("utf-8")


def _json_object(raw: bytes) -> Payload:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise param_error("请求体不是合法的 JSON") from exc
    if not isinstance(value, dict):
        raise param_error("请求体必须是 JSON 对象")
    return value


def _check_mchid_param(request: Request, mchid: str) -> None:
    if request.query_params.get("mchid") != mchid:
        raise param_error("mchid 与请求签名的商户号不一致")


def _bill_request(request: Request) -> tuple[date, str | None]:
    params = request.query_params
    if params.get("bill_type", "ALL") != "ALL":
        raise param_error("模拟器只提供 bill_type=ALL 的交易账单")
    tar_type = params.get("tar_type") or None
    if tar_type not in (None, "GZIP"):
        raise param_error("tar_type 只能为 GZIP")
    try:
        return date.fromisoformat(params.get("bill_date", "")), tar_type
    except ValueError as exc:
        raise param_error("bill_date 格式为 yyyy-MM-dd") from exc


def create_app(sim: WechatPaySimulator) -> Starlette:
    api = WechatPayApi(sim)

    def route(path: str, operation: str | None, action: Action, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return await api.serve(request, operation, action)

        return Route(path, endpoint, methods=[method])

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    transactions, refunds = "/v3/pay/transactions", "/v3/refund/domestic/refunds"
    routes = [
        route(f"{transactions}/native", "place_order", api.place("NATIVE"), "POST"),
        route(f"{transactions}/jsapi", "place_order", api.place("JSAPI"), "POST"),
        route(f"{transactions}/codepay", "codepay", api.codepay, "POST"),
        route(f"{transactions}/out-trade-no/{{out_trade_no}}/reverse", "reverse", api.reverse, "POST"),
        route(f"{transactions}/out-trade-no/{{out_trade_no}}", "query", api.query_by_out_trade_no, "GET"),
        route(f"{transactions}/id/{{transaction_id}}", "query", api.query_by_transaction_id, "GET"),
        route(f"{transactions}/out-trade-no/{{out_trade_no}}/close", "close", api.close, "POST"),
        route("/v3/refund/domestic/refunds", "refund", api.refund, "POST"),
        route("/v3/refund/domestic/refunds/{out_refund_no}", "query", api.query_refund, "GET"),
        route(f"{refunds}/{{refund_id}}/apply-abnormal-refund", "refund", api.reroute_refund, "POST"),
        route("/v3/bill/tradebill", "trade_bill", api.trade_bill, "GET"),
        Route("/v3/billdownload/file", api.download_bill, methods=["GET"]),
        Route("/sim/pay", api.patient_pays, methods=["POST"]),
        Route("/sim/refunds/finish", api.finish_refund, methods=["POST"]),
        Route("/sim/codepay/cancel", api.patient_cancels, methods=["POST"]),
        Route("/sim/faults", api.arm_fault, methods=["POST"]),
        Route("/sim/faults", api.list_faults, methods=["GET"]),
        Route("/sim/faults", api.clear_faults, methods=["DELETE"]),
        Route("/sim/notifications", api.deliveries, methods=["GET"]),
        Route("/sim/transactions", api.transactions, methods=["GET"]),
        Route("/sim/health", api.health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def build_asgi_app(sim: WechatPaySimulator) -> ASGIApp:
    """The app wrapped in OpenTelemetry, so the caller's traceparent continues the trace (one
    server span per request, without the per-message receive/send spans)."""
    return OpenTelemetryMiddleware(create_app(sim), exclude_spans=["receive", "send"])
