"""A deterministic population of Fuzhou patients, shared by the NHSA simulator and the HIS driver.

Pure and importable: no I/O, no clock. The same seed always yields the same people, and the list
is prefix-stable (`insured_people(500)` is the first 500 of `insured_people(1000)`), so the
simulator's seeded records and the HIS driver's patients agree without talking to each other.

Certificate numbers are valid-looking 18-digit resident ID numbers (GB 11643: region, birth date,
sequence with the sex digit, ISO 7064 MOD 11-2 check character). They are synthetic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

POPULATION_SEED = 20_240_401
SELF_PAY_SEED = 20_240_402
INSURED_ADMDVS = "350100"
REFERENCE_DATE = date(2025, 1, 1)  # ages and retirement are computed against a fixed day
RETIREMENT_AGE = 60

# Fuzhou districts and counties (GB/T 2260 codes), used as the first six digits of a certificate.
_FUZHOU_REGIONS = ("350102", "350103", "350104", "350105", "350111", "350112", "350121", "350181")
_FAMILY_NAMES = "陈林黄张李王吴刘蔡杨郑许谢郭洪曾邱廖赖周徐苏叶庄吕江何萧罗高潘"
_GIVEN_CHARACTERS = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志斌丹凤玲婷雪琳晨宇浩然思怡子涵欣"
_EMPLOYERS = (
    "福州市鼓楼区人民政府办公室",
    "福建省电力有限公司福州供电公司",
    "福州大学",
    "福建福耀玻璃工业集团股份有限公司",
    "福州地铁集团有限公司",
    "福建新大陆电脑股份有限公司",
    "福州市第一中学",
    "中国移动通信集团福建有限公司",
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARACTERS = "10X98765432"


@dataclass(frozen=True, slots=True)
class Patient:
    """A person as the hospital knows them. Identifiers are clear text here: mask before logging."""

    certno: str
    psn_name: str
    gend: str  # "1" male, "2" female (GB/T 2261.1)
    brdy: date
    naty: str  # "01" 汉族
    phone: str

    @property
    def age(self) -> int:
        return _age_on(self.brdy, REFERENCE_DATE)


@dataclass(frozen=True, slots=True)
class InsuredPerson(Patient):
    """A person enrolled with the Fuzhou medical-insurance fund."""

    psn_no: str
    psn_cert_type: str  # "01" 居民身份证
    insutype: str  # "310" employee, "390" resident
    psn_type: str  # "11" in service, "12" retired
    insuplc_admdvs: str
    emp_name: str
    psn_insu_date: date
    account_opening_balance_fen: int  # personal account (个人账户), employees only
    ecert_token: str  # what decoding the patient's 医保电子凭证 QR code yields (mdtrt_cert_type 01)
    card_sn: str  # social-security card chip serial, needed with mdtrt_cert_type 03


def resident_id_check_character(first_17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of an 18-digit resident ID number."""
    weighted = sum(int(digit) * weight for digit, weight in zip(first_17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARACTERS[weighted % 11]


def is_valid_resident_id(certno: str) -> bool:
    if len(certno) != 18 or not certno[:17].isdigit():
        return False
    return resident_id_check_character(certno[:17]) == certno[17].upper()


def insured_people(count: int) -> list[InsuredPerson]:
    """The first `count` insured people of the population, about 70 % employees (310)."""
    rng = random.Random(POPULATION_SEED)
    seen: set[str] = set()
    return [_insured_person(rng, index, seen) for index in range(count)]


def self_pay_people(count: int) -> list[Patient]:
    """`count` uninsured patients; their certificates never collide with the insured ones."""
    rng = random.Random(SELF_PAY_SEED)
    seen: set[str] = set()
    return [_unique_patient(rng, seen, _SELF_PAY_ORDERS, (1940, 2020)) for _ in range(count)]


# The 3-digit order code of the certificate: insured people and self-pay people draw from
# disjoint ranges, so the two populations can never share a certificate number.
_INSURED_ORDERS = (0, 250)
_SELF_PAY_ORDERS = (250, 500)


def _insured_person(rng: random.Random, index: int, seen: set[str]) -> InsuredPerson:
    is_employee = rng.random() < 0.7
    birth_years = (1945, 2005) if is_employee else (1940, 2020)
    patient = _unique_patient(rng, seen, _INSURED_ORDERS, birth_years)
    return InsuredPerson(
        **{name: getattr(patient, name) for name in Patient.__dataclass_fields__},
        psn_no=f"35010000{index + 1:012d}",
        psn_cert_type="01",
        insutype="310" if is_employee else "390",
        psn_type="12" if patient.age >= RETIREMENT_AGE else "11",
        insuplc_admdvs=INSURED_ADMDVS,
        emp_name=rng.choice(_EMPLOYERS) if is_employee else "",
        psn_insu_date=date(rng.randint(2000, 2020), rng.randint(1, 12), 1),
        account_opening_balance_fen=rng.randrange(0, 600_000, 100) if is_employee else 0,
        ecert_token=f"{rng.getrandbits(128):032x}",
        card_sn=f"{rng.getrandbits(96):024X}",
    )


def _unique_patient(
    rng: random.Random, seen: set[str], orders: tuple[int, int], birth_years: tuple[int, int]
) -> Patient:
    while True:
        patient = _patient(rng, orders, birth_years)
        if patient.certno not in seen:
            seen.add(patient.certno)
            return patient


def _patient(rng: random.Random, orders: tuple[int, int], birth_years: tuple[int, int]) -> Patient:
    first_day = date(birth_years[0], 1, 1)
    brdy = first_day + timedelta(days=rng.randrange((date(birth_years[1], 1, 1) - first_day).days))
    gend = rng.choice("12")
    # The 17th digit is odd for men and even for women.
    order = 2 * rng.randrange(*orders) + (1 if gend == "1" else 0)
    first_17 = f"{rng.choice(_FUZHOU_REGIONS)}{brdy:%Y%m%d}{order:03d}"
    given = "".join(rng.choice(_GIVEN_CHARACTERS) for _ in range(1 if rng.random() < 0.3 else 2))
    return Patient(
        certno=first_17 + resident_id_check_character(first_17),
        psn_name=rng.choice(_FAMILY_NAMES) + given,
        gend=gend,
        brdy=brdy,
        naty="01",
        phone=f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
    )


def _age_on(birthday: date, day: date) -> int:
    return day.year - birthday.year - ((day.month, day.day) < (birthday.month, birthday.day))
