"""The matcher: three sources of one business day in, matched count, discrepancies and totals out.

Payments are keyed by out_trade_no and refunds by out_refund_no: those are the keys the platform
sent to the channel, so both sides know them. Only transactions that moved money count; a payment
that never succeeded on either side is not a disagreement. Duplicates are reported once per key and
side, and the first occurrence is matched as usual, so a doubled bill row is one finding, not two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.reconciliation.domain.model import (
    PLATFORM_SOURCE,
    ChannelBill,
    ChannelBillLine,
    Discrepancy,
    DiscrepancyClass,
    InsurerFigures,
    InsurerStatement,
    PlatformTransaction,
    SourceTotals,
    TransactionKind,
)
from services.runtime.money import Money, total

Entry = PlatformTransaction | ChannelBillLine
EntryT = TypeVar("EntryT", PlatformTransaction, ChannelBillLine)

_KEY_NAME = {TransactionKind.PAYMENT: "out_trade_no", TransactionKind.REFUND: "out_refund_no"}
_NOUN = {TransactionKind.PAYMENT: "payment", TransactionKind.REFUND: "refund"}


@dataclass(frozen=True, slots=True)
class ChannelMatch:
    matched_count: int
    discrepancies: tuple[Discrepancy, ...]


@dataclass(frozen=True, slots=True)
class DayOutcome:
    matched_count: int
    discrepancies: tuple[Discrepancy, ...]
    totals: tuple[SourceTotals, ...]


def reconcile_day(
    platform: Sequence[PlatformTransaction],
    bills: Sequence[ChannelBill],
    statements: Sequence[InsurerStatement],
) -> DayOutcome:
    """Platform ↔ each channel's bill for that channel, then each insurer statement on its own."""
    channels = [
        match_channel([tx for tx in platform if tx.channel == bill.channel], bill.lines, bill.source)
        for bill in bills
    ]
    checked = (check_insurer_statement(statement, platform) for statement in statements)
    insurer = [found for found in checked if found is not None]
    return DayOutcome(
        matched_count=sum(channel.matched_count for channel in channels),
        discrepancies=(*(found for channel in channels for found in channel.discrepancies), *insurer),
        totals=day_totals(platform, bills, statements),
    )


def match_channel(
    platform: Sequence[PlatformTransaction], lines: Sequence[ChannelBillLine], source: str
) -> ChannelMatch:
    matched = 0
    found: list[Discrepancy] = []
    for kind in TransactionKind:
        ours = _by_key(tx for tx in platform if tx.kind is kind)
        theirs = _by_key(line for line in lines if line.kind is kind)
        found += _duplicates(ours, PLATFORM_SOURCE) + _duplicates(theirs, source)
        for key in sorted(ours.keys() | theirs.keys()):
            first_ours, first_theirs = _first(ours.get(key)), _first(theirs.get(key))
            finding = compare(first_ours, first_theirs, source)
            if finding is not None:
                found.append(finding)
            elif first_ours is not None and first_theirs is not None:
                matched += 1
    return ChannelMatch(matched_count=matched, discrepancies=tuple(found))


def compare(
    ours: PlatformTransaction | None, theirs: ChannelBillLine | None, source: str
) -> Discrepancy | None:
    """What one transaction's two sides say; None when they agree (or neither moved money)."""
    if ours is None or theirs is None:
        return _one_sided(ours, theirs, source)
    if ours.moved_money != theirs.moved_money:
        return _finding(DiscrepancyClass.STATUS_MISMATCH, ours, theirs, source)
    if ours.moved_money and ours.amount != theirs.amount:
        return _finding(DiscrepancyClass.AMOUNT_MISMATCH, ours, theirs, source)
    return None


