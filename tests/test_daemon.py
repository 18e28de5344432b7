"""`wanmon run`, the daemon, as an operator runs it: a subprocess in the lab's
client namespace (see tests/test_alerts_integration.py for the lab and the
helpers), with a 1 s cycle (the smallest [schedule] icmp_interval_s allowed).

* it runs a cycle at start and then every interval (the store shows them);
* SIGHUP with a broken sites.toml: keeps running on the old configuration and
  logs why; with a good edited one: the new site shows up in the store;
* SIGTERM / SIGINT during a cycle: the cycle is finished and recorded, then
  exit 0, within grace_s; a cycle longer than grace_s is abandoned at grace_s,
  still exit 0, and leaves no stale lock;
* while it is in a cycle, a cron `wanmon check` exits 75 at once.

The same bookkeeping in detail (both kinds of broken file, a stuck cycle
cancelled, publishing never twice at once, _stop with and without a cycle
that ends in time) runs in-process through the seams in test_daemon_seams.py.

No sleeping here: the test reads the daemon's log as it comes (one
`cycle id=N took=` line per recorded cycle) and sees a cycle start when the
daemon writes its pid into `<store>.lock` right after taking the lock
(inotify, tests/waiting.py). Whether the lock is still held afterwards is read
from /proc/locks, without touching the lock.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from test_alerts_integration import (  # noqa: E402
    CYCLE_DONE, PY, base_sites, cycles, db_path, site_statuses, site_toml, store_query, wm, wm_env, write_config,
)
from waiting import MODIFY, OPEN, FileWrites, Output  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


class Daemon:
    def __init__(self, lab, cfg: Path, log: Path, verbose: bool = True, prefix: tuple[str, ...] = ()):
        """prefix: argv before python's (e.g. `env LD_PRELOAD=...` for a fake clock)."""
        self.cfg, self.log = cfg, log
        v = ["-v"] if verbose else []   # -v: the INFO lines the tests wait on (quiet by default)
        self.p = lab.popen([*prefix, PY, "-m", "wanmon", *v, "--config", str(cfg), "run"], cwd=cfg.parent,
                           env=wm_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = Output(self.p.stdout, log)

    def text(self) -> str:
        return self.out.text()

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait_cycles(self, n: int, timeout: float = 30) -> None:
        """Until the daemon has recorded its n-th cycle (its log says so as it happens)."""
        self.out.wait_for(CYCLE_DONE, timeout, n=n)
        assert cycles(self.cfg) >= n

    def wait_log(self, needle: str, timeout: float = 15, start: int = 0) -> str:
        """Until a log line after `start` holds `needle`; returns the log from `start`."""
        self.out.wait_for(re.escape(needle), timeout, start=start)
        return self.out.text(start)

    def signal(self, sig: int) -> None:
        os.kill(self.p.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        if self.alive():
            self.signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)
            raise


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(lab, cfg, log, verbose=True, prefix=()):
        d = Daemon(lab, cfg, log, verbose, prefix)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.alive():
            d.p.kill()
            d.p.wait(timeout=10)
        d.out.close()
        d.p.stdout.close()


def lock_held(cfg: Path) -> bool:
    """True while some process holds the flock on <store>.lock (from /proc/locks)."""
    lock = db_path(cfg).with_name(db_path(cfg).name + ".lock")
    try:
        ino = os.stat(lock).st_ino
    except FileNotFoundError:
        return False
    with open("/proc/locks") as fh:
        for line in fh:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a waiter)
            if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
                continue
            if parts[5].rsplit(":", 1)[-1] == str(ino):
                return True
    return False


LOCK = "wanmon.db.lock"


def wait_for_running_cycle(d: Daemon, timeout: float = 30) -> int:
    """Wait for a cycle to *start* and return the number of cycles recorded before it.
    The daemon writes its pid into the lock file right after taking the lock: the first
    such write after the watch begins is a cycle starting (one already running when the
    watch begins wrote before it)."""
    with FileWrites(db_path(d.cfg).parent) as w:
        w.wait(LOCK, MODIFY, timeout)
    return cycles(d.cfg)


