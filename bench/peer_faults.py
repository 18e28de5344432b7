#!/usr/bin/env python3
"""Peers that misbehave: how long `wanmon check` takes to write its page, and to return.

Issue 10's acceptance figures, measured with real misbehaving peers, each
scenario against its own baseline in the same run (medians of --repeat runs):

  peers     InfluxDB (v1 url) and the SMTP relay silent, then dripping one byte
            a second (tests/fault_servers.py), 30 sites, one of them down so a
            DOWN mail is queued: page after start and check duration, against
            the same check with no [influxdb]/[smtp]. Goal: page <= 5 s after
            the start, the check returns within 60 s.
  dns       30 sites of which 3 are host names, the DNS server silent (a
            listener on 127.0.0.1:53 that never answers, in this namespace's
            resolv.conf): page after start against 30 literal addresses.
            Goal: within 1.5 s of the no-name case; check within 30 s.
  snmp      1,500 sites whose SNMP agents never answer (a UDP socket that reads
            and never replies): page after start against SNMP off.
            Goal: within 1.5 s of the no-SNMP case.

"Page after start" is the check's own log line (`cycle ... page_after_ms=`,
the time from the cycle's start to the page written, on the wall clock) and,
as a cross-check, index.html's mtime against the moment the process was
started. Everything runs inside a private network namespace this script
creates (root needed) and removes: only 127.0.0.0/8 there is ever used (the dead site's
address has no route there: nothing is sent).

    sudo .venv/bin/python bench/peer_faults.py [--scenario peers dns snmp] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))
from _measure import default_python, log  # noqa: E402

NS_ENV = "WANMON_BENCH_NS"
PAGE_RE = re.compile(r"cycle id=\d+ sites=\d+ duration_ms=(\d+) page_after_ms=(\d+)")


# -- the namespace: the script re-runs itself inside it -------------------------

def in_namespace(argv: list[str]) -> int:
    ns = f"wmfault{os.getpid()}"
    etc = f"/etc/netns/{ns}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        os.makedirs(etc, exist_ok=True)
        with open(f"{etc}/resolv.conf", "w") as fh:
            fh.write("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, **{NS_ENV: ns})
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *argv], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(etc, ignore_errors=True)


# -- one measured check ---------------------------------------------------------

def sites_toml(n: int, *, names: int = 0, down: str | None = None, snmp_port: int | None = None,
               extra: str = "") -> str:
    out = [f"""[store]
path = "var/wanmon.db"
[page]
out_dir = "public"
[icmp]
count = 3
interval_ms = 200
timeout_ms = 1000
rate_pps = 10000
[snmp]
enabled = {'true' if snmp_port else 'false'}
{f'port = {snmp_port}' if snmp_port else ''}
interval_s = 0
[alerts]
confirm_cycles = 1
guard_min_sites = 100000
{extra}
"""]
    for i in range(n):
        if i < names:
            addr = f"site{i}.wanmon.test"
        elif i == 1 and down:
            addr = down
        else:
            addr = f"127.61.{i // 250}.{i % 250 + 1}"
        parent = '' if i == 0 else 'parent = "s0"'
        out.append(f'[[sites]]\nid = "s{i}"\nname = "Điểm {i}"\nlevel = "province"\n{parent}\n'
                   f'address = "{addr}"\nadmins = ["a{i}@x.example"]\n')
    return "\n".join(out)


def measure(py: str, text: str, label: str, timeout: float = 120) -> dict:
    d = tempfile.mkdtemp(prefix="wmfault-")
    try:
        with open(os.path.join(d, "sites.toml"), "w", encoding="utf-8") as fh:
            fh.write(text)
        t0 = time.time()
        m0 = time.monotonic()
        cp = subprocess.run([py, "-m", "wanmon", "-v", "--config", "sites.toml", "check"], cwd=d,
                            capture_output=True, text=True, timeout=timeout)
        took = time.monotonic() - m0
        m = PAGE_RE.search(cp.stderr)
        page = os.path.join(d, "public", "index.html")
        mtime = os.stat(page).st_mtime - t0 if os.path.exists(page) else None
        r = {"label": label, "rc": cp.returncode, "check_s": took,
             "page_after_s": int(m.group(2)) / 1000 if m else None, "page_mtime_s": mtime}
        if cp.returncode != 0 or m is None:
            log(f"{label}: rc={cp.returncode}\n{cp.stderr[-2000:]}")
        return r
    finally:
        shutil.rmtree(d, ignore_errors=True)


def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.median(vals) if vals else None


def report(title: str, base: list[dict], case: list[dict], page_goal: str, check_goal_s: float,
           page_limit, ) -> bool:
    pb, pc = med(base, "page_after_s"), med(case, "page_after_s")
    worst_page = max((r["page_after_s"] or 1e9) for r in case)
    worst_check = max(r["check_s"] for r in case)
    ok = all(r["rc"] == 0 for r in case) and page_limit(pb, worst_page) and worst_check <= check_goal_s
    print(f"\n## {title}")
    print(f"  baseline : page after start median {pb:.3f} s (mtime {med(base, 'page_mtime_s'):.3f} s), "
          f"check {med(base, 'check_s'):.2f} s")
    print(f"  faulty   : page after start median {pc:.3f} s, worst {worst_page:.3f} s (mtime "
          f"{med(case, 'page_mtime_s'):.3f} s); check median {med(case, 'check_s'):.2f} s, worst {worst_check:.2f} s")
    print(f"  goal     : {page_goal}; check <= {check_goal_s:.0f} s  ->  {'PASS' if ok else 'FAIL'}")
    return ok


# -- scenarios ------------------------------------------------------------------

# A silently dead site: an address with no route inside this private namespace (only its
# loopback exists), so its echo requests go nowhere and nothing leaves the namespace.
DEAD = "198.18.99.9"


def scenario_peers(py: str, repeat: int) -> bool:
    from fault_servers import DripServer, FaultSMTPServer, Fault, SilentServer

    dead = DEAD
    base = [measure(py, sites_toml(30, down=dead), "no peers") for _ in range(repeat)]
    ok = True
    for kind in ("silent", "drip"):
        if kind == "silent":
            influx, smtp = SilentServer(), FaultSMTPServer(faults={"greeting": Fault("silent")})
        else:
            influx, smtp = DripServer(drip_s=1.0), FaultSMTPServer(faults={"greeting": Fault("drip", drip_s=1.0)})
        with influx, smtp:
            extra = f"""[influxdb]
