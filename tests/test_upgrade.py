"""Upgrade safety (issue 20): a store written by an older wanmon (5758b19, schema 4) is backed up
and checked as it is; the upgrade leaves a backup and says how to go back, or changes nothing
when the backup cannot be written; the history before the upgrade reaches the report (status
runs rebuilt from the raw samples), and where only hourly rollups are left the report says where
history starts. The old store is made by the old code itself (git archive 5758b19), with real
checks on loopback; one site is down because its name does not resolve (in a network namespace
of the test's own, so the DNS lookup never leaves this machine)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import prereq

from conftest import REPO, wanmon
from wanmon.model import Observation
from wanmon.store import SCHEMA_VERSION, Store

OLD = "5758b19"  # schema 4: before the status runs (10) and the reports
TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # [page] timezone's default
ISOLATED = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "isolated"]

CONFIG = """\
[store]
path = "var/wanmon.db"

[schedule]
icmp_interval_s = 60

[icmp]
count = 3
interval_ms = 50
timeout_ms = 500

[snmp]
enabled = false

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"

[[sites]]
id = "gia-binh"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "core"
address = "127.0.0.2"

[[sites]]
id = "dong-cuu"
name = "UBND xã Đông Cứu"
level = "commune"
district = "Gia Bình"
parent = "gia-binh"
address = "router.dongcuu.invalid"
"""


def _has_old_commit() -> bool:
    return shutil.which("git") is not None and subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True).returncode == 0


def _isolated_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run([*ISOLATED, "true"], capture_output=True).returncode == 0


needs_old = pytest.mark.skipif(not _has_old_commit(), reason=f"commit {OLD} is not in this clone (a shallow one?): "
                                                            "the old wanmon that writes the old store is needed")
needs_netns = prereq.needs(_isolated_ok(), "unshare --net (root)", prereq.NETNS,
                           "the down site's DNS lookup must not leave the machine")


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> Path:
    """A folder with sites.toml and var/wanmon.db written by three checks of wanmon 5758b19."""
    if not _isolated_ok():
        prereq.need("unshare --net (root)", prereq.NETNS, "the down site's DNS lookup must not leave the machine")
    if not _has_old_commit():  # the clone, not the machine: a plain skip
        pytest.skip(f"commit {OLD} is not in this clone (a shallow one?)")
    root = tmp_path_factory.mktemp("old")
    code = root / "code"
    code.mkdir()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", OLD, "wanmon", "templates"], capture_output=True,
                         check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=tar, check=True)
    site = root / "site"
    site.mkdir()
    (site / "sites.toml").write_text(CONFIG, encoding="utf-8")
    for _ in range(3):
        r = wanmon("--config", "sites.toml", "check", cwd=site, env={"PYTHONPATH": str(code)}, prefix=ISOLATED)
        assert r.returncode == 0, f"the old wanmon ({OLD}) did not run here: {r.stderr}"
    db = site / "var" / "wanmon.db"
    assert _schema(db) == 4, "not a store of the old schema: was the old code run?"
    return site


def _schema(db: Path) -> int:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("PRAGMA user_version").fetchone()[0]
    finally:
        c.close()


def _copy(old_store: Path, dest: Path) -> Path:
    shutil.copytree(old_store, dest)
    return dest


def _run(site: Path, *args: str, isolated: bool = True) -> subprocess.CompletedProcess:
    return wanmon("--config", "sites.toml", *args, cwd=site, env={"PYTHONPATH": str(REPO)},
                  prefix=ISOLATED if isolated else None)


def _sample_times(db: Path) -> list[float]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in c.execute("SELECT DISTINCT ts FROM icmp_samples ORDER BY ts")]
    finally:
        c.close()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat()


@needs_old
@needs_netns
def test_a_store_of_5758b19_is_backed_up_checked_upgraded_and_its_history_reported(old_store, tmp_path):
    """Acceptance: backup and check work before upgrading; the upgrade leaves a backup; the report
    covers the time before the upgrade (the down site's downtime from its first old check), and
    the report and the page agree on the same 24 hours."""
    site = _copy(old_store, tmp_path / "site")
    db = site / "var" / "wanmon.db"
    before = db.read_bytes()
    old_times = _sample_times(db)

    r = _run(site, "store", "backup", str(tmp_path / "before-upgrade.db"))
    assert r.returncode == 0, r.stderr
    assert _schema(tmp_path / "before-upgrade.db") == 4
    r = _run(site, "store", "check")
    assert r.returncode == 0 and "passed quick_check" in r.stdout, r.stdout + r.stderr
    assert _schema(db) == 4 and db.read_bytes() == before          # neither upgraded it

    r = _run(site, "check")
    assert r.returncode == 0, r.stderr
    bak = Path(f"{db}.schema-4.bak")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bak.name) in lines[0] and "copy the backup over the store" in lines[0], r.stderr
    assert bak.exists() and stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert _schema(bak) == 4 and _sample_times(bak) == old_times   # the old store, whole
    assert _schema(db) == SCHEMA_VERSION
    upgrade_ts = _sample_times(db)[-1]
    assert upgrade_ts > old_times[-1]

    page = json.loads((site / "public" / "status.json").read_text(encoding="utf-8"))
    gen = page["generated_at"]
    r = _run(site, "report", "--from", _iso(gen - 86400), "--to", _iso(gen), "--format", "json", "--out", "-",
             isolated=False)
    assert r.returncode == 0, r.stderr
    rep = {s["id"]: s for s in json.loads(r.stdout)["sites"]}
    down = rep["dong-cuu"]
    # down from its first old check to the page's time (the last check holds until then: < the cap)
    assert down["downtime_s"] == pytest.approx(gen - old_times[0], abs=1.0), down
    assert down["downtime_s"] > upgrade_ts - old_times[0]
    assert down["unobserved_s"] == pytest.approx(86400 - (gen - old_times[0]), abs=1.0), down
    assert down["outages"] == 1 and down["availability_pct"] == 0.0
    for sid in ("core", "gia-binh"):
        assert rep[sid]["availability_pct"] == page["sites"][sid]["availability"]["24h"] == 100.0, (rep[sid], sid)
        assert rep[sid]["observed_s"] == pytest.approx(gen - old_times[0], abs=1.0)
    assert page["sites"]["dong-cuu"]["availability"]["24h"] == down["availability_pct"]
    assert json.loads(r.stdout)["history_from"] is None        # all of the old history was raw samples

    r = _run(site, "check")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr  # upgraded once: no second backup
    assert not Path(f"{db}.schema-4.1.bak").exists() and not Path(f"{db}.schema-{SCHEMA_VERSION}.bak").exists()

    # the way back the message gives: the backup copied over the store, the old wanmon runs on it
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(bak, db)
    r = wanmon("--config", "sites.toml", "check", cwd=site, env={"PYTHONPATH": str(old_store.parent / "code")},
               prefix=ISOLATED)
    assert r.returncode == 0, r.stderr
    assert _schema(db) == 4 and len(_sample_times(db)) == len(old_times) + 1


@needs_old
@needs_netns
def test_an_earlier_backup_is_never_overwritten(old_store, tmp_path):
    site = _copy(old_store, tmp_path / "site")
    db = site / "var" / "wanmon.db"
    earlier = Path(f"{db}.schema-4.bak")
    earlier.write_bytes(b"an operator's file")
    r = _run(site, "check")
    assert r.returncode == 0, r.stderr
    assert earlier.read_bytes() == b"an operator's file"
    new = Path(f"{db}.schema-4.1.bak")
    assert new.name in r.stderr and _schema(new) == 4, r.stderr


@needs_old
@needs_netns
def test_history_older_than_the_raw_samples_is_named_not_called_unobserved(old_store, tmp_path):
    """The old store's first cycle was deleted from the raw samples (as retention does after
    retention_raw_days) but stays in the hourly rollups: the report says history starts at the
    first raw sample, because the store was upgraded, in Vietnamese and in English; the time
    before it is not unobserved."""
    site = _copy(old_store, tmp_path / "site")
    db = site / "var" / "wanmon.db"
    times = _sample_times(db)
    c = sqlite3.connect(db)
    c.execute("DELETE FROM icmp_samples WHERE ts = ?", (times[0],))
    c.execute("DELETE FROM cycles WHERE started_at = (SELECT min(started_at) FROM cycles)")
    c.commit()
    c.close()
    assert _run(site, "check").returncode == 0
    start = times[0] - 3600
    r = _run(site, "report", "--from", _iso(start), "--format", "json", "--out", "-", isolated=False)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert datetime.fromisoformat(rep["history_from"]).timestamp() == pytest.approx(times[1], abs=1.0)
    hhmm = datetime.fromtimestamp(times[1], TZ).strftime("%d/%m/%Y %H:%M")
    assert f"lịch sử bắt đầu từ {hhmm} (nâng cấp kho dữ liệu)" in rep["history_note"], rep["history_note"]
    down = {s["id"]: s for s in rep["sites"]}["dong-cuu"]
    assert down["unobserved_s"] < 1.0 and down["downtime_s"] > 0, down  # the hour before is not "unobserved"
    r = _run(site, "report", "--from", _iso(start), "--format", "html", "--out", str(tmp_path / "r.html"),
             isolated=False)
    assert r.returncode == 0 and "nâng cấp kho dữ liệu" in (tmp_path / "r.html").read_text(encoding="utf-8")

    (site / "sites.toml").write_text(CONFIG + '\n[page]\nlanguage = "en"\n', encoding="utf-8")
    r = _run(site, "report", "--from", _iso(start), "--format", "json", "--out", "-", isolated=False)
    assert r.returncode == 0, r.stderr
    en = datetime.fromtimestamp(times[1], TZ).strftime("%Y-%m-%d %H:%M")
    assert f"history starts at {en}, the store was upgraded" in json.loads(r.stdout)["history_note"]


def test_backup_and_check_refuse_a_newer_schema_and_touch_nothing(write_config, tmp_path):
    cfg = write_config(CONFIG.replace("router.dongcuu.invalid", "127.0.0.3"))
    db = tmp_path / "var" / "wanmon.db"
    Store.open(db).close()
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    before = db.read_bytes()
    for args in (("store", "backup", str(tmp_path / "b.db")), ("store", "check")):
        r = wanmon("--config", str(cfg), *args, cwd=tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"schema {SCHEMA_VERSION + 1}, newer than this wanmon" in r.stderr and "upgrade wanmon" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "b.db").exists() and db.read_bytes() == before
    assert not Path(f"{db}.damaged").exists()


@needs_old
@prereq.needs(_isolated_ok() and prereq.have("unshare"), "root, unshare -m -n", prereq.NETNS,
              "for a small private tmpfs")
def test_no_room_for_the_backup_means_no_upgrade_and_one_clear_line(old_store, tmp_path):
    """The old store on a 1 MiB tmpfs with 64 KiB left (room for the lock and SQLite's shared
    memory file, not for a backup): check exits 1 with one line naming the fix, the store
    is byte for byte what it was (still schema 4) and no backup or temporary file is left; with
    room made, the next check upgrades it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sites.toml").write_text(CONFIG.replace('path = "var/wanmon.db"', f'path = "{mnt}/wanmon.db"'),
                                     encoding="utf-8")
    py = f"env PYTHONPATH={REPO} {sys.executable} -m wanmon --config sites.toml"
    src = old_store / "var" / "wanmon.db"
    out = tmp_path / "out"
    out.mkdir()
    script = f"""
set -u
ip link set lo up || exit 95
mount -t tmpfs -o size=1m tmpfs {mnt} || exit 97
cp {src} {mnt}/wanmon.db && chmod 600 {mnt}/wanmon.db || exit 98
cp {mnt}/wanmon.db {out}/before.db
dd if=/dev/zero of={mnt}/spare bs=4k count=16 >/dev/null 2>&1
dd if=/dev/zero of={mnt}/fill bs=4k >/dev/null 2>&1
rm {mnt}/spare
{py} check > {out}/full.out 2> {out}/full.err; echo $? > {out}/full.rc
ls -a {mnt} > {out}/full.ls
cp {mnt}/wanmon.db {out}/after.db
rm -f {mnt}/fill
{py} check > {out}/room.out 2> {out}/room.err; echo $? > {out}/room.rc
ls -a {mnt} > {out}/room.ls
cp {mnt}/wanmon.db.schema-4.bak {out}/bak.db 2>/dev/null
"""
    cp = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script], cwd=site,
                        capture_output=True, text=True, timeout=180)
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    err = (out / "full.err").read_text()
    assert (out / "full.rc").read_text().strip() == "1", err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "was not upgraded" in err and "disk is full" in err and "nothing was changed" in err, err
    assert "free at least" in err and "run again" in err, err
    assert (out / "after.db").read_bytes() == (out / "before.db").read_bytes()
    left = set((out / "full.ls").read_text().split())  # no backup, no temporary file
    assert left <= {".", "..", "fill", "wanmon.db", "wanmon.db.lock", "wanmon.db-wal", "wanmon.db-shm"}, left
    room = (out / "room.err").read_text()
    assert (out / "room.rc").read_text().strip() == "0", room
    assert "wanmon.db.schema-4.bak" in (out / "room.ls").read_text() and _schema(out / "bak.db") == 4, room


