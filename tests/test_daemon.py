"""`wanmon run`, the daemon, as an operator runs it: a subprocess in the lab's
client namespace (see tests/test_alerts_integration.py for the lab and the
helpers), with a 1 s cycle (the smallest [schedule] icmp_interval_s allowed).

* it runs a cycle at start and then every interval (the store shows them);
* SIGHUP with a broken sites.toml: keeps running on the old configuration and
  logs why; with a good edited one: the new site shows up in the store;
* SIGTERM / SIGINT during a cycle: the cycle is finished and recorded, then
  exit 0, within grace_s; a cycle longer than grace_s is abandoned at grace_s,
  still exit 0, and leaves no stale lock.

Whether a cycle is running is read from /proc/locks (the daemon's flock on
`<store>.lock`), without touching the lock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from test_alerts_integration import (  # noqa: E402
    PY, base_sites, cycles, db_path, site_statuses, site_toml, store_query, wm, wm_env, write_config,
)

_ok, _why = netns.available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"netns lab unavailable: {_why}")


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


class Daemon:
    def __init__(self, lab, cfg: Path, log: Path):
        self.cfg, self.log = cfg, log
        fh = open(log, "ab")
        try:
            self.p = lab.popen([PY, "-m", "wanmon", "--config", str(cfg), "run"], cwd=cfg.parent,
                               env=wm_env(), stdout=fh, stderr=subprocess.STDOUT)
        finally:
            fh.close()

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait_cycles(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while cycles(self.cfg) < n:
            assert self.alive(), f"daemon exited {self.p.returncode}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{cycles(self.cfg)} cycles, wanted {n}:\n{self.text()[-3000:]}"
            time.sleep(0.05)

    def wait_log(self, needle: str, timeout: float = 15, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            t = self.text()
            if needle in t[start:]:
                return t[start:]
            assert self.alive(), f"daemon exited {self.p.returncode}:\n{t[-3000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} in the log:\n{t[-3000:]}"
            time.sleep(0.05)

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

    def start(lab, cfg, log):
        d = Daemon(lab, cfg, log)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.alive():
            d.p.kill()
            d.p.wait(timeout=10)


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


def wait_for_running_cycle(d: Daemon, timeout: float = 30) -> int:
    """Wait for a cycle to *start* (the lock goes from free to held) and return the
    number of cycles recorded before it. A held lock alone is not enough: the lock
    is still held for a moment after a cycle is recorded (the page, the mail)."""
    deadline = time.monotonic() + timeout
    was_free = False
    while True:
        held = lock_held(d.cfg)
        if held and was_free:
            return cycles(d.cfg)
        was_free = was_free or not held
        assert d.alive(), d.text()[-3000:]
        assert time.monotonic() < deadline, "never saw a cycle start"
        time.sleep(0.005)


# ---------------------------------------------------------------------------


def test_cycles_and_sighup_reload(lab, tmp_path, daemons):
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

    # a broken file (a new site, plus an invalid [icmp] count; then a TOML syntax
    # error): SIGHUP keeps the old config and the log says why
    new_site = site_toml("moi", "Điểm mới", "district", "127.0.0.42", ["moi@x.example"],
                         district="Huyện mới", parent="core")
    bad_value = good_text.replace("count = 1\n", "count = 0\n") + "\n" + new_site
    bad_syntax = good_text + "\n" + new_site + "\n[[sites\n"
    for broken, why in ((bad_value, "count"), (bad_syntax, "sites.toml:")):
        assert broken != good_text + "\n" + new_site
        cfg.write_text(broken, encoding="utf-8")
        assert wm(lab, cfg, "validate").returncode == 2
        mark = len(d.text())
        d.signal(signal.SIGHUP)
        d.wait_log("SIGHUP", start=mark)
        time.sleep(0.5)
        after = d.text()[mark:]
        assert why in after, f"the log does not say what is wrong ({why!r}):\n{after}"
        assert str(cfg) in after, after
        n = cycles(cfg)
        d.wait_cycles(n + 3, timeout=20)           # still running, on the old config
        assert "moi" not in site_statuses(cfg)
        assert d.alive()

    # a good edited file: picked up at the next SIGHUP
    cfg.write_text(good_text + "\n" + new_site, encoding="utf-8")
    assert wm(lab, cfg, "validate").returncode == 0
    mark = len(d.text())
    d.signal(signal.SIGHUP)
    d.wait_log("reload", start=mark)
    deadline = time.monotonic() + 20
    while site_statuses(cfg).get("moi") != "up":
        assert d.alive() and time.monotonic() < deadline, d.text()[-3000:]
        time.sleep(0.1)
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
    assert wm(lab, cfg, "check").returncode == 0


def test_cycle_longer_than_grace_is_abandoned_at_grace(lab, tmp_path, daemons):
    sites = base_sites(4) + site_toml("chet", "Điểm chết", "district", lab.dead4, ["chet@x.example"],
                                      district="Huyện chết", parent="core")
    grace = 1
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=grace, timeout_ms=6000)
    d = daemons(lab, cfg, tmp_path / "daemon.log")
    deadline = time.monotonic() + 30
    while not lock_held(cfg):
        assert d.alive() and time.monotonic() < deadline, d.text()[-3000:]
        time.sleep(0.01)
    time.sleep(0.3)
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
    assert wm(lab, cfg, "check", timeout=60).returncode == 0


def test_daemon_and_check_share_the_lock(lab, tmp_path, daemons):
    """While the daemon is in a cycle, a cron `wanmon check` exits 75 at once."""
    sites = base_sites(4) + site_toml("chet", "Điểm chết", "district", lab.dead4, ["chet@x.example"],
                                      district="Huyện chết", parent="core")
    cfg = write_config(tmp_path, None, sites, interval_s=1, grace_s=10, timeout_ms=3000)
    d = daemons(lab, cfg, tmp_path / "daemon.log")
    d.wait_cycles(1, timeout=30)
    wait_for_running_cycle(d)
    t0 = time.monotonic()
    cp = wm(lab, cfg, "check")
    assert cp.returncode == 75, (cp.returncode, cp.stderr)
    assert "another wanmon cycle is running" in cp.stderr and f"pid {d.p.pid}" in cp.stderr
    assert time.monotonic() - t0 < 2.5
    assert d.stop() == 0
