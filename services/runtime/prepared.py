"""Statements built once for the process, run straight on asyncpg on PostgreSQL.

A settlement runs ~70 SQL statements across the services. SQLAlchemy's per-execution machinery
(an execution context, a greenlet hop into the driver adapter, a cursor result with its metadata)
costs more CPU than asyncpg's own round trip for each of them: on this project's machine a
select by key took ~340 µs through a session or a connection against ~165 µs for the same
statement on the asyncpg connection, and a py-spy profile of the mesh under load put about a third
of payment-core's and insurance-adapter's CPU in SQLAlchemy's frames.

A statement marked with `prepared(...)` (the builders of services.runtime.statements mark theirs)
is compiled by SQLAlchemy once per set of parameter names and then executed by `MedPaySession`
directly on the session's asyncpg connection, inside the same transaction (the driver adapter's
transaction is started first, exactly as its cursor would). Parameters go through the same bind
processors, values through the same result processors, the statement is counted by the metrics
hook, and the driver's errors come out as SQLAlchemy's (IntegrityError, and DBAPIError with
`connection_invalidated` for a lost connection), so repositories and the unit of work see no
difference. What the shortcut cannot do the same way falls back to SQLAlchemy: SQLite, a list of
parameter sets, execution options, expanding (IN) or literal-execute parameters, and column
defaults computed in Python.
"""

from __future__ import annotations

import contextlib
import keyword
import re
from collections import namedtuple
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Result
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause

S = TypeVar("S", bound=ClauseElement)
# The metrics hook a dialect carries (services.runtime.metrics.count_sql): called with each
# statement's text, as the dialect's do_execute would be.
STATEMENT_COUNTER = "medpay_count_statement"

_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")
# What means the connection is gone (SQLAlchemy would say `connection_invalidated`): the
# driver lost it, or the server ended it (class 08, an administrator or a crash shutdown).
_LOST = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    ConnectionError,
    OSError,
)


class _Statement:
    """A statement marked prepared, with its compiled forms by the names of its parameters."""

    __slots__ = ("compiled", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement  # or the form PostgreSQL runs instead (see prepared)
        self.compiled: dict[tuple[str, ...], _Compiled | None] = {}

    def compiled_for(self, dialect: Dialect, names: tuple[str, ...]) -> _Compiled | None:
        try:
            return self.compiled[names]
        except KeyError:
            compiled = _Compiled.of(self.statement, dialect, names)
            self.compiled[names] = compiled
            return compiled


_PREPARED: dict[int, _Statement] = {}


def prepared(statement: S, on_postgres: ClauseElement | None = None) -> S:
    """Mark a statement that lives as long as the process (built once, values as parameters) to
    run straight on the driver. Marking one built per call would only fill memory. `on_postgres`:
    the same query in a form the shortcut can run (an IN list as `= ANY(array)`), kept alive with
    the statement; SQLite and SQLAlchemy's path run `statement` itself."""
    _PREPARED.setdefault(id(statement), _Statement(on_postgres if on_postgres is not None else statement))
    return statement


class _Compiled:
    __slots__ = ("binds", "compiled", "positions", "results", "returns_rows", "row", "sql")

    def __init__(
        self, compiled: SQLCompiler, row: type[tuple[Any, ...]] | None, results: list[Any], text: bool = False
    ) -> None:
        self.sql = compiled.string
        self.compiled = compiled
        self.positions = tuple(compiled.positiontup or ())
        self.binds: Mapping[str, Any] = compiled._bind_processors
        self.row = row
        self.results = results if any(results) else None
        # A textual statement says nothing of its columns: its rows are named by what comes back.
        self.returns_rows = row is not None or text

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]) -> _Compiled | None:
        compiled = statement.compile(dialect=dialect, column_keys=list(names))
        assert isinstance(compiled, SQLCompiler)
        if (
            not compiled.positional
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.insert_prefetch
            or compiled.update_prefetch
        ):
            return None
        columns = compiled._result_columns
        if not columns:
            return cls(compiled, None, [], text=isinstance(statement, TextClause))
        fields = [column.keyname for column in columns]
        if len(set(fields)) != len(fields) or not all(_plain_field(name) for name in fields):
            return None
        results = [column.type._cached_result_processor(dialect, None) for column in columns]
        return cls(compiled, _row_class(tuple(fields)), results)

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        values = self.compiled.construct_params(parameters, escape_names=False)
        binds = self.binds
        return [binds[name](values[name]) if name in binds else values[name] for name in self.positions]

    def rows(self, records: Sequence[asyncpg.Record]) -> list[Any]:
        row = self.row
        if row is None:  # a textual statement's
            if not records:
                return []
            fields = tuple(records[0].keys())
            if not all(_plain_field(name) for name in fields) or len(set(fields)) != len(fields):
                return [tuple(record) for record in records]
            row = _row_class(fields)
        results = self.results
        if results is None:
            return [row._make(record) for record in records]  # type: ignore[attr-defined]
        return [
            row._make(  # type: ignore[attr-defined]
                [
                    value if process is None else process(value)
                    for process, value in zip(results, record, strict=True)
                ]
            )
            for record in records
        ]


