"""Round trips counted by the process itself, exposed for Prometheus.

Every process of the mesh counts what it does on the wire: SQL statements and transactions (at
the SQLAlchemy dialect's calls into the driver), connections taken from the pool, gRPC calls
served and made (the server's call guard and a client interceptor), and HTTP requests made (at
httpx's transport) and served (an ASGI middleware). Each count carries the *origin* of the work: the
gRPC method or HTTP route being served when it happened (work a call spawns keeps its origin), or
`background` for the process's own loops (relay, janitor, feeds, heartbeats). So one settlement's
statements can be split by the RPC that caused them, exactly, while the process is busy with
other things.

Counting is on the hot path whose CPU the bench measures, so an event is one dict increment on the
event loop's thread (well under 1 µs; the client interceptor, ~20 µs a call, is the dearest part);
the Prometheus families are built only when scraped
(`MEDPAY_<SERVICE>_METRICS_PORT`, served by prometheus_client's own thread, beside its standard
process_* metrics).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

import grpc
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.prepared import STATEMENT_COUNTER

BACKGROUND = "background"
# Statement verbs counted by name; anything else is OTHER. BEGIN/COMMIT/ROLLBACK sent as text
# (SQLite's BEGIN IMMEDIATE) are transactions, counted as such, not statements.
_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"})
_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})

# What the process is serving right now: a gRPC method or an HTTP route; BACKGROUND otherwise.
origin: contextvars.ContextVar[str] = contextvars.ContextVar("medpay_origin", default=BACKGROUND)


class Tally:
    """Counts by label values. Increments happen on the event loop's thread; the scrape thread
    reads a copy (a plain dict copy is atomic under the GIL)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, key: tuple[str, ...]) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.counts.copy().items():
            family.add_metric(key, value)
        return family


SQL_STATEMENTS = Tally("medpay_sql_statements", "SQL statements sent", ("service", "verb", "origin"))
SQL_TRANSACTIONS = Tally("medpay_sql_transactions", "SQL transactions begun", ("service", "origin"))
SQL_CHECKOUTS = Tally("medpay_sql_connection_checkouts", "Connections taken from the pool", ("service",))
SQL_CONNECTS = Tally("medpay_sql_connections_opened", "Database connections opened", ("service",))
GRPC_SERVED = Tally("medpay_grpc_server_calls", "gRPC calls served", ("method", "outcome"))
GRPC_MADE = Tally("medpay_grpc_client_calls", "gRPC calls made", ("method", "origin"))
HTTP_MADE = Tally("medpay_http_client_requests", "HTTP requests made", ("host", "origin"))
HTTP_SERVED = Tally("medpay_http_server_requests", "HTTP requests served", ("route", "status"))
TALLIES = (
    SQL_STATEMENTS, SQL_TRANSACTIONS, SQL_CHECKOUTS, SQL_CONNECTS,
    GRPC_SERVED, GRPC_MADE, HTTP_MADE, HTTP_SERVED,
)  # fmt: skip


class _TallyCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        for tally in TALLIES:
            yield tally.family()


_install_lock = threading.Lock()
_installed: set[str] = set()


def _once(what: str) -> bool:
    with _install_lock:
        if what in _installed:
            return False
        _installed.add(what)
        return True