def _one_sided(
    ours: PlatformTransaction | None, theirs: ChannelBillLine | None, source: str
) -> Discrepancy | None:
    present = _either(ours, theirs)
    if not present.moved_money:
        return None
    if present.kind is TransactionKind.REFUND:
        # A refund on one side only means the order's outcome differs: refunded vs not.
        return _finding(DiscrepancyClass.STATUS_MISMATCH, ours, theirs, source)
    one_side = DiscrepancyClass.PLATFORM_ONLY if theirs is None else DiscrepancyClass.CHANNEL_ONLY
    return _finding(one_side, ours, theirs, source)


def _finding(
    discrepancy_class: DiscrepancyClass,
    ours: PlatformTransaction | None,
    theirs: ChannelBillLine | None,
    source: str,
) -> Discrepancy:
    anyone = _either(ours, theirs)
    return Discrepancy(
        discrepancy_class=discrepancy_class,
        source=source,
        evidence=f"{source} bill: {_bill_says(theirs)}; platform: {_platform_says(ours, anyone)}",
        out_trade_no=anyone.out_trade_no,
        out_refund_no=anyone.out_refund_no,
        order_id=ours.order_id if ours is not None else "",
        platform_amount=ours.amount if ours is not None else Money.zero(),
        source_amount=theirs.amount if theirs is not None else Money.zero(),
    )


def _either(ours: PlatformTransaction | None, theirs: ChannelBillLine | None) -> Entry:
    if ours is not None:
        return ours
    if theirs is None:
        raise ValueError("a finding needs at least one side")
    return theirs


def _bill_says(line: ChannelBillLine | None) -> str:
    if line is None:
        return "no such row"
    noun = _NOUN[line.kind]
    channel_id = line.channel_refund_id or line.channel_transaction_id
    return f"{noun} {line.status} {line.amount} at {line.traded_at or '?'} (channel id {channel_id or '-'})"


def _platform_says(tx: PlatformTransaction | None, anyone: Entry) -> str:
    if tx is None:
        return f"no {_NOUN[anyone.kind]} with {_KEY_NAME[anyone.kind]} {anyone.channel_key}"
    return f"{_NOUN[tx.kind]} {tx.status} {tx.amount} on order {tx.order_id}"


def _duplicates(grouped: dict[str, list[EntryT]], source: str) -> list[Discrepancy]:
    found = []
    for key, entries in sorted(grouped.items()):
        if len(entries) < 2:
            continue
        first = entries[0]
        amounts = ", ".join(str(entry.amount) for entry in entries)
        found.append(
            Discrepancy(
                discrepancy_class=DiscrepancyClass.DUPLICATE,
                source=source,
                evidence=f"{source} lists {_KEY_NAME[first.kind]} {key} {len(entries)} times ({amounts})",
                out_trade_no=first.out_trade_no,
                out_refund_no=first.out_refund_no,
                order_id=first.order_id if isinstance(first, PlatformTransaction) else "",
                platform_amount=_sum_if(entries, source == PLATFORM_SOURCE),
                source_amount=_sum_if(entries, source != PLATFORM_SOURCE),
            )
        )
    return found


def _sum_if(entries: Sequence[Entry], wanted: bool) -> Money:
    return total(entry.amount for entry in entries) if wanted else Money.zero()


def _by_key(entries: Iterable[EntryT]) -> dict[str, list[EntryT]]:
    grouped: dict[str, list[EntryT]] = {}
    for entry in entries:
        grouped.setdefault(entry.channel_key, []).append(entry)
    return grouped


def _first(entries: list[EntryT] | None) -> EntryT | None:
    return entries[0] if entries else None


