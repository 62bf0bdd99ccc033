"""Persistence of the insurer's books: one SQLite file, the standard library's `sqlite3`.

`NhsaStore` owns the connection; `InsurerBooks` is the set of queries one transaction may run.
Mutating transactions are serialised by the platform (one writer, as SQLite has anyway), so a
read-compute-write inside one `InsurerBooks` never races with itself.

Why `sqlite3` synchronously, from the event loop: the file is local and in WAL mode, so a
statement takes microseconds, less than handing it to a worker thread (aiosqlite) and far less
than building, caching and compiling it as an SQLAlchemy expression. Over SQLAlchemy and aiosqlite
the simulator spent more CPU per settlement than payment-core itself (~70 ms; ~15 ms after this
change, most of it now HTTP and tracing). The statements here are plain SQL strings written once.
Nothing inside a `books()` block awaits anything that suspends, so one transaction runs to its end
before the event loop serves another request; the store's lock only makes that explicit.

Rows are named tuples of the table's columns (`row.psn_no`, `row._asdict()`), with the columns
that SQLAlchemy used to convert (dates, booleans) converted the same way, so the file written by
earlier versions of the simulator reads back exactly as before. The schema is still created from
`schema.py`'s table definitions, once, at open.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine

from infra.simulators.nhsa import schema
from infra.simulators.nhsa.policy import Accumulators
from infra.simulators.population import InsuredPerson, insured_people
from services.runtime.money import Money

# A stored row: a named tuple of its table's columns (or of a query's), read by attribute.
AnyRow = Any


class NhsaStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, population: int) -> NhsaStore:
        """Open (creating and seeding on first start) the simulator's database file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_schema(path)
        # isolation_level=None: no implicit transactions; books() says BEGIN IMMEDIATE and COMMIT.
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses no committed transaction when the process dies (only on power
        # loss), which is all a simulator's books need, and spares an fsync per commit.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("PRAGMA foreign_keys=ON")
        store = cls(connection)
        await store._seed(population)
        return store

    async def close(self) -> None:
        self._db.close()

    @asynccontextmanager
    async def books(self) -> AsyncIterator[InsurerBooks]:
        """One database transaction: committed when the block ends, rolled back on an exception.

        BEGIN IMMEDIATE takes SQLite's write lock at once, so a transaction that reads and then
        writes can never be refused half-way because another connection wrote in between.
        """
        async with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield InsurerBooks(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    async def _seed(self, population: int) -> None:
        async with self.books() as books:
            if await books.person_count() == 0 and population > 0:
                await books.add_people(insured_people(population))


def _create_schema(path: Path) -> None:
    """The tables of `schema.py` (checked first, so an existing file is left as it is)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            schema.metadata.create_all(connection)
    finally:
        engine.dispose()


class _Reader:
    """The SELECT of one table's columns and the named tuple its rows become.

    `dates` and `booleans` are the columns SQLAlchemy's Date and Boolean types converted on the
    way out (ISO text to `date`, 0/1 to `bool`); they are converted the same way here.
    """

    def __init__(self, table: Table, dates: tuple[str, ...] = (), booleans: tuple[str, ...] = ()) -> None:
        columns = list(table.columns.keys())
        self.select = f"SELECT {', '.join(columns)} FROM {table.name}"
        self._make: Callable[[Iterable[Any]], AnyRow] = namedtuple(table.name, columns)._make  # type: ignore[attr-defined]
        self._dates = [columns.index(name) for name in dates]
        self._booleans = [columns.index(name) for name in booleans]
        self._converts = bool(dates or booleans)

    def one(self, cursor: sqlite3.Cursor) -> AnyRow | None:
        values = cursor.fetchone()
        return None if values is None else self._row(values)

    def all(self, cursor: sqlite3.Cursor) -> list[AnyRow]:
        return [self._row(values) for values in cursor.fetchall()]

    def _row(self, values: tuple[Any, ...]) -> AnyRow:
        if not self._converts:
            return self._make(values)
        converted = list(values)
        for position in self._dates:
            converted[position] = date.fromisoformat(values[position])
        for position in self._booleans:
            converted[position] = bool(values[position])
        return self._make(converted)


_PERSONS = _Reader(schema.persons, dates=("brdy", "psn_insu_date"))
_ACCUMULATORS = _Reader(schema.accumulators)
_VISITS = _Reader(schema.visits)
_FEE_DETAILS = _Reader(schema.fee_details)
_SETTLEMENTS = _Reader(schema.settlements)
_SIGN_INS = _Reader(schema.sign_ins, booleans=("signed_out",))
_MESSAGES = _Reader(schema.messages, booleans=("reversed",))
_FeeBatch = namedtuple("_FeeBatch", ["mdtrt_id", "chrg_bchno", "lines", "amount_fen"])


@lru_cache(maxsize=64)
def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class InsurerBooks:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def _add(self, table: str, values: dict[str, Any]) -> None:
        self._db.execute(_insert(table, tuple(values)), values)

    # persons, balances, accumulators

    async def person_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM persons").fetchone()[0])

    async def add_people(self, people: Sequence[InsuredPerson]) -> None:
        rows = [_person_values(person) for person in people]
        if rows:
            self._db.executemany(_insert("persons", tuple(rows[0])), rows)

    async def person(self, psn_no: str) -> AnyRow | None:
        return _PERSONS.one(self._db.execute(_PERSONS.select + " WHERE psn_no = ?", (psn_no,)))

    async def person_by_voucher(self, mdtrt_cert_type: str, mdtrt_cert_no: str) -> AnyRow | None:
        """01 = e-voucher token, 02 = resident ID, 03 = social-security card (numbered by the ID)."""
        column = "ecert_token" if mdtrt_cert_type == "01" else "certno"
        query = f"{_PERSONS.select} WHERE {column} = ?"
        return _PERSONS.one(self._db.execute(query, (mdtrt_cert_no,)))

    async def set_balance(self, psn_no: str, balance: Money) -> None:
        self._db.execute("UPDATE persons SET acct_balance_fen = ? WHERE psn_no = ?", (balance.fen, psn_no))

    async def accumulators(self, psn_no: str, year: int, insutype: str) -> Accumulators:
        query = f"{_ACCUMULATORS.select} WHERE psn_no = ? AND year = ? AND insutype = ?"
        row = _ACCUMULATORS.one(self._db.execute(query, (psn_no, year, insutype)))
        if row is None:
            return Accumulators()
        return Accumulators(Money(row.deductible_paid_fen), Money(row.fund_paid_fen))

    async def save_accumulators(self, psn_no: str, year: int, insutype: str, values: Accumulators) -> None:
        self._db.execute(
            "INSERT INTO accumulators (psn_no, year, insutype, deductible_paid_fen, fund_paid_fen)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (psn_no, year, insutype) DO UPDATE SET"
            " deductible_paid_fen = excluded.deductible_paid_fen, fund_paid_fen = excluded.fund_paid_fen",
            (psn_no, year, insutype, values.deductible_paid.fen, values.fund_paid.fen),
        )

    # visits and fee details

    async def visit(self, mdtrt_id: str) -> AnyRow | None:
        return _VISITS.one(self._db.execute(_VISITS.select + " WHERE mdtrt_id = ?", (mdtrt_id,)))

    async def visit_by_outpatient_no(self, psn_no: str, ipt_otp_no: str) -> AnyRow | None:
        query = _VISITS.select + " WHERE psn_no = ? AND ipt_otp_no = ?"
        return _VISITS.one(self._db.execute(query, (psn_no, ipt_otp_no)))

    async def add_visit(self, **values: Any) -> None:
        self._add("visits", values)

    async def set_visit_status(self, mdtrt_id: str, status: str) -> None:
        self._db.execute("UPDATE visits SET status = ? WHERE mdtrt_id = ?", (status, mdtrt_id))

    async def fee_line(self, mdtrt_id: str, feedetl_sn: str) -> AnyRow | None:
        query = _FEE_DETAILS.select + " WHERE mdtrt_id = ? AND feedetl_sn = ?"
        return _FEE_DETAILS.one(self._db.execute(query, (mdtrt_id, feedetl_sn)))

    async def fee_lines(self, mdtrt_id: str, chrg_bchno: str | None = None) -> list[AnyRow]:
        query, parameters = _FEE_DETAILS.select + " WHERE mdtrt_id = ?", [mdtrt_id]
        if chrg_bchno is not None:
            query, parameters = query + " AND chrg_bchno = ?", [mdtrt_id, chrg_bchno]
        return _FEE_DETAILS.all(self._db.execute(query + " ORDER BY feedetl_sn", parameters))

    async def fee_batches(self) -> list[AnyRow]:
        """Every charge batch with fee lines still held: (mdtrt_id, chrg_bchno, lines, amount_fen)."""
        cursor = self._db.execute(
            "SELECT mdtrt_id, chrg_bchno, count(*), sum(amount_fen) FROM fee_details"
            " GROUP BY mdtrt_id, chrg_bchno ORDER BY mdtrt_id, chrg_bchno"
        )
        return [_FeeBatch._make(values) for values in cursor.fetchall()]

    async def add_fee_line(self, **values: Any) -> None:
        self._add("fee_details", values)

    async def delete_fee_lines(self, mdtrt_id: str, chrg_bchnos: Sequence[str]) -> None:
        batches = _placeholders(len(chrg_bchnos))
        query = f"DELETE FROM fee_details WHERE mdtrt_id = ? AND chrg_bchno IN ({batches})"
        self._db.execute(query, (mdtrt_id, *chrg_bchnos))

    async def delete_fee_lines_by_sn(self, mdtrt_id: str, feedetl_sns: Sequence[str]) -> None:
        sns = _placeholders(len(feedetl_sns))
        query = f"DELETE FROM fee_details WHERE mdtrt_id = ? AND feedetl_sn IN ({sns})"
        self._db.execute(query, (mdtrt_id, *feedetl_sns))

    # settlements

    async def add_settlement(self, **values: Any) -> None:
        self._add("settlements", values)

    async def settlement(self, setl_id: str) -> AnyRow | None:
        return self._first_settlement("setl_id = ?", (setl_id,))

    async def settlement_by_msgid(self, msgid: str) -> AnyRow | None:
        return self._first_settlement("msgid = ?", (msgid,))

    async def offset_of(self, setl_id: str) -> AnyRow | None:
        return self._first_settlement("original_setl_id = ?", (setl_id,))

    async def standing_settlement(self, mdtrt_id: str, chrg_bchno: str) -> AnyRow | None:
        """The batch's settlement that has not been revoked, if any."""
        conditions = "mdtrt_id = ? AND chrg_bchno = ? AND kind = 'settle' AND revoked_by IS NULL"
        return self._first_settlement(conditions, (mdtrt_id, chrg_bchno))

    async def settlements_of_visit(self, mdtrt_id: str) -> list[AnyRow]:
        query = _SETTLEMENTS.select + " WHERE mdtrt_id = ? ORDER BY setl_id"
        return _SETTLEMENTS.all(self._db.execute(query, (mdtrt_id,)))

    async def mark_revoked(self, setl_id: str, offset_setl_id: str) -> None:
        self._db.execute("UPDATE settlements SET revoked_by = ? WHERE setl_id = ?", (offset_setl_id, setl_id))

    async def settlements_between(
        self, insutype: str, clr_type: str, clr_optins: str, first_day: str, last_day: str
    ) -> list[AnyRow]:
        query = (
            _SETTLEMENTS.select + " WHERE insutype = ? AND clr_type = ? AND clr_optins = ?"
            " AND setl_date >= ? AND setl_date <= ?"
        )
        parameters = (insutype, clr_type, clr_optins, first_day, last_day)
        return _SETTLEMENTS.all(self._db.execute(query, parameters))

    async def all_settlements(self) -> list[AnyRow]:
        return _SETTLEMENTS.all(self._db.execute(_SETTLEMENTS.select + " ORDER BY setl_id"))

    def _first_settlement(self, conditions: str, parameters: tuple[Any, ...]) -> AnyRow | None:
        query = f"{_SETTLEMENTS.select} WHERE {conditions} ORDER BY setl_id DESC LIMIT 1"
        return _SETTLEMENTS.one(self._db.execute(query, parameters))

    # sign-ins, messages, counters

    async def add_sign_in(self, sign_no: str, fixmedins_code: str, opter_no: str, at_s: int) -> None:
        self._db.execute(
            "INSERT INTO sign_ins (sign_no, fixmedins_code, opter_no, signed_in_at, signed_out)"
            " VALUES (?, ?, ?, ?, 0)",
            (sign_no, fixmedins_code, opter_no, at_s),
        )

    async def sign_in(self, sign_no: str) -> AnyRow | None:
        return _SIGN_INS.one(self._db.execute(_SIGN_INS.select + " WHERE sign_no = ?", (sign_no,)))

    async def sign_out(self, sign_no: str | None = None) -> None:
        """Close one sign-in, or all of them (the simulator's 'expire every session' switch)."""
        if sign_no is None:
            self._db.execute("UPDATE sign_ins SET signed_out = 1")
        else:
            self._db.execute("UPDATE sign_ins SET signed_out = 1 WHERE sign_no = ?", (sign_no,))

    async def message(self, msgid: str) -> AnyRow | None:
        return _MESSAGES.one(self._db.execute(_MESSAGES.select + " WHERE msgid = ?", (msgid,)))

    async def record_message(
        self, msgid: str, infno: str, fixmedins_code: str, effect: str, response: str
    ) -> None:
        self._db.execute(
            "INSERT INTO messages (msgid, infno, fixmedins_code, effect, response, reversed)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (msgid, infno, fixmedins_code, effect, response),
        )

    async def mark_message_reversed(self, msgid: str) -> None:
        self._db.execute("UPDATE messages SET reversed = 1 WHERE msgid = ?", (msgid,))

    async def next_value(self, counter: str, step: int = 1) -> int:
        """Advance a named counter by `step` and return its new value."""
        cursor = self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value RETURNING value",
            (counter, step),
        )
        return int(cursor.fetchone()[0])


def _person_values(person: InsuredPerson) -> dict[str, Any]:
    return {
        "psn_no": person.psn_no,
        "certno": person.certno,
        "psn_cert_type": person.psn_cert_type,
        "psn_name": person.psn_name,
        "gend": person.gend,
        "naty": person.naty,
        "brdy": person.brdy.isoformat(),  # as SQLAlchemy's Date wrote it: YYYY-MM-DD
        "insutype": person.insutype,
        "psn_type": person.psn_type,
        "insuplc_admdvs": person.insuplc_admdvs,
        "emp_name": person.emp_name,
        "psn_insu_date": person.psn_insu_date.isoformat(),
        "ecert_token": person.ecert_token,
        "card_sn": person.card_sn,
        "acct_balance_fen": person.account_opening_balance_fen,
    }
