"""The channel notification endpoints (POST /notify/wechatpay, POST /notify/alipay), served by uvicorn
inside the service's own process and event loop as a side server of the gRPC host.

The signature is verified first and the endpoint fails closed (401) on anything it cannot trust;
only then is the notification recorded, idempotently, under the order's row lock. The OpenTelemetry
ASGI middleware continues the channel's trace, and the steps the notification leads to run in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping

import uvicorn
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from services.payment_core.adapters.channels.ports import PaymentChannel
from services.payment_core.config import ALIPAY_NOTIFY_PATH, NOTIFY_PATH
from services.payment_core.service_layer.notifications import ChannelNews
from services.runtime.metrics import CountingAsgi

log = logging.getLogger(__name__)


class ChannelNotifications:
    """What the channel's callback does, apart from HTTP: verify, then apply."""

    def __init__(
        self, channel: PaymentChannel, news: ChannelNews, alipay: PaymentChannel | None = None
    ) -> None:
        """`channel` reads /notify/wechatpay; `alipay`, when configured, /notify/alipay."""
        self._channel = channel
        self._news = news
        self._alipay = alipay

    async def receive(
        self, headers: Mapping[str, str], body: bytes, channel: PaymentChannel | None = None
    ) -> tuple[int, dict[str, str] | None]:
        """(HTTP status, JSON body). WeChat Pay wants 2xx with no body for success, and a
        {"code": "FAIL"} body with 4xx/5xx so it sends the notification again."""
        notification = (channel or self._channel).parse_notification(headers, body)
        if notification is None:
            log.warning("channel notification refused: signature not verified")
            return 401, {"code": "FAIL", "message": "signature not verified"}
        try:
            await self._news.apply(notification)
        except Exception:
            log.exception(
                "channel notification %s not applied; the channel will resend", notification.event_id
            )
            return 500, {"code": "FAIL", "message": "not applied; send again"}
        return 204, None

    async def wechatpay(self, request: Request) -> Response:
        status, payload = await self.receive(dict(request.headers), await request.body())
        return JSONResponse(payload, status_code=status) if payload else Response(status_code=status)

    async def alipay(self, request: Request) -> Response:
        """Alipay resends until the body is exactly `success`; anything else (here `fail`, with the
        status saying why) makes it send again."""
        if self._alipay is None:
            return PlainTextResponse("fail", status_code=404)
        status, _ = await self.receive(dict(request.headers), await request.body(), self._alipay)
        return PlainTextResponse("success") if status < 300 else PlainTextResponse("fail", status_code=status)


def notify_app(notifications: ChannelNotifications) -> ASGIApp:
    routes = [
        Route(NOTIFY_PATH, notifications.wechatpay, methods=["POST"]),
        Route(ALIPAY_NOTIFY_PATH, notifications.alipay, methods=["POST"]),
    ]
    # One server span per notification; the per-message "http receive/send" spans say nothing more
    # and cost a span each (the trace tools drop them anyway).
    traced = OpenTelemetryMiddleware(Starlette(routes=routes), exclude_spans=["receive", "send"])
    return CountingAsgi(traced, [NOTIFY_PATH, ALIPAY_NOTIFY_PATH])


class _SharedLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gRPC host owns SIGTERM and stops this server as part of its own drain.
        yield


class NotifyServer:
    """uvicorn in the current event loop: `start` and `stop` are the ServiceHost side-server pair."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_config=None, access_log=False)
        self._server = _SharedLoopServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="notify-server")
        while not self._server.started:
            if self._task.done():
                # uvicorn exits (SystemExit) when it cannot bind: fail the boot with a clear error.
                raise RuntimeError(f"notify endpoint could not start on port {self._server.config.port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
