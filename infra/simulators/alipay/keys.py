"""The key material of an Alipay Open Platform app (开放平台应用), generated once for the simulated world.

Directory layout (the contract between the simulator and payment-core's adapter; with a real app
the same files hold what the Alipay open platform hands out, in public-key mode, not cert mode):

    app_private_key.pem      应用私钥: payment-core signs requests (RSA2) with it
    app_public_key.pem       应用公钥 (uploaded to Alipay): the simulator verifies requests with it
    alipay_private_key.pem   the simulator signs answers and notifications with it
    alipay_public_key.pem    支付宝公钥: payment-core verifies answers and notifications with it
    app_id.txt, seller_id.txt  the app's APPID and the merchant's 2088 partner id (卖家支付宝用户号)

`ensure_keys` is safe when several processes start together: it takes an exclusive `flock` on
`.lock` in the directory and writes every file by atomic rename (the WeChat sim's scheme).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from infra.simulators.key_files import exclusive_lock as _exclusive_lock
from infra.simulators.key_files import new_rsa_key as _new_rsa_key
from infra.simulators.key_files import private_pem as _private_pem
from infra.simulators.key_files import public_pem as _public_pem
from infra.simulators.key_files import write_atomically as _write_atomically

APP_ID = "2021000000000001"
SELLER_ID = "2088000000000156"


@dataclass(frozen=True, slots=True)
class AlipayKeyPaths:
    directory: Path

    @property
    def app_private_key(self) -> Path:
        return self.directory / "app_private_key.pem"

    @property
    def app_public_key(self) -> Path:
        return self.directory / "app_public_key.pem"

    @property
    def alipay_private_key(self) -> Path:
        return self.directory / "alipay_private_key.pem"

    @property
    def alipay_public_key(self) -> Path:
        return self.directory / "alipay_public_key.pem"

    @property
    def app_id(self) -> Path:
        return self.directory / "app_id.txt"

    @property
    def seller_id(self) -> Path:
        return self.directory / "seller_id.txt"

    def all_files(self) -> tuple[Path, ...]:
        return (
            self.app_private_key,
            self.app_public_key,
            self.alipay_private_key,
            self.alipay_public_key,
            self.app_id,
            self.seller_id,
        )

    def is_complete(self) -> bool:
        return all(path.is_file() for path in self.all_files())


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def ensure_keys(directory: Path) -> AlipayKeyPaths:
    """Create the key set once; later calls (from any process) find it and return its paths."""
    paths = AlipayKeyPaths(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(directory / ".lock"):
        if not paths.is_complete():
            _write_key_set(paths)
    return paths


def _write_key_set(paths: AlipayKeyPaths) -> None:
    # A partial set (a crash half-way) is regenerated whole: the pairs must match.
    app, alipay = _new_rsa_key(), _new_rsa_key()
    _write_atomically(paths.app_private_key, _private_pem(app), mode=0o600)
    _write_atomically(paths.app_public_key, _public_pem(app), mode=0o644)
    _write_atomically(paths.alipay_private_key, _private_pem(alipay), mode=0o600)
    _write_atomically(paths.alipay_public_key, _public_pem(alipay), mode=0o644)
    _write_atomically(paths.app_id, APP_ID, mode=0o644)
    _write_atomically(paths.seller_id, SELLER_ID, mode=0o644)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Create the simulated Alipay app keys once.")
    default_dir = Path(os.environ.get("MEDPAY_ALIPAY_KEY_DIR", "var/keys/alipay"))
    parser.add_argument("--dir", type=Path, default=default_dir)
    paths = ensure_keys(parser.parse_args(argv).dir)
    print(f"Alipay keys ready in {paths.directory} (app_id {read_text(paths.app_id)})")


if __name__ == "__main__":
    main()
