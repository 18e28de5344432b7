"""The embedded store: schema, atomic cycles, state transitions, rollups, retention, permissions."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys

import pytest

import prereq

from wanmon.model import Observation
from wanmon.store import SCHEMA_VERSION, CycleLock, Store, StoreError
from wanmon.errors import StoreBusyError
from pathlib import Path
from conftest import damage_store


def obs(site="a", ts=1000.0, status="up", received=3, rtt=1.0):
    return Observation(
        site_id=site, name=site.upper(), level="province", district=None, address="127.0.0.1", ts=ts,
        status=status, reason=None if received else "no reply", sent=3, received=received,
        loss_pct=100.0 * (3 - received) / 3, rtt_min_ms=rtt if received else None,
        rtt_avg_ms=rtt if received else None, rtt_max_ms=rtt if received else None, jitter_ms=None,
    )


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "var" / "w.db")
    yield s
    s.close()


def test_creates_private_files_and_schema(tmp_path):
    path = tmp_path / "var" / "w.db"
    s = Store.open(path)
    s.record_cycle(1.0, 2.0, [obs()])
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for f in path.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    # Reopening does not migrate again nor lose data.
    s2 = Store.open(path)
    assert s2.last_cycle()["sites"] == 1
    s2.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "w.db"
    Store.open(path).close()
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    with pytest.raises(StoreError, match="upgrade wanmon"):
        Store.open(path)


def test_state_since_and_failures(store):
    store.record_cycle(100, 101, [obs(ts=100)])
    store.record_cycle(160, 161, [obs(ts=160)])
    (st,) = store.states()
    assert (st.status, st.since, st.consecutive_failures, st.last_reachable_ts) == ("up", 100, 0, 160)
    store.record_cycle(220, 221, [obs(ts=220, status="down", received=0)])
    store.record_cycle(280, 281, [obs(ts=280, status="down", received=0)])
    (st,) = store.states()
    assert (st.status, st.since, st.consecutive_failures, st.last_reachable_ts) == ("down", 220, 2, 160)
    assert st.reason == "no reply"
    store.record_cycle(340, 341, [obs(ts=340)])
    (st,) = store.states()
    assert (st.status, st.since, st.consecutive_failures) == ("up", 340, 0)


def test_hourly_rollup(store):
    store.record_cycle(3600, 3601, [obs(ts=3600, rtt=2.0)])
    store.record_cycle(3660, 3661, [obs(ts=3660, rtt=4.0)])
    store.record_cycle(3720, 3721, [obs(ts=3720, status="down", received=0)])
    store.record_cycle(7200, 7201, [obs(ts=7200, rtt=1.0)])
    rows = store.conn.execute(
        "SELECT hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n, rtt_min_ms, rtt_max_ms FROM icmp_hourly ORDER BY hour"
    ).fetchall()
    assert rows == [(3600, 3, 2, 9, 6, 18.0, 6, 2.0, 4.0), (7200, 1, 1, 3, 3, 3.0, 3, 1.0, 1.0)]


def test_retention(store):
    day = 86400
    now = 100 * day
    store.record_cycle(now - 40 * day, now - 40 * day + 1, [obs(ts=now - 40 * day)])
    store.record_cycle(now - 1 * day, now - 1 * day + 1, [obs(ts=now - 1 * day)])
    n_raw, n_roll = store.apply_retention(now, raw_days=35, rollup_days=30)
    assert n_raw == 1 and n_roll == 1
    assert [r[0] for r in store.conn.execute("SELECT ts FROM icmp_samples")] == [now - day]
    assert store.conn.execute("SELECT count(*) FROM cycles").fetchone()[0] == 1


def test_cycle_is_atomic(store):
    bad = obs(site="b")
    object.__setattr__(bad, "status", None)  # violates NOT NULL: the whole cycle must roll back
    with pytest.raises(sqlite3.IntegrityError):
        store.record_cycle(1, 2, [obs(site="a"), bad])
    assert store.conn.execute("SELECT count(*) FROM cycles").fetchone()[0] == 0
    assert store.conn.execute("SELECT count(*) FROM icmp_samples").fetchone()[0] == 0
    assert store.states() == []


def test_cycle_lock_excludes_second_holder(tmp_path):
    path = tmp_path / "var" / "w.db"
    with CycleLock(path):
        with pytest.raises(StoreBusyError, match="another wanmon cycle is running") as ei:
            with CycleLock(path):
                pass
        assert "pid " in str(ei.value)
    with CycleLock(path):  # released on exit
        pass


def test_reader_while_writer_holds_transaction(tmp_path):
    path = tmp_path / "w.db"
    w = Store.open(path)
    w.record_cycle(1, 2, [obs()])
    w.conn.execute("BEGIN IMMEDIATE")
    w.conn.execute("DELETE FROM site_state")
    r = Store.open_readonly(path)
    assert len(r.states()) == 1  # WAL: the reader sees the last committed cycle, no lock error
    w.conn.execute("ROLLBACK")
    r.close()
    w.close()


def test_an_emptied_store_is_refused_by_check_and_status_and_left_as_it_was(write_config, tmp_path):
    """`: > wanmon.db` (issue 11): no new history at cycle 1 over the old one, no advice to run check."""
    from conftest import wanmon

    cfg = write_config()
    assert wanmon("--config", str(cfg), "check", cwd=tmp_path).returncode == 0
    db = cfg.parent / "var" / "wanmon.db"
    db.write_bytes(b"")
    for args in (["check"], ["status"], ["render"]):
        r = wanmon("--config", str(cfg), *args, cwd=tmp_path)
        assert r.returncode != 0, (args, r.stdout, r.stderr)
        assert "exists but is empty" in r.stderr and "backup" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "wanmon check" not in r.stderr, (args, r.stderr)
        assert db.stat().st_size == 0, args          # left as it was


def test_a_foreign_sqlite_file_is_refused_and_a_new_path_is_created(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a wanmon store"):
        Store.open(other)
    assert other.read_bytes() == before
    fresh = tmp_path / "new" / "wanmon.db"
    st = Store.open(fresh)
    assert st.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    st.close()
    assert sorted(p.name for p in fresh.parent.iterdir() if not p.name.startswith("wanmon.db-")) == ["wanmon.db"]
    st = Store.open(fresh)  # and it opens again as a store
    st.close()


def test_store_backup_while_it_is_open_and_store_check_finds_damage(write_config, tmp_path):
    from conftest import wanmon

    cfg = write_config()
    for _ in range(3):
        assert wanmon("--config", str(cfg), "check", cwd=tmp_path).returncode == 0
    db = cfg.parent / "var" / "wanmon.db"
    writer = Store.open(db)  # a writer holds the store open, mid-transaction
    writer.conn.execute("BEGIN IMMEDIATE")
    try:
        r = wanmon("--config", str(cfg), "store", "backup", str(tmp_path / "b.db"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    finally:
        writer.conn.execute("ROLLBACK")
        writer.close()
    copy = Store.open_readonly(tmp_path / "b.db")
    assert copy.conn.execute("SELECT count(*) FROM cycles").fetchone()[0] == 3
    copy.close()
    r = wanmon("--config", str(cfg), "store", "backup", str(tmp_path / "b.db"), cwd=tmp_path)
    assert r.returncode != 0 and "already exists" in r.stderr          # never over a file
    r = wanmon("--config", str(cfg), "store", "check", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout + r.stderr

    # damage in the middle of the file: quick_check finds it, the message says what to do
    raw = bytearray((tmp_path / "b.db").read_bytes())
    page = 4096
    assert len(raw) > 6 * page
    raw[3 * page: 4 * page] = bytes([0xA5]) * page
    (cfg.parent / "var" / "wanmon.db").write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        (cfg.parent / "var" / f"wanmon.db{suffix}").unlink(missing_ok=True)
    r = wanmon("--config", str(cfg), "store", "check", cwd=tmp_path)
    assert r.returncode == 1 and "is damaged" in r.stderr and "backup" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


@prereq.needs(prereq.is_root() and prereq.have("unshare"), "root and unshare -m",
              prereq.ROOT + "; Debian package util-linux", "for a small private tmpfs")
def test_a_full_disk_is_one_clear_line_and_the_store_stays_intact(tmp_path):
    """The store on a 1 MiB tmpfs (in a private mount namespace, gone with the script): fill it,
    run check: exit 1, 'the disk … is full', no traceback; free it: the earlier cycles are there."""
    from conftest import MINIMAL

    mnt = tmp_path / "small"
    mnt.mkdir()
    cfg = tmp_path / "sites.toml"
    cfg.write_text(MINIMAL.replace('path = "var/wanmon.db"', f'path = "{mnt}/wanmon.db"'), encoding="utf-8")
    py = f"{sys.executable} -m wanmon --config {cfg}"
    script = f"""