def rowcount(status: str | None) -> int:
    """The rows a command status names ("UPDATE 3" -> 3), -1 for one that names none."""
    matched = _ROWCOUNT.match(status or "")
    return int(matched.group(1)) if matched else -1


async def run_script(session: AsyncSession, script: str) -> str:
    """`MedPaySession.run_script` on a session of `session_factory` (PostgreSQL)."""
    if not isinstance(session, MedPaySession):
        raise TypeError("a script runs on a MedPaySession")
    return await session.run_script(script)


def _uniform(params: Any) -> bool:
    """A non-empty list of parameter sets that all name the same parameters, in the same order."""
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        return False
    names = tuple(params[0])
    return all(isinstance(each, dict) and tuple(each) == names for each in params)


def _plain_field(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


_ROW_CLASSES: dict[tuple[str, ...], type[tuple[Any, ...]]] = {}


def _row_class(fields: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """A tuple with the columns as attributes, and `_mapping` as SQLAlchemy's Row has it."""
    known = _ROW_CLASSES.get(fields)
    if known is None:
        base = namedtuple("Row", fields)  # type: ignore[misc]

        class Row(base):
            @cached_property
            def _mapping(self) -> dict[str, Any]:
                return dict(zip(self._fields, self, strict=True))

            def tuple(self) -> tuple[Any, ...]:
                return tuple.__new__(tuple, self)

        known = _ROW_CLASSES[fields] = Row
    return known


class PreparedResult:
    """The part of SQLAlchemy's Result the repositories use, over rows already fetched."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise _multiple()
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> PreparedResult:
        """The first column's values, as the result's rows."""
        return PreparedResult([row[0] for row in self._rows], self.rowcount)


def _multiple() -> Exception:
    from sqlalchemy.exc import MultipleResultsFound

    return MultipleResultsFound("Multiple rows were found when one or none was required")


class MedPaySession(AsyncSession):
    """The sessions of every service: statements marked `prepared` run straight on asyncpg."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind = kwargs.get("bind")
        dialect = getattr(bind, "dialect", None)
        self._driver_dialect: Dialect | None = (
            dialect if getattr(dialect, "driver", "") == "asyncpg" else None
        )
        self._adapted: Any = None
        self._connection: AsyncConnection | None = None

    async def execute(
        self,
        statement: Any,
        params: Any = None,
        *,
        execution_options: Any = None,
        bind_arguments: Any = None,
        **kw: Any,
    ) -> Result[Any]:
        dialect = self._driver_dialect
        marked = _PREPARED.get(id(statement)) if dialect is not None else None
        if (
            marked is None
            or execution_options
            or bind_arguments
            or kw
            or not (params is None or isinstance(params, dict) or _uniform(params))
        ):
            ordinary: Result[Any] = await super().execute(
                statement,
                params,
                execution_options=execution_options or {},
                bind_arguments=bind_arguments,
                **kw,
            )
            return ordinary
        assert dialect is not None
        if isinstance(params, list):
            compiled = marked.compiled_for(dialect, tuple(params[0]))
            if compiled is None or compiled.returns_rows:
                many: Result[Any] = await super().execute(statement, params)
                return many
            return await self._run_many(dialect, compiled, params)  # type: ignore[return-value]
        parameters = params or {}
        compiled = marked.compiled_for(dialect, tuple(parameters))
        if compiled is None:
            uncompiled: Result[Any] = await super().execute(statement, params)
            return uncompiled
        return await self._run(dialect, compiled, parameters)  # type: ignore[return-value]

    async def _run(
        self, dialect: Dialect, compiled: _Compiled, parameters: Mapping[str, Any]
    ) -> PreparedResult:
        arguments = compiled.arguments(parameters)
        async with self._driver(dialect, compiled.sql, arguments) as driver:
            if compiled.returns_rows:
                records = await driver.fetch(compiled.sql, *arguments)
                return PreparedResult(compiled.rows(records), len(records))
            status = await driver.execute(compiled.sql, *arguments)
        return PreparedResult([], rowcount(status))

    async def run_script(self, script: str) -> str:
        """Several statements in one round trip, by PostgreSQL's simple query protocol: they run
        as one transaction of their own unless the session's is open (then inside it). No
        parameters: a script is the process's own constant text. Returns the last one's status
        ("UPDATE 3"); counted as one statement, the round trip it is."""
        dialect = self._driver_dialect
        if dialect is None:
            raise RuntimeError("a script runs on PostgreSQL (asyncpg) only")
        async with self._driver(dialect, script, ()) as driver:
            return str(await driver.execute(script))

    async def _run_many(
        self, dialect: Dialect, compiled: _Compiled, parameter_sets: list[dict[str, Any]]
    ) -> PreparedResult:
        """Every parameter set in one pipelined round trip (asyncpg's executemany): one statement."""
        arguments = [compiled.arguments(parameters) for parameters in parameter_sets]
        async with self._driver(dialect, compiled.sql, arguments) as driver:
            await driver.executemany(compiled.sql, arguments)
        return PreparedResult([], len(arguments))

    @contextlib.asynccontextmanager
    async def _driver(self, dialect: Dialect, sql: str, arguments: Any) -> AsyncIterator[asyncpg.Connection]:
        """The session's asyncpg connection inside its transaction; the driver's errors as
        SQLAlchemy's."""
        adapted = await self._adapted_connection()
        count = getattr(dialect, STATEMENT_COUNTER, None)
        if count is not None:
            count(sql)
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()  # as the adapter's cursor does before a statement
            try:
                yield adapted._connection
            except asyncpg.IntegrityConstraintViolationError as error:
                raise IntegrityError(sql, arguments, error) from error
            except _LOST as error:
                await self._lost()
                raise DBAPIError(sql, arguments, error, connection_invalidated=True) from error
            except asyncpg.PostgresError as error:
                raise DBAPIError(sql, arguments, error) from error

    async def _adapted_connection(self) -> Any:
        if self._adapted is None:
            connection = await self.connection()
            self._connection = connection
            self._adapted = (await connection.get_raw_connection()).dbapi_connection
        return self._adapted

    async def _lost(self) -> None:
        connection, self._connection, self._adapted = self._connection, None, None
        if connection is not None:
            await connection.invalidate()

    def _forget_connection(self) -> None:
        self._adapted = None
        self._connection = None

    async def commit(self) -> None:
        try:
            await super().commit()
        finally:
            self._forget_connection()

    async def rollback(self) -> None:
        try:
            await super().rollback()
        finally:
            self._forget_connection()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._forget_connection()