def check_insurer_statement(
    statement: InsurerStatement, platform: Sequence[PlatformTransaction] | None = None
) -> Discrepancy | None:
    """One insurance type's three-way check: the insurer's 3201 answer (insurance-adapter's figures
    against the insurer's own) and, given the platform's transactions, payment-core's insured
    settlements against both. Any disagreement is one INSURER_TOTALS_MISMATCH with all figures."""
    ours = None if platform is None else platform_insurer_figures(platform, statement.insutype)
    reported = statement.reported
    others = [statement.declared] + ([reported] if reported is not None else [])
    if statement.balanced and (ours is None or all(ours == figures for figures in others)):
        return None
    theirs = "no totals reported" if reported is None else _figures(reported)
    platform_says = "" if ours is None else f"payment-core holds {_figures(ours)}; "
    return Discrepancy(
        discrepancy_class=DiscrepancyClass.INSURER_TOTALS_MISMATCH,
        source=statement.source,
        evidence=(
            f"3201 insutype {statement.insutype} clr_type {statement.clr_type}: stmt_rslt "
            f"{statement.result_code or '?'} {statement.result_text!r}; {platform_says}insurance-adapter "
            f"declared {_figures(statement.declared)}; insurer: {theirs}"
        ),
        platform_amount=(ours or statement.declared).medfee,
        source_amount=reported.medfee if reported is not None else statement.declared.medfee,
    )


def platform_insurer_figures(platform: Iterable[PlatformTransaction], insutype: str) -> InsurerFigures:
    """What payment-core holds for one insurance type on the day: settlements (one per setl_id)
    minus the ones revoked, the way 3201 counts them."""
    settled: dict[str, PlatformTransaction] = {}
    revoked: dict[str, PlatformTransaction] = {}
    for tx in platform:
        if tx.insutype == insutype and tx.moved_insurance:
            (settled if tx.kind is TransactionKind.PAYMENT else revoked).setdefault(tx.setl_id, tx)
    return InsurerFigures(
        medfee=total(tx.medfee for tx in settled.values()) - total(tx.medfee for tx in revoked.values()),
        fund=total(tx.fund for tx in settled.values()) - total(tx.fund for tx in revoked.values()),
        personal_account=total(tx.personal_account for tx in settled.values())
        - total(tx.personal_account for tx in revoked.values()),
        settlement_count=len(settled) - len(revoked),
    )


def _figures(figures: InsurerFigures) -> str:
    return (
        f"{figures.settlement_count} settlements, medfee {figures.medfee}, fund {figures.fund}, "
        f"personal account {figures.personal_account}"
    )


def insured_types(platform: Iterable[PlatformTransaction]) -> list[str]:
    """The insurance types the platform settled with on the day: one 3201 each."""
    return sorted({tx.insutype for tx in platform if tx.insutype})


def day_totals(
    platform: Sequence[PlatformTransaction] | None,
    bills: Sequence[ChannelBill],
    statements: Sequence[InsurerStatement],
) -> tuple[SourceTotals, ...]:
    """Totals per source read; a failed run passes None (or nothing) for what it never read."""
    totals = []
    if platform is not None:
        totals.append(entry_totals(PLATFORM_SOURCE, platform))
    for bill in bills:
        if platform is not None:
            on_channel = [tx for tx in platform if tx.channel == bill.channel]
            totals.append(entry_totals(f"{PLATFORM_SOURCE}:{bill.source}", on_channel))
        totals.append(entry_totals(bill.source, bill.lines))
    totals += [insurer_totals(statement) for statement in statements]
    return tuple(totals)


def entry_totals(source: str, entries: Iterable[Entry]) -> SourceTotals:
    moved = [entry for entry in entries if entry.moved_money]
    payments = [entry.amount for entry in moved if entry.kind is TransactionKind.PAYMENT]
    refunds = [entry.amount for entry in moved if entry.kind is TransactionKind.REFUND]
    return SourceTotals(source, len(payments), total(payments), len(refunds), total(refunds))


def insurer_totals(statement: InsurerStatement) -> SourceTotals:
    """The insurer's side of a 3201: what the funds paid (统筹 + 个人账户). 3201 nets revocations
    into the settlements, so there is no separate refund figure. A balanced statement without the
    insurer's own figures agrees with what the platform declared."""
    figures = statement.reported
    if figures is None:
        figures = statement.declared if statement.balanced else None
    if figures is None:
        return SourceTotals(statement.source, 0, Money.zero(), 0, Money.zero())
    paid = figures.fund + figures.personal_account
    return SourceTotals(statement.source, figures.settlement_count, paid, 0, Money.zero())
