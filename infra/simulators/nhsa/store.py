"""Persistence of the insurer's books: one SQLite file, SQLAlchemy Core over aiosqlite.

`NhsaStore` owns the engine; `InsurerBooks` is the set of queries one transaction may run, bound
to its connection. Mutating transactions are serialised by the platform (one writer, as SQLite has
anyway), so a read-compute-write inside one `InsurerBooks` never races with itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Row, delete, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from infra.simulators.nhsa import schema
from infra.simulators.nhsa.policy import Accumulators
from infra.simulators.population import InsuredPerson, insured_people
from services.runtime.money import Money

AnyRow = Row[Any]


class NhsaStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, path: Path, population: int) -> NhsaStore:
        """Open (creating and seeding on first start) the simulator's database file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as connection:
            await connection.run_sync(schema.metadata.create_all)
        store = cls(engine)
        await store._seed(population)
        return store

    async def close(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def books(self) -> AsyncIterator[InsurerBooks]:
        """One database transaction: committed when the block ends, rolled back on an exception."""
        async with self._engine.begin() as connection:
            yield InsurerBooks(connection)

    async def _seed(self, population: int) -> None:
        async with self.books() as books:
            if await books.person_count() == 0 and population > 0:
                await books.add_people(insured_people(population))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class InsurerBooks:
    def __init__(self, connection: AsyncConnection) -> None:
        self._db = connection

    # persons, balances, accumulators

    async def person_count(self) -> int:
        return int((await self._db.execute(select(func.count()).select_from(schema.persons))).scalar_one())

    async def add_people(self, people: Sequence[InsuredPerson]) -> None:
        await self._db.execute(insert(schema.persons), [_person_values(person) for person in people])

    async def person(self, psn_no: str) -> AnyRow | None:
        query = select(schema.persons).where(schema.persons.c.psn_no == psn_no)
        return (await self._db.execute(query)).first()

    async def person_by_voucher(self, mdtrt_cert_type: str, mdtrt_cert_no: str) -> AnyRow | None:
        """01 = e-voucher token, 02 = resident ID, 03 = social-security card (numbered by the ID)."""
        column = schema.persons.c.ecert_token if mdtrt_cert_type == "01" else schema.persons.c.certno
        return (await self._db.execute(select(schema.persons).where(column == mdtrt_cert_no))).first()

    async def set_balance(self, psn_no: str, balance: Money) -> None:
        query = update(schema.persons).where(schema.persons.c.psn_no == psn_no)
        await self._db.execute(query.values(acct_balance_fen=balance.fen))

    async def accumulators(self, psn_no: str, year: int, insutype: str) -> Accumulators:
        table = schema.accumulators
        query = select(table).where(
            table.c.psn_no == psn_no, table.c.year == year, table.c.insutype == insutype
        )
        row = (await self._db.execute(query)).first()
        if row is None:
            return Accumulators()
        return Accumulators(Money(row.deductible_paid_fen), Money(row.fund_paid_fen))

    async def save_accumulators(self, psn_no: str, year: int, insutype: str, values: Accumulators) -> None:
        table = schema.accumulators
        key = {"psn_no": psn_no, "year": year, "insutype": insutype}
        amounts = {"deductible_paid_fen": values.deductible_paid.fen, "fund_paid_fen": values.fund_paid.fen}
        updated = await self._db.execute(
            update(table)
            .where(table.c.psn_no == psn_no, table.c.year == year, table.c.insutype == insutype)
            .values(**amounts)
        )
        if updated.rowcount == 0:
            await self._db.execute(insert(table).values(**key, **amounts))

    # visits and fee details

    async def visit(self, mdtrt_id: str) -> AnyRow | None:
        query = select(schema.visits).where(schema.visits.c.mdtrt_id == mdtrt_id)
        return (await self._db.execute(query)).first()

    async def visit_by_outpatient_no(self, psn_no: str, ipt_otp_no: str) -> AnyRow | None:
        table = schema.visits
        query = select(table).where(table.c.psn_no == psn_no, table.c.ipt_otp_no == ipt_otp_no)
        return (await self._db.execute(query)).first()

    async def add_visit(self, **values: Any) -> None:
        await self._db.execute(insert(schema.visits).values(**values))

    async def set_visit_status(self, mdtrt_id: str, status: str) -> None:
        query = update(schema.visits).where(schema.visits.c.mdtrt_id == mdtrt_id)
        await self._db.execute(query.values(status=status))

    async def fee_line(self, mdtrt_id: str, feedetl_sn: str) -> AnyRow | None:
        table = schema.fee_details
        query = select(table).where(table.c.mdtrt_id == mdtrt_id, table.c.feedetl_sn == feedetl_sn)
        return (await self._db.execute(query)).first()

    async def fee_lines(self, mdtrt_id: str, chrg_bchno: str | None = None) -> list[AnyRow]:
        table = schema.fee_details
        query = select(table).where(table.c.mdtrt_id == mdtrt_id)
        if chrg_bchno is not None:
            query = query.where(table.c.chrg_bchno == chrg_bchno)
        return list((await self._db.execute(query.order_by(table.c.feedetl_sn))).all())

    async def fee_batches(self) -> list[AnyRow]:
        """Every charge batch with fee lines still held: (mdtrt_id, chrg_bchno, lines, amount_fen)."""
        table = schema.fee_details
        query = (
            select(
                table.c.mdtrt_id,
                table.c.chrg_bchno,
                func.count().label("lines"),
                func.sum(table.c.amount_fen).label("amount_fen"),
            )
            .group_by(table.c.mdtrt_id, table.c.chrg_bchno)
            .order_by(table.c.mdtrt_id, table.c.chrg_bchno)
        )
        return list((await self._db.execute(query)).all())

    async def add_fee_line(self, **values: Any) -> None:
        await self._db.execute(insert(schema.fee_details).values(**values))

    async def delete_fee_lines(self, mdtrt_id: str, chrg_bchnos: Sequence[str]) -> None:
        table = schema.fee_details
        await self._db.execute(
            delete(table).where(table.c.mdtrt_id == mdtrt_id, table.c.chrg_bchno.in_(chrg_bchnos))
        )

    async def delete_fee_lines_by_sn(self, mdtrt_id: str, feedetl_sns: Sequence[str]) -> None:
        table = schema.fee_details
        await self._db.execute(
            delete(table).where(table.c.mdtrt_id == mdtrt_id, table.c.feedetl_sn.in_(feedetl_sns))
        )

    # settlements

    async def add_settlement(self, **values: Any) -> None:
        await self._db.execute(insert(schema.settlements).values(**values))

    async def settlement(self, setl_id: str) -> AnyRow | None:
        return await self._first_settlement(schema.settlements.c.setl_id == setl_id)

    async def settlement_by_msgid(self, msgid: str) -> AnyRow | None:
        return await self._first_settlement(schema.settlements.c.msgid == msgid)

    async def offset_of(self, setl_id: str) -> AnyRow | None:
        return await self._first_settlement(schema.settlements.c.original_setl_id == setl_id)

    async def standing_settlement(self, mdtrt_id: str, chrg_bchno: str) -> AnyRow | None:
        """The batch's settlement that has not been revoked, if any."""
        table = schema.settlements
        return await self._first_settlement(
            table.c.mdtrt_id == mdtrt_id,
            table.c.chrg_bchno == chrg_bchno,
            table.c.kind == "settle",
            table.c.revoked_by.is_(None),
        )

    async def settlements_of_visit(self, mdtrt_id: str) -> list[AnyRow]:
        table = schema.settlements
        query = select(table).where(table.c.mdtrt_id == mdtrt_id).order_by(table.c.setl_id)
        return list((await self._db.execute(query)).all())

    async def mark_revoked(self, setl_id: str, offset_setl_id: str) -> None:
        query = update(schema.settlements).where(schema.settlements.c.setl_id == setl_id)
        await self._db.execute(query.values(revoked_by=offset_setl_id))

    async def settlements_between(
        self, insutype: str, clr_type: str, clr_optins: str, first_day: str, last_day: str
    ) -> list[AnyRow]:
        table = schema.settlements
        query = select(table).where(
            table.c.insutype == insutype,
            table.c.clr_type == clr_type,
            table.c.clr_optins == clr_optins,
            table.c.setl_date >= first_day,
            table.c.setl_date <= last_day,
        )
        return list((await self._db.execute(query)).all())

    async def all_settlements(self) -> list[AnyRow]:
        table = schema.settlements
        return list((await self._db.execute(select(table).order_by(table.c.setl_id))).all())

    async def _first_settlement(self, *conditions: Any) -> AnyRow | None:
        query = select(schema.settlements).where(*conditions).order_by(schema.settlements.c.setl_id.desc())
        return (await self._db.execute(query)).first()

    # sign-ins, messages, counters

    async def add_sign_in(self, sign_no: str, fixmedins_code: str, opter_no: str, at_s: int) -> None:
        values = {"sign_no": sign_no, "fixmedins_code": fixmedins_code, "opter_no": opter_no}
        await self._db.execute(insert(schema.sign_ins).values(**values, signed_in_at=at_s, signed_out=False))

    async def sign_in(self, sign_no: str) -> AnyRow | None:
        query = select(schema.sign_ins).where(schema.sign_ins.c.sign_no == sign_no)
        return (await self._db.execute(query)).first()

    async def sign_out(self, sign_no: str | None = None) -> None:
        """Close one sign-in, or all of them (the simulator's 'expire every session' switch)."""
        query = update(schema.sign_ins)
        if sign_no is not None:
            query = query.where(schema.sign_ins.c.sign_no == sign_no)
        await self._db.execute(query.values(signed_out=True))

    async def message(self, msgid: str) -> AnyRow | None:
        query = select(schema.messages).where(schema.messages.c.msgid == msgid)
        return (await self._db.execute(query)).first()

    async def record_message(
        self, msgid: str, infno: str, fixmedins_code: str, effect: str, response: str
    ) -> None:
        values = {"msgid": msgid, "infno": infno, "fixmedins_code": fixmedins_code}
        await self._db.execute(
            insert(schema.messages).values(**values, effect=effect, response=response, reversed=False)
        )

    async def mark_message_reversed(self, msgid: str) -> None:
        query = update(schema.messages).where(schema.messages.c.msgid == msgid)
        await self._db.execute(query.values(reversed=True))

    async def next_value(self, counter: str, step: int = 1) -> int:
        """Advance a named counter by `step` and return its new value."""
        table = schema.counters
        updated = await self._db.execute(
            update(table).where(table.c.name == counter).values(value=table.c.value + step)
        )
        if updated.rowcount == 0:
            await self._db.execute(insert(table).values(name=counter, value=step))
        query = select(table.c.value).where(table.c.name == counter)
        return int((await self._db.execute(query)).scalar_one())


def _person_values(person: InsuredPerson) -> dict[str, Any]:
    return {
        "psn_no": person.psn_no,
        "certno": person.certno,
        "psn_cert_type": person.psn_cert_type,
        "psn_name": person.psn_name,
        "gend": person.gend,
        "naty": person.naty,
        "brdy": person.brdy,
        "insutype": person.insutype,
        "psn_type": person.psn_type,
        "insuplc_admdvs": person.insuplc_admdvs,
        "emp_name": person.emp_name,
        "psn_insu_date": person.psn_insu_date,
        "ecert_token": person.ecert_token,
        "card_sn": person.card_sn,
        "acct_balance_fen": person.account_opening_balance_fen,
    }