def next_check_proceeds(lab, cfg: Path) -> bool:
    """A cron `wanmon check` on the same store and lock afterwards exits 0. (Its own file with a
    short [icmp] timeout_ms: the dead host would otherwise make it sweep for seconds.)"""
    text = cfg.read_text(encoding="utf-8")
    fast = cfg.with_name("sites-next.toml")
    fast.write_text(re.sub(r"(?m)^timeout_ms = \d+$", "timeout_ms = 300", text, count=1), encoding="utf-8")
    cp = wm(lab, fast, "check", timeout=60)
    assert cp.returncode == 0, cp.stderr[-3000:]
    return db_path(fast) == db_path(cfg)


# ---------------------------------------------------------------------------


def test_cycles_and_sighup_reload(lab, tmp_path, daemons):
    """The real process and real signals; both kinds of broken file and the bookkeeping in detail:
    test_daemon_seams.py."""
    sites = base_sites(3)
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=10)
    good_text = cfg.read_text(encoding="utf-8")
    d = daemons(lab, cfg, tmp_path / "daemon.log")

    # a cycle at start, then one about every second
    d.wait_cycles(1, timeout=20)
    t1 = time.monotonic()
    d.wait_cycles(4, timeout=20)
    assert time.monotonic() - t1 < 10, "cycles are not about 1 s apart"
    assert set(site_statuses(cfg)) == {"core", "fill-0", "fill-1", "fill-2"}
    assert set(site_statuses(cfg).values()) == {"up"}

    # a broken file (a new site, then a TOML syntax error): SIGHUP keeps the old config
    # and the log says why
    new_site = site_toml("moi", "Điểm mới", "district", "127.0.0.42", ["moi@x.example"],
                         district="Huyện mới", parent="core")
    cfg.write_text(good_text + "\n" + new_site + "\n[[sites\n", encoding="utf-8")
    mark = d.out.mark()
    d.signal(signal.SIGHUP)
    d.wait_log("SIGHUP", start=mark)
    d.wait_log("sites.toml:", start=mark)          # what is wrong, and where
    after = d.wait_log(str(cfg), start=mark)
    assert "keeping the configuration in use" in after, after
    n = d.out.count(CYCLE_DONE)
    d.wait_cycles(n + 2, timeout=20)               # still running, on the old config
    assert "moi" not in site_statuses(cfg)
    assert d.alive()

    # a good edited file: picked up at the next SIGHUP; the first cycle that starts after it
    # has the new site
    cfg.write_text(good_text + "\n" + new_site, encoding="utf-8")
    mark = d.out.mark()
    d.signal(signal.SIGHUP)
    d.wait_log("reload", start=mark)
    d.out.wait_for(CYCLE_DONE, 20, start=d.out.mark(), n=2)
    assert site_statuses(cfg).get("moi") == "up", d.text()[-3000:]
    st = wm(lab, cfg, "status", "--json")
    assert st.returncode == 0 and "Điểm mới" in st.stdout

    t0 = time.monotonic()
    assert d.stop() == 0, d.text()[-3000:]
    assert time.monotonic() - t0 < 10
    assert not lock_held(cfg)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_cycle_finishes_it_and_exits_0(lab, tmp_path, daemons, sig):
    # a cycle of about 1.5 s: the lab's dead host never answers, timeout_ms = 1500
    sites = base_sites(4) + site_toml("chet", "Điểm chết", "district", lab.dead4, ["chet@x.example"],
                                      district="Huyện chết", parent="core")
    grace = 8
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=grace, timeout_ms=1500)
    d = daemons(lab, cfg, tmp_path / "daemon.log")
    d.wait_cycles(1, timeout=30)
    n = wait_for_running_cycle(d)
    t0 = time.monotonic()
    d.signal(sig)
    rc = d.p.wait(timeout=grace + 10)
    took = time.monotonic() - t0
    assert rc == 0, d.text()[-3000:]
    assert took <= grace + 1, f"exit took {took:.1f} s, grace_s = {grace}"
    assert cycles(cfg) == n + 1, "the running cycle was not finished and recorded"
    assert not lock_held(cfg)
    assert store_query(cfg, "PRAGMA integrity_check")[0][0] == "ok"
    # the next cron-style run proceeds
    assert next_check_proceeds(lab, cfg)
    assert cycles(cfg) == n + 2


