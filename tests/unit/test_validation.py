import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.pagination import decode_page_token, encode_page_token
from services.runtime.validation import Violations


def test_all_violations_are_reported_together() -> None:
    violations = Violations()
    violations.require_request_id("")
    violations.require_text("", "his_order_no")
    violations.business_date("2026-13-01")
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [v.field for v in caught.value.violations] == ["request_id", "his_order_no", "business_date"]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("2000-01-01", True),
        ("2099-12-31", True),
        ("2026-11-25", True),
        ("1999-12-31", False),
        ("2100-01-01", False),
        ("0001-01-01", False),
        ("9999-12-31", False),
        ("20261125", False),  # date.fromisoformat reads it; the contract says YYYY-MM-DD
        ("2026-W48-3", False),
    ],
)
def test_a_business_date_is_yyyy_mm_dd_within_the_days_the_platform_serves(text: str, kept: bool) -> None:
    violations = Violations()
    day = violations.business_date(text)
    assert (day is not None, [v.field for v in violations.found]) == (kept, [] if kept else ["business_date"])


def test_request_id_shape() -> None:
    good, bad = Violations(), Violations()
    good.require_request_id("his-20261125-000123_a")
    bad.require_request_id("has spaces")
    assert not good.found and bad.found


def test_page_tokens_round_trip_and_foreign_tokens_are_invalid_arguments() -> None:
    assert decode_page_token(encode_page_token({"after": "ord_1"})) == {"after": "ord_1"}
    assert decode_page_token("") is None
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token("%%%not-a-token")
    assert caught.value.violations[0].field == "page_token"


def test_nul_characters_are_found_wherever_they_hide() -> None:
    from medpay.common.v1 import common_pb2
    from medpay.payment.v1 import payment_pb2

    from services.runtime.validation import nul_character_field, reject_nul_characters

    clean = payment_pb2.CreatePaymentOrderRequest(request_id="r1", items=[common_pb2.ChargeItem(name="CT")])
    assert nul_character_field(clean) is None
    dirty = payment_pb2.CreatePaymentOrderRequest(
        request_id="r1", items=[common_pb2.ChargeItem(name="CT"), common_pb2.ChargeItem(name="C\x00T")]
    )
    assert nul_character_field(dirty) == "items[1].name"
    with pytest.raises(InvalidArgument) as caught:
        reject_nul_characters(payment_pb2.GetPaymentOrderRequest(order_id="\x00"))
    assert caught.value.violations[0].field == "order_id"
