"""NHSA nodes <-> typed values: exact yuan/fen, single objects for lists, masked identifiers."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from services.insurance_adapter.adapters.nhsa.config import NhsaClientConfig
from services.insurance_adapter.adapters.nhsa.transformers import (
    FeeLineResult,
    MalformedInsurerReply,
    PersonInfo,
    SettlementBreakdown,
    StatementResult,
    fee_results_from_output,
    from_yuan,
    settlement_or_none,
    to_yuan,
)
from services.insurance_adapter.adapters.nhsa.transport import tif_headers
from services.insurance_adapter.adapters.nhsa.wire import dumps, loads
from services.runtime.money import Money

SETLINFO = {
    "setl_id": "350100S1",
    "medfee_sumamt": Decimal("78.56"),
    "fulamt_ownpay_amt": Decimal("0.15"),
    "overlmt_selfpay": Decimal("0.00"),
    "preselfpay_amt": Decimal("78.41"),
    "inscp_scp_amt": Decimal("0.00"),
    "fund_pay_sumamt": Decimal("0.00"),
    "hifp_pay": Decimal("0.00"),
    "psn_pay": "78.56",  # the 5203 spelling
    "acct_pay": Decimal("0.00"),
    "cash_payamt": "78.56",
    "balc": Decimal("12.30"),
}


def test_yuan_and_fen_convert_exactly() -> None:
    assert from_yuan(Decimal("0.10"), "x") == Money(10)
    assert from_yuan("12345678.99", "x") == Money(1_234_567_899)
    assert to_yuan(Money(-5)) == Decimal("-0.05")
    with pytest.raises(MalformedInsurerReply):
        from_yuan(0.1, "x")
    with pytest.raises(MalformedInsurerReply):
        from_yuan("1.005", "x")


def test_wire_json_keeps_decimals_as_numbers_and_refuses_floats() -> None:
    text = dumps({"amount": Decimal("12.30"), "name": "阿莫西林"})
    assert text == '{"amount":12.30,"name":"阿莫西林"}'
    assert loads(text)["amount"] == Decimal("12.30")
    with pytest.raises(TypeError):
        dumps({"amount": 12.3})


def test_settlement_accepts_the_5203_aliases_and_checks_identities() -> None:
    breakdown = SettlementBreakdown.from_output(
        {"setlinfo": SETLINFO, "setldetail": {"fund_pay_type": "310100"}}
    )
    assert (breakdown.psn_part_amt, breakdown.psn_cash_pay) == (Money(7_856), Money(7_856))
    assert breakdown.fund_payments[0].fund_pay_type == "310100"
    assert breakdown.identity_violations() == []
    broken = SettlementBreakdown.from_output({"setlinfo": {**SETLINFO, "cash_payamt": "1.00"}})
    assert broken.identity_violations() == ["psn_part_amt = acct_pay + psn_cash_pay"]


def test_settlement_without_its_amounts_is_malformed() -> None:
    with pytest.raises(MalformedInsurerReply):
        SettlementBreakdown.from_output({"setlinfo": {"setl_id": "1"}})
    assert settlement_or_none({"setlinfo": None}) is None


def test_person_info_takes_single_objects_for_lists_and_masks_identifiers() -> None:
    output = {
        "baseinfo": {
            "psn_no": "P1",
            "certno": "350102199001011234",
            "psn_name": "林小明",
            "age": Decimal("35.0"),
        },
        "insuinfo": {"insutype": "310", "balc": Decimal("100.50"), "psn_type": "11"},
    }
    person = PersonInfo.from_output(output)
    assert person.enrolment("310") is not None and person.enrolments[0].balc == Money(10_050)
    assert person.enrolment("390") is None and person.identities == ()
    assert "350102199001011234" not in repr(person) and "小明" not in repr(person)
    assert person.certno.reveal() == "350102199001011234"


def test_fee_results_accept_one_object() -> None:
    row = {
        "feedetl_sn": "1",
        "det_item_fee_sumamt": "26.00",
        "inscp_scp_amt": "24.70",
        "preselfpay_amt": "1.30",
        "selfpay_prop": Decimal("0.0500"),
        "chrgitm_lv": "02",
    }
    (result,) = fee_results_from_output({"result": row})
    assert result == FeeLineResult.from_node(row)
    assert (result.preselfpay_amt, result.selfpay_prop) == (Money(130), Decimal("0.05"))


def test_statement_result_reads_the_insurer_totals_extension() -> None:
    node = {
        "setl_optins": "350100",
        "stmt_rslt": "1",
        "stmt_rslt_dscr": "不平",
        "insu_medfee_sumamt": Decimal("10.00"),
        "insu_fund_pay_sumamt": Decimal("5.00"),
        "insu_acct_pay": Decimal("0.00"),
        "insu_setl_cnt": 2,
    }
    result = StatementResult.from_output({"stmtinfo": node})
    assert not result.balanced and result.insurer_totals is not None
    assert result.insurer_totals.setl_cnt == 2
    plain = StatementResult.from_output({"stmtinfo": {"setl_optins": "350100", "stmt_rslt": "0"}})
    assert plain.balanced and plain.insurer_totals is None


def test_tif_signature_is_sha256_of_timestamp_token_nonce_timestamp() -> None:
    headers = tif_headers("paas", "token", 1_700_000_000, "abc")
    assert headers["x-tif-signature"] == hashlib.sha256(b"1700000000tokenabc1700000000").hexdigest()


def test_config_refuses_a_code_that_would_break_the_msgid() -> None:
    with pytest.raises(ValueError, match="12"):
        NhsaClientConfig("http://x", "H3501", "n", "350100", "p", "t")