set -u
mount -t tmpfs -o size=1m tmpfs {mnt} || exit 97
{py} check >/dev/null 2>&1 || exit 98
{py} check >/dev/null 2>&1 || exit 98
dd if=/dev/zero of={mnt}/fill bs=4k >/dev/null 2>&1
{py} check > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
rm -f {mnt}/fill
{py} store check > {tmp_path}/after.out 2>&1; echo $? > {tmp_path}/after.rc
{py} status --json > {tmp_path}/status.json 2>/dev/null
"""
    cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=tmp_path,
                        capture_output=True, text=True, timeout=180)
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", err
    assert "is full" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "after.rc").read_text().strip() == "0", (tmp_path / "after.out").read_text()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_cycle"]["id"] >= 2, status["last_cycle"]


def test_damage_stops_writes_says_so_and_a_restored_backup_resumes(write_config, tmp_path):
    """quick_check finds damage: check records nothing (exit 1, says why), status and the page say so;
    the backup restored and checked, cycles resume (issue 11)."""
    from conftest import wanmon

    cfg = write_config()
    run = lambda *a: wanmon("--config", str(cfg), *a, cwd=tmp_path)  # noqa: E731
    for _ in range(2):
        assert run("check").returncode == 0
    assert run("store", "backup", str(tmp_path / "good.db")).returncode == 0
    db = cfg.parent / "var" / "wanmon.db"
    damage_store(db)

    r = run("store", "check")
    assert r.returncode == 1 and "writes are stopped" in r.stderr, r.stderr
    damaged_bytes = db.read_bytes()
    r = run("check")
    assert r.returncode == 1 and "was found damaged" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert db.read_bytes() == damaged_bytes                       # nothing written to it
    r = run("status")
    assert "STORE DAMAGED" in r.stderr, r.stdout + r.stderr
    r = run("render", "--out", str(tmp_path / "web"))
    if r.returncode == 0:  # what the damaged file still gives, under a banner that says so
        assert "Kho dữ liệu của wanmon bị hỏng" in (tmp_path / "web" / "index.html").read_text(encoding="utf-8")

    db.write_bytes((tmp_path / "good.db").read_bytes())          # restore (README, 'Backup and restore')
    r = run("store", "check")
    assert r.returncode == 0, r.stderr
    assert run("check").returncode == 0
    r = run("status", "--json")
    assert json.loads(r.stdout)["store_damaged"] is None and json.loads(r.stdout)["last_cycle"]["id"] == 3


@prereq.needs(prereq.is_root() and prereq.have("unshare", "setpriv"), "root, unshare -m and setpriv",
              prereq.ROOT + "; Debian package util-linux")
def test_read_only_file_system_and_another_users_status_are_one_clear_line(tmp_path):
    """The store's file system remounted read-only: check says so; a user without read access to
    the store runs status: 'permission denied for user nobody'. No traceback (issue 11)."""
    import tempfile

    from as_nobody import AS_NOBODY, readable_copy, venv_view
    from conftest import MINIMAL

    # a folder uid 65534 can reach (pytest's tmp_path is in root's 0700 folder), with a copy of
    # wanmon it can import and the venv seen through a bind mount: the checkout may sit in a
    # 0700 folder too (as_nobody.py)
    work = Path(tempfile.mkdtemp(prefix="wanmon-ro-"))
    try:
        os.chmod(work, 0o755)
        src = readable_copy(work)
        view, nobody_py = venv_view(work)
        mnt = work / "small"
        mnt.mkdir()
        cfg = work / "sites.toml"
        cfg.write_text(MINIMAL.replace('path = "var/wanmon.db"', f'path = "{mnt}/var/wanmon.db"'), encoding="utf-8")
        os.chmod(cfg, 0o644)
        py = f"{sys.executable} -m wanmon --config {cfg}"
        nobody = f"PYTHONPATH={src} {' '.join(AS_NOBODY)} {nobody_py} -m wanmon --config {cfg}"
        script = f"""
