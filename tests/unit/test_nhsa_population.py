"""The shared synthetic population and charge catalogue."""

from __future__ import annotations

from collections import Counter

from infra.simulators.catalogue import CHARGE_CATALOGUE, find_item
from infra.simulators.population import (
    insured_people,
    is_valid_resident_id,
    resident_id_check_character,
    self_pay_people,
)


def test_check_character_follows_gb_11643() -> None:
    assert resident_id_check_character("11010519491231002") == "X"
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("110105194912310021")


def test_population_is_deterministic_and_prefix_stable() -> None:
    assert insured_people(500) == insured_people(500)
    assert insured_people(1000)[:500] == insured_people(500)


def test_population_looks_like_fuzhou() -> None:
    people = insured_people(500)
    assert all(is_valid_resident_id(p.certno) and p.certno.startswith("3501") for p in people)
    assert len({p.certno for p in people}) == len({p.psn_no for p in people}) == 500
    mix = Counter(p.insutype for p in people)
    assert 0.6 < mix["310"] / 500 < 0.8 and mix["310"] + mix["390"] == 500
    assert all(p.account_opening_balance_fen == 0 for p in people if p.insutype == "390")
    assert all(p.psn_type == ("12" if p.age >= 60 else "11") for p in people)
    assert all(int(p.certno[16]) % 2 == (1 if p.gend == "1" else 0) for p in people)
    assert {p.insuplc_admdvs for p in people} == {"350100"}


def test_self_pay_people_never_share_a_certificate_with_the_insured() -> None:
    insured = {p.certno for p in insured_people(500)}
    self_pay = [p.certno for p in self_pay_people(500)]
    assert len(set(self_pay)) == 500 and insured.isdisjoint(self_pay)


def test_catalogue_has_unique_codes_and_every_grade() -> None:
    codes = [code for item in CHARGE_CATALOGUE for code in (item.medins_list_codg, item.med_list_codg)]
    assert len(codes) == len(set(codes)) and 35 <= len(CHARGE_CATALOGUE) <= 50
    assert {item.chrgitm_lv for item in CHARGE_CATALOGUE} == {"01", "02", "03"}
    assert any(item.price_cap_fen and item.price_cap_fen < item.unit_price_fen for item in CHARGE_CATALOGUE)
    amoxicillin = find_item("XY0001")
    assert amoxicillin is not None and find_item(amoxicillin.med_list_codg) is amoxicillin
