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
