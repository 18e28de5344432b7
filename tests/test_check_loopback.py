"""`wanmon check` end to end with real ICMP to loopback (IPv4 and ::1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

from conftest import MINIMAL, REPO, wanmon
from waiting import MODIFY, OPEN, FileWrites

ICMP_KEYS = {"sent", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms"}

# Resolving a name that is not in /etc/hosts would query the machine's DNS
# server; run such checks in a private network namespace (only `lo`), where
# that query fails at once without leaving the machine.
ISOLATED = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "isolated"]


def isolated_ok() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run([*ISOLATED, "true"], capture_output=True).returncode == 0


def test_check_json_all_up(write_config, tmp_path):
    path = write_config()
    r = wanmon("--config", str(path), "check", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sites = json.loads(r.stdout)
    assert [s["id"] for s in sites] == ["dc-core", "tien-du", "tien-du-phat-tich"]
    for s in sites:
        assert {"id", "name", "level", "district", "address", "status", "icmp"} <= s.keys()
        assert set(s["icmp"]) >= ICMP_KEYS
        assert s["status"] == "up", s
        assert (s["icmp"]["sent"], s["icmp"]["received"], s["icmp"]["loss_pct"]) == (3, 3, 0.0)
        assert 0 <= s["icmp"]["rtt_min_ms"] <= s["icmp"]["rtt_avg_ms"] <= s["icmp"]["rtt_max_ms"] < 50
    assert sites[1]["district"] == "Tiên Du" and sites[1]["name"] == "UBND huyện Tiên Du"
    assert sites[2]["ip"] == "::1"
    # recorded in the store, relative to the config's folder
    db = tmp_path / "var" / "wanmon.db"
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM icmp_samples").fetchone()[0] == 3
    assert con.execute("SELECT count(*) FROM site_state WHERE status='up'").fetchone()[0] == 3


def test_summary_and_status(write_config, tmp_path):
    path = write_config()
    r = wanmon("--config", str(path), "check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "All 3 sites up" in r.stdout
    r = wanmon("--config", str(path), "status", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["last_cycle"]["sites"] == 3
    assert [s["status"] for s in data["sites"]] == ["up", "up", "up"]
    r = wanmon("--config", str(path), "status", cwd=tmp_path)
    assert r.returncode == 0 and "tien-du" in r.stdout


def test_status_before_any_check_says_what_to_do(write_config, tmp_path):
    r = wanmon("--config", str(write_config()), "status", cwd=tmp_path)
    assert r.returncode == 1
    assert "run `wanmon check` first" in r.stderr


def test_hostname_resolves(write_config, tmp_path):
    path = write_config(MINIMAL.replace('address = "127.0.0.1"', 'address = "localhost"'))
    r = wanmon("--config", str(path), "check", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    site = json.loads(r.stdout)[0]
    assert site["status"] == "up" and site["ip"] in ("127.0.0.1", "::1")


@prereq.needs(isolated_ok(), "unshare --net (root)", prereq.NETNS, "to keep DNS lookups off the network")
def test_a_name_and_a_literal_of_the_same_host_are_reported(write_config, tmp_path):
    """'localhost' and the loopback literals in one file: one router counted twice (issue 11)."""
    # dc-core is 127.0.0.1 and tien-du-phat-tich ::1: 'localhost' resolves to one of them
    path = write_config(MINIMAL.replace('address = "127.10.2.1"', 'address = "localhost"'))
    r = wanmon("-v", "--config", str(path), "check", "--json", cwd=tmp_path, prefix=ISOLATED)
    assert r.returncode == 0, r.stderr
    ip = ip_by_site(r.stdout)["tien-du"]
    same = [sid for sid, s in ip_by_site(r.stdout).items() if s == ip]
    assert len(same) == 2 and "tien-du" in same, ip_by_site(r.stdout)
    assert "are the same host" in r.stderr and all(f"'{sid}'" in r.stderr for sid in same), r.stderr


def ip_by_site(stdout: str) -> dict[str, str]:
    return {s["id"]: s["ip"] for s in json.loads(stdout)}


@prereq.needs(isolated_ok(), "unshare --net (root)", prereq.NETNS, "to keep DNS lookups off the network")
def test_unresolvable_hostname_is_a_result_not_a_crash(write_config, tmp_path):
    path = write_config(MINIMAL.replace('address = "127.10.2.1"', 'address = "router.tiendu.invalid"'))
    r = wanmon("--config", str(path), "check", "--json", cwd=tmp_path, prefix=ISOLATED)
    assert r.returncode == 0, r.stderr
    sites = {s["id"]: s for s in json.loads(r.stdout)}
    bad = sites["tien-du"]
    assert bad["status"] == "down" and "does not resolve" in bad["reason"]
    assert bad["icmp"]["received"] == 0 and bad["icmp"]["rtt_avg_ms"] is None
    # its commune still answers, and is reported up (it is not unreachable: it answered)
    assert sites["tien-du-phat-tich"]["status"] == "up"
    assert sites["dc-core"]["status"] == "up"


def _slow_config(write_config):
    return write_config(MINIMAL.replace("count = 3", "count = 30").replace("interval_ms = 50", "interval_ms = 100"))


def _start_check(path, cwd):
    cmd = [sys.executable, "-m", "wanmon", "--config", str(path), "check", "--json"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_lock_taken(w: FileWrites, lock: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until `proc` holds the cycle lock: it writes its pid into the lock file once it has it
    (each write wakes us: no polling, no guessed sleep)."""
    deadline = time.monotonic() + timeout
    while not (lock.exists() and f"pid {proc.pid} " in lock.read_text()):
        assert proc.poll() is None, "the check ended before it took the lock"
        w.wait(lock.name, MODIFY, deadline - time.monotonic())