set -u
mount -t tmpfs -o size=4m,mode=0755 tmpfs {mnt} || exit 97
{py} check >/dev/null 2>&1 || exit 98
{view} || exit 95
{nobody} status > {work}/nobody.out 2> {work}/nobody.err; echo $? > {work}/nobody.rc
mount -o remount,ro {mnt} || exit 96
{py} check > {work}/ro.out 2> {work}/ro.err; echo $? > {work}/ro.rc
{py} -v check > /dev/null 2> {work}/ro-v.err || :
"""
        cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=work,
                            capture_output=True, text=True, timeout=180)
        assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
        err = (work / "nobody.err").read_text()
        assert (work / "nobody.rc").read_text().strip() == "1", err
        assert "permission denied for user nobody" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        err = (work / "ro.err").read_text()
        assert (work / "ro.rc").read_text().strip() == "1", err
        assert "read-only" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        err = (work / "ro-v.err").read_text()                    # -v: the traceback for whoever debugs it
        assert "Traceback" in err and "read-only" in err.splitlines()[-1], err
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_site_state_and_alert_streaks_move_with_one_status_machine(store):
    """The store's `since` and the status-change log, and the alert engine's streak, come from
    status.advance: over a random history (seeded) they agree at every cycle."""
    import random

    from wanmon.alerts.engine import evaluate
    from wanmon.config import AlertSettings

    rules = AlertSettings(noc=("noc@x.example",), guard_min_sites=99)
    rng = random.Random(11)
    alerts, changes, prev = {}, 0, None
    for i in range(200):
        ts = 1000.0 + 60 * i
        status = rng.choice(["up", "up", "up", "degraded", "down"])
        store.record_cycle(ts, ts + 1, [obs(ts=ts, status=status, received=0 if status == "down" else 3)])
        alerts, _, _ = evaluate(alerts, {"a": status}, ts, rules, {"a": None})
        (st,) = store.states()
        a = alerts["a"]
        assert (st.status, st.since) == (a.streak_status, a.streak_since), i
        # a change, or a problem at the first observation (logged as first seen)
        changes += prev != status if prev is not None else status != "up"
        prev = status
    logged = store.conn.execute("SELECT count(*) FROM events WHERE kind = 'status'").fetchone()[0]
    assert logged == changes > 50


def test_damage_found_is_told_to_the_noc_once_by_direct_mail_and_retried_after_a_failure(write_config, tmp_path):
    """The outbox is in the damaged store: the NOC's notice goes straight to a real SMTP
    server (aiosmtpd), once; with the relay down, the next check after the back-off sends it."""
    from conftest import MINIMAL, wanmon
    from smtp_server import SMTPServer

    with SMTPServer() as smtp:
        cfg = write_config(MINIMAL + "\n" + smtp.toml() + '\n[alerts]\nnoc = ["noc@x.example"]\nconfirm_cycles = 99\n')
        run = lambda *a: wanmon("--config", str(cfg), *a, cwd=tmp_path)  # noqa: E731
        for _ in range(2):
            assert run("check").returncode == 0
        db = cfg.parent / "var" / "wanmon.db"
        damage_store(db)

        smtp.stop()                                                    # the relay is down when it is found
        r = run("store", "check")
        assert r.returncode == 1 and "writes are stopped" in r.stderr, r.stderr
        assert "the NOC was not told" in r.stderr and "Traceback" not in r.stderr, r.stderr
        mark_path = cfg.parent / "var" / "wanmon.db.damaged"
        mark = json.loads(mark_path.read_text(encoding="utf-8"))
        assert mark["noc_tries"] == 1 and "noc_told_ts" not in mark, mark
        smtp.start()
        assert run("check").returncode == 1                          # within the back-off: not tried again
        assert smtp.snapshot() == []
        mark["noc_last_try_ts"] -= 120                                 # two minutes later
        mark_path.write_text(json.dumps(mark), encoding="utf-8")
        r = run("check")
        assert r.returncode == 1 and "was found damaged" in r.stderr, r.stderr
        (m,) = smtp.wait_for(1, timeout=5)
        assert m.rcpt_tos == ["noc@x.example"]
        assert m.subject == "[wanmon] Kho dữ liệu bị hỏng: đã dừng ghi"
        assert str(db) in m.text and "wanmon store check" in m.text and "SQLite báo:" in m.text, m.text
        assert '<html lang="vi">' in m.html and "<title>" in m.html
        for _ in range(2):
            assert run("check").returncode == 1
        assert run("store", "check").returncode == 1
        assert len(smtp.snapshot()) == 1, "the NOC was told more than once"
        assert json.loads(mark_path.read_text(encoding="utf-8"))["noc_told_ts"]


def test_a_store_locked_by_another_process_is_one_clear_line_and_nothing_is_lost(write_config, tmp_path):
    """Another program holds the store's write lock past the 10 s busy timeout (a long
    transaction, a stuck tool): `check` says 'locked', how to find the holder, exit 1, no
    traceback; once it lets go, the next check records (issue 11, item 5)."""
    from conftest import wanmon

    cfg = write_config()
    run = lambda *a: wanmon("--config", str(cfg), *a, cwd=tmp_path)  # noqa: E731
    assert run("check").returncode == 0
    db = cfg.parent / "var" / "wanmon.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # holds the lock until its stdin closes
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run("check")
        assert r.returncode == 1, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("wanmon: error:")]
        assert len(lines) == 1 and "is locked by another process" in lines[0] and "fuser" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    finally:
        holder.stdin.close()                                       # it lets go
        holder.wait(timeout=30)
    assert run("check").returncode == 0
    r = run("status", "--json")
    assert json.loads(r.stdout)["last_cycle"]["id"] == 2


def test_status_runs_are_the_runs_overlapping_the_period_whether_it_reaches_back_over_all_history_or_not(store):
    """Store.status_runs scans the table when every run ends after the period's start and uses
    the end_ts index otherwise: the same rows either way (runs touching an edge are not in it)."""
    runs = [(f"s{i % 7}", ("up", "down", "unreachable")[i % 3], i % 5 == 0, 1000.0 + 60 * i, 1060.0 + 60 * i)
            for i in range(300)]
    with store.transaction():
        store.conn.executemany("INSERT INTO status_runs (site_id, status, maint, start_ts, end_ts) VALUES (?,?,?,?,?)",
                               [(s, st, int(m), a, b) for s, st, m, a, b in runs])
    for start, end in ((0.0, 5000.0), (1000.0, 99999.0), (1060.0, 1240.0), (7000.0, 12000.0), (30000.0, 40000.0)):
        want = sorted((s, st, int(m), a, b) for s, st, m, a, b in runs if b > start and a < end)
        got = sorted(store.status_runs(start, end, now=0.0, cap_s=120.0))
        assert got == want, (start, end)
    plan = " ".join(str(r) for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM status_runs WHERE end_ts > 5000 AND start_ts < 6000"))
    assert "status_runs_end" in plan  # the index the late periods use is there
