"""What the outpatient HIS bills: departments, doctors and visits drawn from the hospital catalogue.

Pure and deterministic: the same seed plans the same visits (the run tag only makes the HIS bill
numbers unique between runs). Insured patients come from the population the NHSA simulator seeds,
so the insurer knows every one of them; self-pay patients never collide with them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from itertools import cycle

from medpay.client import ChargeLine, InsuredVisit, Voucher

from infra.simulators.catalogue import CatalogueItem, find_item
from infra.simulators.population import InsuredPerson, insured_people, self_pay_people

ORDINARY_OUTPATIENT = "11"  # med_type 普通门诊
ID_CARD_VOUCHER = "02"  # mdtrt_cert_type 居民身份证
MAX_EXTRA_ITEMS = 5  # besides the consultation fee: 1-6 lines per bill
SELF_PAY_POOL = 200  # self-pay patients the outpatient clinic sees


@dataclass(frozen=True, slots=True)
class Doctor:
    code: str
    name: str
    title: str
    consultation_code: str  # the 诊查费 this doctor's title bills


@dataclass(frozen=True, slots=True)
class Department:
    code: str  # 科室代码 as the insurer knows it
    name: str
    doctors: tuple[Doctor, ...]
    usual_items: tuple[str, ...]  # hospital codes this department typically bills


def _doctor(code: str, name: str, title: str) -> Doctor:
    consultation = {"主任医师": "ZC0003", "副主任医师": "ZC0002", "主治医师": "ZC0001", "急诊医师": "ZC0004"}
    return Doctor(code, name, title, consultation[title])


DEPARTMENTS: tuple[Department, ...] = (
    Department(
        "A03", "内科",
        (_doctor("D0301", "陈建华", "主任医师"), _doctor("D0302", "林秀英", "副主任医师"),
         _doctor("D0303", "黄志明", "主治医师")),
        ("HY0001", "HY0004", "HY0005", "HY0006", "JC0001", "JC0006", "JC0003", "XY0003", "XY0004",
         "XY0005", "XY0006", "XY0007", "ZY0002", "QT0001"),
    ),
    Department(
        "A04", "外科",
        (_doctor("D0401", "郑国强", "主任医师"), _doctor("D0402", "王磊", "主治医师")),
        ("ZL0004", "SS0001", "ZL0002", "CL0002", "CL0003", "JC0001", "JC0005", "XY0002", "XY0003",
         "XY0008", "QT0001"),
    ),
    Department(
        "A07", "儿科",
        (_doctor("D0701", "吴丽萍", "副主任医师"), _doctor("D0702", "张婷", "主治医师")),
        ("HY0001", "HY0003", "HY0002", "ZL0003", "XY0001", "XY0003", "ZY0001", "XY0012", "QT0001"),
    ),
    Department(
        "A50", "中医科",
        (_doctor("D5001", "许清泉", "主任医师"), _doctor("D5002", "蔡文静", "主治医师")),
        ("YP0001", "YP0002", "YP0003", "ZY0001", "ZY0002", "HY0005", "QT0001"),
    ),
    Department(
        "A0308", "神经内科",
        (_doctor("D0381", "杨志斌", "副主任医师"),),
        ("JC0002", "JC0004", "HY0005", "XY0005", "ZY0002", "XY0011"),
    ),
    Department(
        "A20", "急诊医学科",
        (_doctor("D2001", "何晨", "急诊医师"), _doctor("D2002", "苏浩然", "急诊医师")),
        ("CW0001", "ZL0001", "XY0009", "CL0001", "HY0001", "HY0003", "JC0002", "JC0006", "XY0008",
         "XY0010"),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VisitPlan:
    """One outpatient visit as the HIS bills it. `insurance` is None for a self-pay patient; its
    voucher keeps the certificate number and name out of repr."""

    index: int
    his_order_no: str
    his_patient_id: str
    department: Department
    doctor: Doctor
    lines: tuple[ChargeLine, ...]
    insurance: InsuredVisit | None

    @property
    def total_fen(self) -> int:
        return sum(line.line_total_fen for line in self.lines)


def plan_visits(
    count: int,
    seed: int,
    insured_share: float,
    population_size: int,
    run_tag: str,
    use_personal_account: bool = True,
) -> list[VisitPlan]:
    """`count` visits; about `insured_share` of them by insured people of the seeded population.
    Nobody comes twice until everyone in their population has come once. Without the personal
    account every insured patient owes a cash share through the channel."""
    rng = random.Random(seed)
    insured = cycle(rng.sample(range(population_size), population_size))
    self_pay = cycle(rng.sample(range(SELF_PAY_POOL), SELF_PAY_POOL))
    plans = []
    for index in range(count):
        if rng.random() < insured_share:
            patient_id, insurance = _insured_patient(next(insured), population_size, use_personal_account)
        else:
            patient_id, insurance = _self_pay_patient(next(self_pay)), None
        department = rng.choice(DEPARTMENTS)
        doctor = rng.choice(department.doctors)
        plans.append(
            VisitPlan(
                index=index,
                his_order_no=f"MZ{run_tag}{index + 1:05d}",
                his_patient_id=patient_id,
                department=department,
                doctor=doctor,
                lines=_bill(rng, department, doctor),
                insurance=insurance,
            )
        )
    return plans


def _insured_patient(
    position: int, population_size: int, use_personal_account: bool
) -> tuple[str, InsuredVisit]:
    person = _insured_population(population_size)[position]
    voucher = Voucher(ID_CARD_VOUCHER, person.certno, person.psn_name, psn_cert_type=person.psn_cert_type)
    visit = InsuredVisit(
        voucher,
        med_type=ORDINARY_OUTPATIENT,
        insutype=person.insutype,
        use_personal_account=use_personal_account,
    )
    return f"HIS{position:07d}", visit


def _self_pay_patient(position: int) -> str:
    """The HIS id of one of the clinic's self-pay patients. A self-pay bill carries only that id:
    no identifier of theirs leaves the hospital."""
    return _self_pay_registry()[position]


@cache
def _insured_population(size: int) -> tuple[InsuredPerson, ...]:
    return tuple(insured_people(size))


@cache
def _self_pay_registry() -> tuple[str, ...]:
    """HIS patient ids of the self-pay population (`self_pay_people`), in population order."""
    return tuple(f"HSP{index:07d}" for index, _ in enumerate(self_pay_people(SELF_PAY_POOL)))


def _bill(rng: random.Random, department: Department, doctor: Doctor) -> tuple[ChargeLine, ...]:
    extra_count = min(rng.randint(0, MAX_EXTRA_ITEMS), len(department.usual_items))
    items = [
        _catalogue_item(code)
        for code in (doctor.consultation_code, *rng.sample(department.usual_items, extra_count))
    ]
    return tuple(_line(item, _quantity(rng, item)) for item in items)


def _catalogue_item(code: str) -> CatalogueItem:
    item = find_item(code)
    if item is None:
        raise LookupError(f"{code} is not in the hospital catalogue")
    return item


def _quantity(rng: random.Random, item: CatalogueItem) -> int:
    if item.med_chrgitm_type == "10":  # decoction pieces are billed per 10 g
        return rng.randint(3, 12)
    if item.is_drug:
        return rng.choice((1, 1, 2, 3))
    return 1


def _line(item: CatalogueItem, quantity: int) -> ChargeLine:
    return ChargeLine(
        hospital_code=item.medins_list_codg,
        national_code=item.med_list_codg,
        name=item.name,
        unit_price_fen=item.unit_price_fen,
        quantity=quantity,
        chrgitm_lv=item.chrgitm_lv,
        med_chrgitm_type=item.med_chrgitm_type,
    )