def test_second_check_exits_75_while_one_runs(write_config, tmp_path):
    """Acceptance 6: while a cycle runs, a second `wanmon check` exits 75 at once; the store stays intact."""
    path = _slow_config(write_config)
    lock = tmp_path / "var" / "wanmon.db.lock"
    lock.parent.mkdir(mode=0o700)  # to watch it from before the first check starts
    with FileWrites(lock.parent) as w:
        first = _start_check(path, tmp_path)
        _wait_lock_taken(w, lock, first)
    second = subprocess.run([sys.executable, "-m", "wanmon", "--config", str(path), "check", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    first_still_running = first.poll() is None  # the second did not wait for the lock
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 75, second.stderr
    assert "another wanmon cycle is running" in second.stderr and f"pid {first.pid}" in second.stderr
    assert second.stdout == ""
    assert first_still_running
    assert all(s["icmp"]["loss_pct"] == 0 for s in json.loads(out))
    con = sqlite3.connect(tmp_path / "var" / "wanmon.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM cycles").fetchone()[0] == 1
    # a later run works normally: the lock did not go stale
    r = wanmon("--config", str(path), "check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_two_checks_started_together(write_config, tmp_path):
    """Started at the same instant: each either runs its cycle or exits 75; never a corrupt store."""
    path = _slow_config(write_config)
    procs = [_start_check(path, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes) <= {0, 75} and 0 in codes, (codes, [o[1] for o in outs])
    for p, (out, err) in zip(procs, outs):
        if p.returncode == 75:
            assert "another wanmon cycle is running" in err and out == ""
        else:
            assert len(json.loads(out)) == 3
    con = sqlite3.connect(tmp_path / "var" / "wanmon.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM cycles").fetchone()[0] == codes.count(0)


def _posix_write_locks(pid: int) -> int:
    """How many POSIX (fcntl) write locks pid holds (/proc/locks): SQLite's, while it writes the
    store or rebuilds its WAL index; the cycle lock is a flock and is not counted."""
    with open("/proc/locks", encoding="ascii") as f:
        return sum(1 for line in f if line.split()[1:5] == ["POSIX", "ADVISORY", "WRITE", str(pid)])


def _stop_outside_sqlite_locks(p: subprocess.Popen) -> None:
    """SIGSTOP p at an instant it holds no SQLite write lock (stopped inside one, it would keep
    readers out until SIGCONT: SQLite's "locking protocol" error): stop, look, go on if not."""
    deadline = time.monotonic() + 60
    while True:
        os.kill(p.pid, signal.SIGSTOP)
        if _posix_write_locks(p.pid) == 0:
            return
        os.kill(p.pid, signal.SIGCONT)
        assert p.poll() is None and time.monotonic() < deadline, "the check never left SQLite's write locks"
        time.sleep(0.005)


def test_status_reads_while_check_runs(write_config, tmp_path):
    """status answers from the store while a check is in the middle of its cycle, lock held.
    The check is held there (SIGSTOP once it has the store open, SIGCONT after status) rather
    than given a sweep long enough for status to start: on a busy machine, status's start
    outlasted a 2 s sweep."""
    path = write_config()
    assert wanmon("--config", str(path), "check", cwd=tmp_path).returncode == 0
    slow = path.read_text().replace("count = 3", "count = 20").replace("interval_ms = 50", "interval_ms = 100")
    path.write_text(slow)
    lock = tmp_path / "var" / "wanmon.db.lock"
    with FileWrites(lock.parent) as w:
        p = subprocess.Popen([sys.executable, "-m", "wanmon", "--config", str(path), "check"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_lock_taken(w, lock, p)
        w.wait("wanmon.db", OPEN)  # the cycle has the store open: it is sweeping (2 s)
    _stop_outside_sqlite_locks(p)  # ... and stays in its cycle until status has answered
    try:
        r = wanmon("--config", str(path), "status", "--json", cwd=tmp_path)
        check_running = p.poll() is None and f"pid {p.pid} " in lock.read_text()
    finally:
        os.kill(p.pid, signal.SIGCONT)
    p.communicate(timeout=60)
    assert p.returncode == 0
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["sites"]) == 3
    assert check_running, "status did not run while the check did"


def test_shipped_inventory_one_cycle(tmp_path):
    """Acceptance 1 (the main job): one cycle over the shipped 177 sites, all loopback."""
    cfg = tmp_path / "sites.toml"
    cfg.write_text((REPO / "sites.toml").read_text(encoding="utf-8"), encoding="utf-8")
    r = wanmon("--config", str(cfg), "check", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sites = json.loads(r.stdout)
    assert len(sites) == 177
    assert sum(s["status"] == "up" for s in sites) == 177

    # issue 13, acceptance 2: the report in every format for the shipped config
    month = time.strftime("%Y-%m")
    for fmt in ("html", "pdf", "csv", "json"):
        out = tmp_path / f"r.{fmt}"
        r = wanmon("--config", str(cfg), "report", "--month", month, "--format", fmt, "--out", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 0
    j = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert len(j["sites"]) == 177 and all(s["availability_pct"] == 100.0 for s in j["sites"])
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "r.pdf"), "-"], capture_output=True, check=True,
                          text=True).stdout
    assert "Báo cáo tỷ lệ sẵn sàng mạng WAN tỉnh Bắc Ninh" in text
    assert "Cơ quan cấp tỉnh" in text and "UBND cấp xã" in text and "UBND phường Đại Phúc" in text


WITH_NET_RAW = ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]  # setpriv's options


@prereq.needs(prereq.is_root() and prereq.have("setpriv", "unshare"), "root, setpriv and unshare -m",
              prereq.ROOT + "; Debian package util-linux", "to run wanmon as another user")
def test_non_root_with_cap_net_raw():
    """A non-root user holding only CAP_NET_RAW (as under systemd AmbientCapabilities) can sweep."""
    import tempfile

    from as_nobody import command, readable_copy

    # pytest's tmp_path sits in a 0700 folder of root's, and so may the checkout: a folder uid
    # 65534 can reach, with a copy of wanmon it can import (as_nobody.py)
    work = Path(tempfile.mkdtemp(prefix="wanmon-nobody-"))
    try:
        os.chmod(work, 0o777)
        readable_copy(work)
        path = work / "sites.toml"
        path.write_text(MINIMAL, encoding="utf-8")
        os.chmod(path, 0o644)
        r = subprocess.run(command(work, ["-m", "wanmon", "--config", str(path), "check", "--json"],
                                   setpriv_opts=WITH_NET_RAW),
                           cwd=work, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert all(s["status"] == "up" for s in json.loads(r.stdout))
        assert (work / "var" / "wanmon.db").stat().st_uid == 65534
    finally:
        shutil.rmtree(work, ignore_errors=True)


@prereq.needs(prereq.is_root() and prereq.have("setcap"), "root and setcap", prereq.ROOT + "; Debian package libcap2-bin")
def test_check_warns_when_its_interpreter_is_shared_and_has_cap_net_raw(write_config, tmp_path):
    """setcap through a venv's bin/python lands on the interpreter it links to (issue 11). Here a copy
    of the interpreter plays the system's: a symlink to it with cap_net_raw set warns; a venv made
    with --copies, whose own python3 carries the capability, does not."""
    import venv

    real = Path(os.path.realpath(sys.executable))
    import site as site_mod

    site = site_mod.getsitepackages()[0]  # this venv's packages, for the interpreters made below
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), site])}
    cfg = write_config()

    shared = tmp_path / "system" / real.name
    shared.parent.mkdir()
    shutil.copy2(real, shared)
    (tmp_path / "linked" / "bin").mkdir(parents=True)
    link = tmp_path / "linked" / "bin" / "python"
    link.symlink_to(shared)
    own = tmp_path / "own"
    venv.EnvBuilder(symlinks=False, with_pip=False).create(own)
    own_py = Path(os.path.realpath(own / "bin" / "python3"))
    assert not own_py.is_symlink() and str(own_py).startswith(str(own))
    for f in (shared, own_py):
        subprocess.run(["setcap", "cap_net_raw+ep", str(f)], check=True)

    def check_with(python: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "wanmon", "--config", str(cfg), "check"], cwd=tmp_path,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=120)

    r = check_with(link)
    assert r.returncode == 0, r.stderr
    assert "has cap_net_raw and is shared" in r.stderr and str(shared) in r.stderr, r.stderr
    r = check_with(own / "bin" / "python3")
    assert r.returncode == 0, r.stderr
    assert "cap_net_raw" not in r.stderr, r.stderr