# -- the rebuild is the cycle's own method (pure logic over the real store) ----------------------

def _obs(site: str, ts: float, status: str) -> Observation:
    ok = status in ("up", "degraded")
    return Observation(site_id=site, name=site, level="province", district=None, address="127.0.0.1", ts=ts,
                       status=status, reason=None if ok else "no reply", sent=3, received=3 if ok else 0,
                       loss_pct=0.0 if ok else 100.0, rtt_min_ms=1.0 if ok else None, rtt_avg_ms=1.0 if ok else None,
                       rtt_max_ms=1.0 if ok else None, jitter_ms=None)


def test_runs_rebuilt_from_samples_are_the_runs_the_cycles_wrote(tmp_path):
    """A random history (statuses, gaps longer than the cap, maintenance, a site that stops) recorded
    cycle by cycle; the same store with its runs wiped and rebuilt from the raw samples has the same
    runs, and the same open runs."""
    import random

    rng = random.Random(20)
    cap = 120.0
    st = Store.open(tmp_path / "w.db")
    maint_at: dict[float, set] = {}
    ts = 1_800_000_000.0
    for i in range(400):
        ts += rng.choice([60.0, 60.0, 60.0, 61.5, 200.0])
        sites = ["a", "b", "c"] if i < 300 else ["a", "b"]
        maint_at[ts] = {"b"} if 100 <= i < 140 else set()
        obs = [_obs(s, ts, rng.choice(["up", "up", "up", "degraded", "down", "unreachable", "unknown"]))
               for s in sites]
        st.record_cycle(ts, ts + 1, obs, maintenance=maint_at[ts], run_cap_s=cap)

    def runs():
        closed = sorted(st.conn.execute("SELECT site_id, status, maint, start_ts, end_ts FROM status_runs"))
        open_ = sorted(st.conn.execute("SELECT site_id, status, run_maint, run_start FROM site_state"))
        return closed, open_

    written = runs()
    assert len(written[0]) > 300
    st.conn.execute("DELETE FROM status_runs")
    st.conn.execute("UPDATE site_state SET run_start = NULL, run_maint = 0")
    st.set_meta(runs_rebuild="pending")
    assert st.rebuild_runs(cap, ts, lambda t: maint_at[t]) == len(written[0]) + 3
    assert runs() == written
    assert st.meta("runs_rebuild") is None and st.meta("history_from") is None  # no rollup is older
    assert st.rebuild_runs(cap, ts) is None                                      # once
    st.close()
