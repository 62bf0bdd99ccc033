"""The facade's input types: exact fen arithmetic, masked repr, addresses from the environment."""

from __future__ import annotations

from decimal import Decimal

import pytest
from medpay.client import Addresses, ChargeLine, InsuredVisit, Voucher, format_yuan

CERTNO = "350102198805123411"
NAME = "林志强"


def test_line_total_is_quantity_times_price_rounded_half_up() -> None:
    herbs = ChargeLine("YP0002", "T000300216", "当归（饮片）", unit_price_fen=350, quantity=Decimal("1.5"))
    assert herbs.line_total_fen == 525
    odd = ChargeLine("YP0001", "T001700182", "黄芪（饮片）", unit_price_fen=181, quantity=Decimal("0.5"))
    assert odd.line_total_fen == 91  # 90.5 rounds half up


def test_quantity_travels_in_ten_thousandths() -> None:
    line = ChargeLine("XY0001", "XJ01CAA040A001010101445", "阿莫西林胶囊", unit_price_fen=1_250, quantity=2)
    item = line.to_proto("1")
    assert (item.quantity_ten_thousandths, item.unit_price_fen, item.line_total_fen, item.line_no) == (
        20_000,
        1_250,
        2_500,
        "1",
    )


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        ChargeLine("XY0001", "X", "阿莫西林胶囊", unit_price_fen=1_250, quantity=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4 decimal places"):
        ChargeLine("XY0001", "X", "阿莫西林胶囊", unit_price_fen=1_250, quantity=Decimal("0.00001"))


def test_voucher_repr_hides_the_patient() -> None:
    visit = InsuredVisit(Voucher("02", CERTNO, NAME), insutype="310")
    shown = repr(visit)
    assert CERTNO not in shown and NAME not in shown
    proto = visit.voucher.to_proto()
    assert (proto.mdtrt_cert_no, proto.psn_name, proto.mdtrt_cert_type) == (CERTNO, NAME, "02")


def test_format_yuan_is_exact() -> None:
    assert format_yuan(0) == "0.00"
    assert format_yuan(5) == "0.05"
    assert format_yuan(123_456_789) == "1,234,567.89"
    assert format_yuan(-1_050) == "-10.50"


def test_addresses_from_env_with_loopback_defaults() -> None:
    addresses = Addresses.from_env({"MEDPAY_RECONCILIATION_ADDR": "recon:7000"})
    assert addresses == Addresses(reconciliation="recon:7000")
    assert addresses.by_service()["payment-core"] == "127.0.0.1:50051"
    assert addresses.by_service()["data-aggregation"] == "127.0.0.1:50054"
