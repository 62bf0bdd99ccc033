"""The key material a WeChat Pay merchant holds, generated once for the simulated world.

Directory layout (the contract between the simulator and payment-core's adapter; with real keys the
same files hold what the WeChat Pay merchant platform hands out):

    merchant_private_key.pem   商户API私钥 (apiclient_key.pem): payment-core signs requests with it
    merchant_public_key.pem    its public half: the simulator verifies requests with it
    merchant_serial_no.txt     商户API证书序列号, sent in the Authorization header
    platform_private_key.pem   the simulator signs responses and notifications with it
    platform_public_key.pem    微信支付公钥 (pub_key.pem): payment-core verifies with it
    public_key_id.txt          微信支付公钥ID ("PUB_KEY_ID_0114..."), sent as Wechatpay-Serial
    apiv3_key.txt              APIv3密钥 (32 chars): AES-256-GCM key of notification resources
    mchid.txt, appid.txt       商户号 and the bound AppID

`ensure_keys` is safe when several processes start together: it takes an exclusive `flock` on
`.lock` in the directory and writes every file by atomic rename.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from infra.simulators.key_files import exclusive_lock as _exclusive_lock
from infra.simulators.key_files import new_rsa_key as _new_rsa_key
from infra.simulators.key_files import private_pem as _private_pem
from infra.simulators.key_files import public_pem as _public_pem
from infra.simulators.key_files import write_atomically as _write_atomically

MCHID = "1900000109"
APPID = "wx8888888888888888"
_APIV3_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class WechatKeyPaths:
    directory: Path

    @property
    def merchant_private_key(self) -> Path:
        return self.directory / "merchant_private_key.pem"

    @property
    def merchant_public_key(self) -> Path:
        return self.directory / "merchant_public_key.pem"

    @property
    def merchant_serial_no(self) -> Path:
        return self.directory / "merchant_serial_no.txt"

    @property
    def platform_private_key(self) -> Path:
        return self.directory / "platform_private_key.pem"

    @property
    def platform_public_key(self) -> Path:
        return self.directory / "platform_public_key.pem"

    @property
    def public_key_id(self) -> Path:
        return self.directory / "public_key_id.txt"

    @property
    def apiv3_key(self) -> Path:
        return self.directory / "apiv3_key.txt"

    @property
    def mchid(self) -> Path:
        return self.directory / "mchid.txt"

    @property
    def appid(self) -> Path:
        return self.directory / "appid.txt"

    def all_files(self) -> tuple[Path, ...]:
        return (
            self.merchant_private_key,
            self.merchant_public_key,
            self.merchant_serial_no,
            self.platform_private_key,
            self.platform_public_key,
            self.public_key_id,
            self.apiv3_key,
            self.mchid,
            self.appid,
        )

    def is_complete(self) -> bool:
        return all(path.is_file() for path in self.all_files())


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def ensure_keys(directory: Path) -> WechatKeyPaths:
    """Create the key set once; later calls (from any process) find it and return its paths.
    Always under the lock, so nobody reads a set another process is still writing."""
    paths = WechatKeyPaths(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(directory / ".lock"):
        if not paths.is_complete():
            _write_key_set(paths)
    return paths


def _write_key_set(paths: WechatKeyPaths) -> None:
    # A partial set (a crash half-way) is regenerated whole: the pairs must match.
    merchant, platform = _new_rsa_key(), _new_rsa_key()
    _write_secret(paths.merchant_private_key, _private_pem(merchant))
    _write_public(paths.merchant_public_key, _public_pem(merchant))
    _write_public(paths.merchant_serial_no, secrets.token_hex(20).upper())
    _write_secret(paths.platform_private_key, _private_pem(platform))
    _write_public(paths.platform_public_key, _public_pem(platform))
    _write_public(paths.public_key_id, f"PUB_KEY_ID_0114{MCHID}{secrets.randbelow(10**12):012d}")
    _write_secret(paths.apiv3_key, "".join(secrets.choice(_APIV3_ALPHABET) for _ in range(32)))
    _write_public(paths.mchid, MCHID)
    _write_public(paths.appid, APPID)


def _write_secret(path: Path, text: str) -> None:
    _write_atomically(path, text, mode=0o600)


def _write_public(path: Path, text: str) -> None:
    _write_atomically(path, text, mode=0o644)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Create the simulated WeChat Pay merchant keys once.")
    default_dir = Path(os.environ.get("MEDPAY_WECHATPAY_KEY_DIR", "var/keys"))
    parser.add_argument("--dir", type=Path, default=default_dir)
    arguments = parser.parse_args(argv)
    paths = ensure_keys(arguments.dir)
    print(f"WeChat Pay keys ready in {paths.directory} (mchid {read_text(paths.mchid)})")


if __name__ == "__main__":
    main()