def test_cycle_longer_than_grace_is_abandoned_at_grace(lab, tmp_path, daemons):
    sites = base_sites(4) + site_toml("chet", "Điểm chết", "district", lab.dead4, ["chet@x.example"],
                                      district="Huyện chết", parent="core")
    grace = 1
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=grace, timeout_ms=6000)
    var = db_path(cfg).parent
    var.mkdir(mode=0o700)                  # to watch it from before the daemon starts
    with FileWrites(var) as w:
        d = daemons(lab, cfg, tmp_path / "daemon.log")
        w.wait(LOCK, MODIFY)               # the first cycle took the lock...
        w.wait("wanmon.db", OPEN)          # ... and opened the store: it is sweeping (6 s)
    assert lock_held(cfg) and d.alive(), d.text()[-3000:]
    n = cycles(cfg)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = d.p.wait(timeout=30)
    took = time.monotonic() - t0
    assert rc == 0, d.text()[-3000:]
    assert took < grace + 2.5, f"exit took {took:.1f} s with grace_s = {grace} and a 6 s cycle"
    assert cycles(cfg) == n               # the abandoned cycle left nothing half-written
    assert not lock_held(cfg)
    assert store_query(cfg, "PRAGMA integrity_check")[0][0] == "ok"
    assert next_check_proceeds(lab, cfg)
    assert cycles(cfg) == n + 1


def test_daemon_and_check_share_the_lock(lab, tmp_path, daemons):
    """While the daemon is in a cycle, a cron `wanmon check` exits 75 at once."""
    sites = base_sites(4) + site_toml("chet", "Điểm chết", "district", lab.dead4, ["chet@x.example"],
                                      district="Huyện chết", parent="core")
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=10, timeout_ms=3000)
    var = db_path(cfg).parent
    var.mkdir(mode=0o700)                  # to watch it from before the daemon starts
    with FileWrites(var) as w:
        d = daemons(lab, cfg, tmp_path / "daemon.log")
        w.wait(LOCK, MODIFY)               # its first cycle (3 s) took the lock
    t0 = time.monotonic()
    cp = wm(lab, cfg, "check")
    assert cp.returncode == 75, (cp.returncode, cp.stderr)
    assert "another wanmon cycle is running" in cp.stderr and f"pid {d.p.pid}" in cp.stderr
    assert time.monotonic() - t0 < 2.5
    assert d.stop() == 0


def test_quiet_by_default_and_one_line_per_snmp_poll_with_v(lab, tmp_path, daemons):
    """Issue 22: without -v the daemon says nothing while all is well (warnings and above);
    with -v one line per cycle and one per SNMP poll, however many agents are silent: no line
    per agent, none of APScheduler's "Running job"."""
    sites = base_sites(4)
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=10)
    text = cfg.read_text(encoding="utf-8")
    assert "[snmp]\nenabled = false\n" in text
    # every site's agent: a loopback port where nothing answers (ICMP port unreachable: a failure)
    cfg.write_text(text.replace("[snmp]\nenabled = false\n",
                                "[snmp]\nenabled = true\ninterval_s = 0\ntimeout_ms = 200\nretries = 0\nport = 9\n"),
                   encoding="utf-8")

    d = daemons(lab, cfg, tmp_path / "daemon-v.log")
    d.out.wait_for(r"snmp polled=\d+", 30, n=2)   # then the silent agents' back-off (1, 2, 4 min)
    d.wait_cycles(3)
    assert d.stop() == 0
    log = d.text()
    polls = re.findall(r"snmp polled=(\d+) answered=0 failed=(\d+) .*took=[\d.]+s((?: \w+=\d+)+)", log)
    assert len(polls) >= 2 and all(p[0] == "5" and p[1] == "5" for p in polls), log[-3000:]
    assert all(sum(int(x.split("=")[1]) for x in p[2].split()) == 5 for p in polls), polls   # counted by status
    assert "snmp site=" not in log and "Running job" not in log, log[-3000:]

    # the same daemon without -v: cycles recorded, nothing logged
    before = cycles(cfg)
    quiet = daemons(lab, cfg, tmp_path / "daemon.log", verbose=False)
    for _ in range(3):   # three cycles start (each writes the lock file as it takes the lock)
        wait_for_running_cycle(quiet)
    assert quiet.stop() == 0
    assert cycles(cfg) >= before + 2
    assert quiet.text().strip() == "", quiet.text()[-3000:]
