"""`wanmon check` from cron sweeps in a child process (wanmon.probes.forked): same results,
the cycle's time is the sweep's start, no process left behind, a killed check leaves no
orphan pinging and no lock, a child that never answers fails the check clearly."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MINIMAL, wanmon
from wanmon.locks import CycleLock
from wanmon.probes.forked import ForkedSweep, SweepLostError


def _gone(pid: int) -> bool:
    """No such process, or only a zombie nobody reaped yet (it sends nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _config(write_config, **icmp) -> Path:
    text = MINIMAL
    for k, v in icmp.items():
        text = re.sub(rf"(?m)^{k} = .*$", f"{k} = {v}", text)
    return write_config(text)


def test_cron_check_sweeps_in_a_child_with_the_same_results_and_leaves_no_process(write_config, tmp_path):
    cfg = _config(write_config)
    r = wanmon("-vv", "--config", str(cfg), "check", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = re.search(r"icmp sweep in child process pid=(\d+) sites=3", r.stderr)
    assert m, r.stderr
    assert _gone(int(m.group(1)))
    out = {s["id"]: s for s in json.loads(r.stdout)}
    assert out["dc-core"]["status"] == "up" and out["dc-core"]["icmp"]["received"] == 3
    assert out["tien-du-phat-tich"]["ip"] == "::1" and out["tien-du-phat-tich"]["icmp"]["received"] == 3
    with sqlite3.connect(tmp_path / "var" / "wanmon.db") as db:
        started, finished = db.execute("SELECT started_at, finished_at FROM cycles").fetchone()
    # the cycle's time is when the child began to sweep, as `check --json` reports it
    assert out["dc-core"]["ts"] == pytest.approx(started, abs=1e-6)
    assert finished - started >= 2 * 0.05  # three packets 50 ms apart were sent in between


def test_a_check_killed_mid_sweep_leaves_no_orphan_and_no_lock(write_config, tmp_path):
    cfg = _config(write_config, count=25, interval_ms=120)  # a sweep of about 3 s
    p = subprocess.Popen([sys.executable, "-m", "wanmon", "--config", str(cfg), "check"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (kids := _children(p.pid)) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.01)
        assert kids, "no sweeping child seen"
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
        t0 = time.monotonic()
        while not _gone(kids[0]) and time.monotonic() - t0 < 1.5:
            time.sleep(0.01)
        assert _gone(kids[0]), "the sweep went on after its check was killed"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = wanmon("--config", str(cfg), "check", cwd=tmp_path)  # the lock went with the killed check
    assert r.returncode == 0, r.stderr


def _lock(tmp_path: Path) -> CycleLock:
    return CycleLock(tmp_path / "var" / "wanmon.db").__enter__()


def test_a_child_that_never_answers_is_stopped_at_its_deadline(tmp_path):
    r, w = os.pipe()
    child = subprocess.Popen(["sleep", "60"], pass_fds=(w,))  # holds the pipe open, writes nothing
    os.close(w)
    lock = _lock(tmp_path)
    try:
        sweep = ForkedSweep(child.pid, r, lock, time.monotonic() + 0.5)
        t0 = time.monotonic()
        with pytest.raises(SweepLostError, match=f"child process {child.pid}.*did not finish in time"):
            sweep.result()
        assert time.monotonic() - t0 < 5
        assert _gone(child.pid)
    finally:
        if child.returncode is None and not _gone(child.pid):
            child.kill()
        lock.__exit__(None, None, None)


def test_a_child_that_ends_without_results_is_a_clear_error(tmp_path):
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", "import os; os._exit(3)"], pass_fds=(w,))
    os.close(w)
    lock = _lock(tmp_path)
    try:
        with pytest.raises(SweepLostError, match=r"ended without results \(exit status 3\)"):
            ForkedSweep(child.pid, r, lock, time.monotonic() + 30).result()
    finally:
        lock.__exit__(None, None, None)
