"""Tests of the network-namespace lab itself (tests/netns.py + tests/responder.py),
using the system ``ping`` (iputils-ping) inside the lab's client namespace."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

PING = shutil.which("ping")
needs_ping = prereq.needs(PING is not None, "ping", "Debian package iputils-ping")

SLOW_MS = 300


@pytest.fixture(scope="module")
def lab():
    with netns.lab(slow_ms=SLOW_MS) as lb:
        yield lb


def _parse(out: str) -> dict:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, f"unexpected ping output:\n{out}"
    res = {"sent": int(m.group(1)), "received": int(m.group(2))}
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if m:
        res.update(min=float(m.group(1)), avg=float(m.group(2)), max=float(m.group(3)))
    return res


def _ping_many(lab, targets: dict[str, str], count=4, interval=0.2, wait=1) -> dict:
    """Ping several addresses in parallel from the client namespace."""
    procs = {}
    for name, addr in targets.items():
        procs[name] = lab.popen(
            ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait), addr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert "checksum" not in (out + err).lower(), err
        assert "wrong data" not in (out + err).lower(), out
        results[name] = _parse(out) | {"rc": p.returncode, "raw": out + err}
    return results


def test_available_reports_reason():
    ok, why = netns.available()
    assert isinstance(ok, bool) and isinstance(why, str)
    assert ok and why == ""


def test_names_unique_short_and_nothing_in_root_ns(lab):
    assert str(__import__("os").getpid()) in lab.client
    assert len({lab.client, lab.alive_ns, lab.resp_ns}) == 3
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (lab.client, lab.alive_ns, lab.resp_ns):
        assert ns in listed
    # every interface in the lab has a name of at most 15 characters
    for ns in (lab.client, lab.alive_ns, lab.resp_ns):
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        names = [l.split(":")[1].strip().split("@")[0] for l in links.splitlines()]
        assert "lo" in names
        assert all(len(n) <= 15 for n in names), names
    # nothing of the lab leaks into the root namespace
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert lab.tag not in root_links
    root_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "198.18." not in root_addrs and "fd00:5747" not in root_addrs


def test_loopback_up_and_no_tentative_v6(lab):
    for ns in (lab.client, lab.alive_ns, lab.resp_ns):
        out = subprocess.run(["ip", "-n", ns, "addr", "show", "lo"], capture_output=True,
                             text=True, check=True).stdout
        assert "127.0.0.1/8" in out and "::1/128" in out and "UP" in out
        tent = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "tentative"],
                              capture_output=True, text=True, check=True).stdout
        assert "inet6" not in tent


def test_per_namespace_sysctls(lab):
    assert lab.sysctl("net.ipv4.icmp_echo_ignore_all", ns=lab.resp_ns) == "1"
    assert lab.sysctl("net.ipv6.icmp.echo_ignore_all", ns=lab.resp_ns) == "1"
    assert lab.sysctl("net.ipv4.icmp_echo_ignore_all", ns=lab.alive_ns) == "0"
    # ping_group_range is per network namespace: changing it in the client
    # namespace leaves the root namespace's value alone.
    root_before = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
    old = lab.sysctl("net.ipv4.ping_group_range")
    try:
        lab.sysctl("net.ipv4.ping_group_range", "0 0")
        assert lab.sysctl("net.ipv4.ping_group_range").split() == ["0", "0"]
        assert Path("/proc/sys/net/ipv4/ping_group_range").read_text().split() == root_before
    finally:
        lab.sysctl("net.ipv4.ping_group_range", old.replace("\t", " "))


@needs_ping
def test_alive_and_loopback_answer(lab):
    r = _ping_many(lab, {k: lab.hosts[k] for k in ("alive4", "alive6", "loop4", "loop6")})
    for name, res in r.items():
        assert res["rc"] == 0, res["raw"]
        assert (res["sent"], res["received"]) == (4, 4), (name, res["raw"])
        assert res["avg"] < 50, (name, res["raw"])


@needs_ping
def test_dead_never_answers(lab):
    r = _ping_many(lab, {"dead4": lab.dead4, "dead6": lab.dead6})
    for name, res in r.items():
        assert res["sent"] == 4 and res["received"] == 0, (name, res["raw"])
        assert res["rc"] != 0


@needs_ping
def test_slow_rtt_is_the_delay(lab):
    r = _ping_many(lab, {"slow4": lab.slow4, "slow6": lab.slow6}, wait=2)
    for name, res in r.items():
        assert (res["sent"], res["received"]) == (4, 4), (name, res["raw"])
        assert SLOW_MS <= res["min"] and res["max"] <= SLOW_MS + 150, (name, res["raw"])


@needs_ping
def test_slow_replies_do_not_queue(lab):
    # 10 requests 50 ms apart to a 300 ms host: with a scheduler every reply
    # still takes ~300 ms (a blocking responder would push the last to ~3 s).
    r = _ping_many(lab, {"slow4": lab.slow4}, count=10, interval=0.05, wait=2)["slow4"]
    assert (r["sent"], r["received"]) == (10, 10), r["raw"]
    assert r["max"] <= SLOW_MS + 150, r["raw"]


@needs_ping
@pytest.mark.parametrize("count", [4, 10])
def test_lossy_is_exactly_half(lab, count):
    r = _ping_many(lab, {"lossy4": lab.lossy4, "lossy6": lab.lossy6}, count=count)
    for name, res in r.items():
        assert res["sent"] == count and res["received"] == count // 2, (name, res["raw"])
        assert res["avg"] < 50, (name, res["raw"])


@needs_ping
def test_lossy_flows_are_independent(lab):
    # two pings at once (different ICMP ids) each see exactly 50 %
    procs = [lab.popen(["ping", "-n", "-q", "-c", "6", "-i", "0.1", "-W", "1", lab.lossy4],
                       stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=30)
        res = _parse(out)
        assert (res["sent"], res["received"]) == (6, 3), out


def test_teardown_on_exception_removes_everything():
    captured = {}
    with pytest.raises(RuntimeError, match="boom"):
        with netns.lab(slow_ms=50) as lb:
            captured["ns"] = [lb.client, lb.alive_ns, lb.resp_ns]
            captured["pid"] = lb.responder.pid
            captured["extra"] = lb.popen(["sleep", "300"])
            assert lb.responder.poll() is None
            raise RuntimeError("boom")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in captured["ns"]:
        assert ns not in listed
    assert not Path(f"/proc/{captured['pid']}").exists() or \
        Path(f"/proc/{captured['pid']}/stat").read_text().split()[2] == "Z"
    assert captured["extra"].poll() is not None


def test_two_labs_coexist():
    t0 = time.monotonic()
    with netns.lab(slow_ms=50) as a, netns.lab(slow_ms=50) as b:
        assert a.client != b.client and a.tag != b.tag
        for lb in (a, b):
            cp = lb.run(["ip", "-o", "-4", "addr", "show"])
            assert "198.18.1.1/24" in cp.stdout
    assert time.monotonic() - t0 < 30


def test_responder_rejects_bad_rule():
    cp = subprocess.run([sys.executable, str(netns.RESPONDER), "--rule", "198.18.2.9=bogus"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0 and "bogus" in cp.stderr


def test_atexit_tears_down_a_lab_left_open():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import netns\n"
        "cm = netns.lab(slow_ms=10); lb = cm.__enter__()\n"
        "print(lb.client, lb.alive_ns, lb.resp_ns, lb.responder.pid, flush=True)\n"
    ) % str(Path(netns.__file__).parent)
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    *names, pid = cp.stdout.split()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in names:
        assert ns not in listed
    assert not Path(f"/proc/{pid}").exists()


def test_cleanup_stale_removes_only_dead_runs():
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{netns.PREFIX}{gone.pid}n1c"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in netns.cleanup_stale()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale not in listed
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
