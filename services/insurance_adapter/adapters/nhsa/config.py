"""How to reach and identify ourselves to one insurance platform (one region)."""

from __future__ import annotations

from dataclasses import dataclass, field

CALL_SERVICE_PATH = "/fsi/api/rsfComIfsService/callService"
FIXMEDINS_CODE_LENGTH = 12  # the msgid begins with it: code(12) + yyyyMMddHHmmss(14) + sequence(4)


@dataclass(frozen=True, slots=True)
class NhsaClientConfig:
    base_url: str
    fixmedins_code: str  # 定点医药机构编号, e.g. "H35010200901"
    fixmedins_name: str
    mdtrtarea_admvs: str  # 就医地医保区划, e.g. "350100"
    paas_id: str
    paas_token: str = field(repr=False)
    recer_sys_code: str = "FSI_LOCAL"
    infver: str = "V1.0"
    opter_type: str = "1"  # 1 经办人, 2 自助终端, 3 移动终端
    opter: str = "medpay"
    opter_name: str = "MedPay Mesh"
    terminal_mac: str = "00-00-00-00-00-00"
    terminal_ip: str = "127.0.0.1"
    timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    path: str = CALL_SERVICE_PATH
    # This process's msgid node (0-9): one per replica keeps their msgids apart; None = random.
    msgid_node: int | None = None

    def __post_init__(self) -> None:
        if len(self.fixmedins_code) != FIXMEDINS_CODE_LENGTH:
            raise ValueError(f"fixmedins_code must have {FIXMEDINS_CODE_LENGTH} characters")
        if len(self.mdtrtarea_admvs) != 6 or not self.mdtrtarea_admvs.isdigit():
            raise ValueError("mdtrtarea_admvs must be a 6-digit region code")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