def serve_metrics(address: str) -> Callable[[], None]:
    """Serve /metrics on `host:port` from a thread of its own; returns the stop function."""
    if _once("collector"):
        REGISTRY.register(_TallyCollector())
    host, port = address.rsplit(":", 1)
    server, thread = start_http_server(int(port), addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


# ---- SQL ------------------------------------------------------------------------------------------


def count_sql(engine: AsyncEngine, service: str) -> None:
    """Count the engine's statements and transactions, and its pool's checkouts.

    At the dialect's do_execute* / do_begin (the calls that reach the driver), not through engine
    events: an engine with event listeners takes SQLAlchemy's slower execution path, which costs
    more than the counting (~5 µs a statement on this project's machine)."""
    dialect = engine.sync_engine.dialect
    verbs: dict[str, str] = {}

    def statement(text: str) -> None:
        # Every verb counted fits in the first 12 characters, so they decide it (cached).
        head = text.lstrip()[:12]
        verb = verbs.get(head)
        if verb is None:
            word = head.split(None, 1)[0].upper() if head else ""
            verb = word if word in _VERBS or word in _TRANSACTION_CONTROL else "OTHER"
            verbs[head] = verb
        if verb not in _TRANSACTION_CONTROL:
            SQL_STATEMENTS.inc((service, verb, origin.get()))

    do_execute, do_executemany = dialect.do_execute, dialect.do_executemany
    do_execute_no_params, do_begin = dialect.do_execute_no_params, dialect.do_begin

    def counted_execute(cursor: Any, text: str, parameters: Any, context: Any = None) -> None:
        statement(text)
        do_execute(cursor, text, parameters, context)

    def counted_executemany(cursor: Any, text: str, parameters: Any, context: Any = None) -> None:
        statement(text)
        do_executemany(cursor, text, parameters, context)

    def counted_execute_no_params(cursor: Any, text: str, context: Any = None) -> None:
        statement(text)
        do_execute_no_params(cursor, text, context)

    def counted_begin(dbapi_connection: Any) -> None:
        # An AUTOCOMMIT connection (asyncpg adapter) sends no BEGIN: no transaction to count.
        if not getattr(dbapi_connection, "autocommit", False):
            SQL_TRANSACTIONS.inc((service, origin.get()))
        do_begin(dbapi_connection)

    # On this engine's dialect instance only: other engines of the process count for themselves.
    # Statements run straight on the driver (services.runtime.prepared) are counted by the same hook.
    setattr(dialect, STATEMENT_COUNTER, statement)
    for name, counted in (
        ("do_execute", counted_execute),
        ("do_executemany", counted_executemany),
        ("do_execute_no_params", counted_execute_no_params),
        ("do_begin", counted_begin),
    ):
        setattr(dialect, name, counted)

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checkout(*_args: Any) -> None:
        SQL_CHECKOUTS.inc((service,))

    @event.listens_for(engine.sync_engine.pool, "connect")
    def _connect(*_args: Any) -> None:
        SQL_CONNECTS.inc((service,))


# ---- gRPC -----------------------------------------------------------------------------------------


def grpc_served(method: str, outcome: str) -> None:
    GRPC_SERVED.inc((method, outcome))


def serving(method: str) -> contextvars.Token[str]:
    """The current task (and what it spawns) works for `method` until `done_serving`."""
    return origin.set(method)


def done_serving(token: contextvars.Token[str]) -> None:
    # A streaming handler's generator may be closed from another context: nothing to undo there.
    with contextlib.suppress(ValueError):
        origin.reset(token)


class CountingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Counts every call a channel makes, by method and origin."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        GRPC_MADE.inc((_method_name(client_call_details.method), origin.get()))
        return await continuation(client_call_details, request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        GRPC_MADE.inc((_method_name(client_call_details.method), origin.get()))
        return await continuation(client_call_details, request)


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


# ---- HTTP -----------------------------------------------------------------------------------------


def http_request_made(host: str) -> None:
    """For an HTTP client other than httpx: count one request to `host` (host:port)."""
    HTTP_MADE.inc((host, origin.get()))


def count_httpx_requests() -> None:
    """Count every request any httpx.AsyncClient of this process sends (the channel SDK's and the
    insurer transport's), by host:port, at the transport, so retries and redirects count too."""
    import httpx

    if not _once("httpx"):
        return
    send = httpx.AsyncHTTPTransport.handle_async_request

    async def handle_async_request(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        HTTP_MADE.inc((request.url.netloc.decode("ascii"), origin.get()))
        return await send(self, request)

    httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class CountingAsgi:
    """ASGI middleware: counts HTTP requests served by route (a path of `routes`, else `other`)
    and status, and marks the work they lead to with their route as origin."""

    def __init__(self, app: Asgi, routes: Iterable[str]) -> None:
        self._app = app
        self._routes = {path: f"http {path}" for path in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route = self._routes.get(scope.get("path", ""), "other")
        token = origin.set(route)
        status = "none"

        async def counted_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, counted_send)
        finally:
            HTTP_SERVED.inc((route, status))
            origin.reset(token)