url = "{influx.url}"
api = "v1"
database = "wanmon"
timeout_ms = 5000
drain_budget_s = 10
[smtp]
host = "127.0.0.1"
port = {smtp.port}
from = "wanmon@x.example"
timeout_s = 10
"""
            case = [measure(py, sites_toml(30, down=dead, extra=extra), kind) for _ in range(repeat)]
        ok &= report(f"InfluxDB and SMTP {kind} (30 sites, one down: a DOWN mail queued)", base, case,
                     "page <= 5 s after the start", 60, lambda b, w: w <= 5.0)
    return ok


def scenario_dns(py: str, repeat: int) -> bool:
    silent = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 53))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        silent.append(s)  # never read, never answered
    try:
        base = [measure(py, sites_toml(30), "30 literal") for _ in range(repeat)]
        case = [measure(py, sites_toml(30, names=3), "3 names, DNS silent") for _ in range(repeat)]
    finally:
        for s in silent:
            s.close()
    return report("Silent DNS, 3 named sites among 30", base, case, "page within 1.5 s of the no-name case",
                  30, lambda b, w: w <= b + 1.5)


def scenario_snmp(py: str, repeat: int, n: int) -> bool:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("0.0.0.0", 0))  # inside the private namespace: only its loopback reaches it
    port = sink.getsockname()[1]
    stop = threading.Event()

    def swallow() -> None:  # read and drop, so the agents look silent rather than refusing
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                sink.recv(65535)
            except (TimeoutError, OSError):
                pass

    t = threading.Thread(target=swallow, daemon=True)
    t.start()
    try:
        base = [measure(py, sites_toml(n), "SNMP off") for _ in range(repeat)]
        case = [measure(py, sites_toml(n, snmp_port=port), "SNMP on, every agent silent", timeout=300)
                for _ in range(repeat)]
    finally:
        stop.set()
        t.join(2)
        sink.close()
    return report(f"{n} sites, every SNMP poll timing out", base, case, "page within 1.5 s of the no-SNMP case",
                  60, lambda b, w: w <= b + 1.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", nargs="+", choices=["peers", "dns", "snmp"], default=["peers", "dns", "snmp"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--snmp-sites", type=int, default=1500)
    p.add_argument("--python", default=default_python())
    a = p.parse_args()
    if os.environ.get(NS_ENV) is None:
        if os.geteuid() != 0:
            log("peer_faults.py needs root (ip netns, nft)")
            return 2
        return in_namespace([os.path.abspath(__file__), *sys.argv[1:]])
    print(f"# wanmon check with misbehaving peers (python {a.python}, repeat {a.repeat}, medians)")
    print("# settings: [icmp] count 3, interval_ms 200, timeout_ms 1000; [snmp] timeout_ms 1000, retries 1, "
          "budget_s 30; [influxdb] timeout_ms 5000, drain_budget_s 10; [smtp] timeout_s 10, mail budget 30 s")
    ok = True
    for s in a.scenario:
        ok &= {"peers": lambda: scenario_peers(a.python, a.repeat), "dns": lambda: scenario_dns(a.python, a.repeat),
               "snmp": lambda: scenario_snmp(a.python, a.repeat, a.snmp_sites)}[s]()
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
