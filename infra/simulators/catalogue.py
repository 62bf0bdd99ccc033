"""The 900th Hospital's outpatient charge catalogue, mapped to the national insurance catalogue.

Pure and importable: the NHSA simulator uses it as the insurer's catalogue (grade, price cap,
first self-pay share) and the HIS driver uses it to bill realistic visits.

`med_chrgitm_type` follows the national 医疗收费项目类别 code set:
01 床位费, 02 诊察费, 03 检查费, 04 化验费, 05 治疗费, 06 手术费, 07 护理费, 08 卫生材料费,
09 西药费, 10 中药饮片费, 11 中成药费, 12 一般诊疗费, 13 挂号费, 14 其他费.
`chrgitm_lv`: 01 甲类, 02 乙类 (the patient first pays `selfpay_prop` of it), 03 丙类 (自费).
National codes (`med_list_codg`) imitate the real shapes — 15-digit service codes, X/Z-prefixed
drug codes, C-prefixed consumable codes — but are invented. Prices are in fen and plausible for a
level-3 Fuzhou hospital; `price_cap_fen` is the insurer's 最高限价 where the hospital charges more.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

DEFAULT_SELFPAY_PROP = Decimal("0.05")
CLASS_A, CLASS_B, CLASS_C = "01", "02", "03"  # 甲类, 乙类, 丙类


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    medins_list_codg: str  # the hospital's own code
    med_list_codg: str  # the national catalogue code
    name: str
    unit: str
    chrgitm_lv: str
    med_chrgitm_type: str
    unit_price_fen: int
    price_cap_fen: int | None = None
    selfpay_prop: Decimal = Decimal(0)

    @property
    def is_drug(self) -> bool:
        return self.med_chrgitm_type in ("09", "10", "11")


def _a(
    hosp: str, national: str, name: str, unit: str, kind: str, price: int, cap: int | None = None
) -> CatalogueItem:
    return CatalogueItem(hosp, national, name, unit, CLASS_A, kind, price, cap)


def _b(
    hosp: str, national: str, name: str, unit: str, kind: str, price: int, prop: str = "0.05"
) -> CatalogueItem:
    return CatalogueItem(hosp, national, name, unit, CLASS_B, kind, price, None, Decimal(prop))


def _c(hosp: str, national: str, name: str, unit: str, kind: str, price: int) -> CatalogueItem:
    return CatalogueItem(hosp, national, name, unit, CLASS_C, kind, price, None, Decimal(1))


CHARGE_CATALOGUE: tuple[CatalogueItem, ...] = (
    # registration and consultation
    _a("GH0001", "110200001000000", "普通门诊挂号费", "次", "13", 100),
    _a("ZC0001", "110200001010000", "普通门诊诊查费", "次", "02", 2_500),
    _a("ZC0002", "110200001020000", "副主任医师门诊诊查费", "次", "02", 3_500),
    _a("ZC0003", "110200001030000", "主任医师门诊诊查费", "次", "02", 5_000),
    _a("ZC0004", "110200002000000", "急诊诊查费", "次", "02", 3_000),
    _a("CW0001", "110900003000000", "急诊观察床位费", "日", "01", 2_500),
    # laboratory
    _a("HY0001", "250101015000000", "血细胞分析（五分类）", "次", "04", 2_000),
    _a("HY0002", "250102001000000", "尿液分析", "次", "04", 1_000),
    _a("HY0003", "250403015000000", "C反应蛋白测定", "项", "04", 2_500),
    _a("HY0004", "250305001000000", "血清丙氨酸氨基转移酶测定", "项", "04", 600),
    _a("HY0005", "250302001000000", "葡萄糖测定", "项", "04", 600),
    _b("HY0006", "250302004000000", "糖化血红蛋白测定", "项", "04", 6_000, "0.10"),
    # imaging and function tests
    _a("JC0001", "210102015000000", "数字化摄影（DR）胸部正位", "次", "03", 8_000),
    _b("JC0002", "210300001000000", "颅脑CT平扫", "次", "03", 18_000, "0.10"),
    _b("JC0003", "210300001010000", "胸部CT平扫", "次", "03", 20_000, "0.10"),
    _b("JC0004", "210200001000000", "头颅磁共振平扫", "次", "03", 48_000, "0.10"),
    _a("JC0005", "220600004000000", "腹部彩色多普勒超声", "次", "03", 16_000),
    _a("JC0006", "310701001000000", "常规心电图检查（十二导联）", "次", "03", 2_000),
    # treatment and procedures
    _a("ZL0001", "120400006000000", "静脉输液（第一组）", "组", "05", 1_000),
    _a("ZL0002", "120400002000000", "肌肉注射", "次", "05", 300),
    _a("ZL0003", "311000033000000", "雾化吸入", "次", "05", 1_000),
    _a("ZL0004", "120200001000000", "门诊换药（小）", "次", "05", 1_500),
    _a("SS0001", "440000001000000", "浅表清创缝合术", "次", "06", 8_000),
    # western drugs
    _a("XY0001", "XJ01CAA040A001010101445", "阿莫西林胶囊 0.25g×24粒", "盒", "09", 1_250),
    _b("XY0002", "XJ01DCC037E001010104398", "头孢克洛胶囊 0.25g×6粒", "盒", "09", 2_600),
    _a("XY0003", "XM01AEB016N001010101376", "布洛芬缓释胶囊 0.3g×20粒", "盒", "09", 1_580),
    _a("XY0004", "XA02BCO009A001010103421", "奥美拉唑肠溶胶囊 20mg×14粒", "盒", "09", 1_890),
    _b("XY0005", "XC10AAA074A001010100873", "阿托伐他汀钙片 20mg×7片", "盒", "09", 700),
    _a("XY0006", "XA10BAE089A001010100526", "盐酸二甲双胍片 0.5g×48片", "盒", "09", 900),
    _a("XY0007", "XC08CAA006A001010101134", "苯磺酸氨氯地平片 5mg×28片", "盒", "09", 1_600),
    _b("XY0008", "XJ01MAZ057A001010102879", "左氧氟沙星片 0.5g×4片", "盒", "09", 2_800),
    _a("XY0009", "XB05BBL033B002010100212", "0.9%氯化钠注射液 250ml", "袋", "09", 350),
    _b("XY0010", "XB05AAR014B002010104501", "人血白蛋白注射液 10g", "瓶", "09", 38_000, "0.10"),
    _c("XY0011", "XL03AXX128B002010100341", "胸腺五肽注射液 10mg", "支", "09", 8_500),
    _c("XY0012", "XA11GAV016X001010100178", "维生素C泡腾片 1g×10片", "支", "09", 2_800),
    # Chinese patent medicines and decoction pieces (per 10 g)
    _b("ZY0001", "ZA01BAL0082010100793", "连花清瘟胶囊 0.35g×24粒", "盒", "11", 1_480),
    _a("ZY0002", "ZA12CAF0264010100325", "复方丹参滴丸 27mg×180丸", "盒", "11", 2_500),
    _a("YP0001", "T001700182", "黄芪（饮片）", "10g", "10", 180),
    _a("YP0002", "T000300216", "当归（饮片）", "10g", "10", 350),
    _c("YP0003", "T001200095", "西洋参（饮片）", "10g", "10", 2_500),
    # consumables with an insurer price cap below the hospital's price
    _a("CL0001", "C02030516500001000000028", "一次性使用输液器", "套", "08", 250, cap=200),
    _a("CL0002", "C02030510200000000000015", "一次性使用无菌注射器 5ml", "支", "08", 60, cap=50),
    CatalogueItem(
        "CL0003",
        "C14020205300001000000091",
        "高分子石膏绷带夹板",
        "副",
        CLASS_B,
        "08",
        25_000,
        20_000,
        DEFAULT_SELFPAY_PROP,
    ),
    _c("QT0001", "990000000000001", "门诊病历本工本费", "本", "14", 100),
)

_BY_CODE: dict[str, CatalogueItem] = {
    code: item for item in CHARGE_CATALOGUE for code in (item.medins_list_codg, item.med_list_codg)
}


def find_item(code: str) -> CatalogueItem | None:
    """An item by its national code or the hospital's code; None when it is not in the catalogue."""
    return _BY_CODE.get(code)


def registration_items() -> tuple[CatalogueItem, ...]:
    return tuple(item for item in CHARGE_CATALOGUE if item.med_chrgitm_type in ("13", "02"))
