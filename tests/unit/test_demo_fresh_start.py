from pathlib import Path

from infra.local.mesh import start_fresh


def test_a_fresh_morning_forgets_every_process_database(tmp_path: Path) -> None:
    """The simulators keep their state under data_dir too: a demo that kept the channel's old
    payments while the platform started empty reconciled to a page of false discrepancies."""
    for name in ("payment_core.sqlite3", "wechatpay_sim.sqlite3", "nhsa_sim.sqlite3-wal"):
        (tmp_path / name).write_text("old day")
    (tmp_path / "keep.txt").write_text("not a database")
    start_fresh(tmp_path, database_url=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
