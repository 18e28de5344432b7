"""Slow, hung and broken peers never stall monitoring: end to end, with real peers.

Real `wanmon check` and `wanmon run` processes in the netns lab's client
namespace (tests/netns.py: a dead host for a real DOWN), real ICMP, and real
misbehaving servers on that namespace's 127.0.0.1 (tests/fault_servers.py):
an InfluxDB write endpoint and an SMTP relay that are silent, then drip one
byte at a time, then answer properly. What an operator would check:

* the page is written while the publisher is still stuck on the peers, and
  the cycle lock is free then: a check started meanwhile exits 0 with its own
  cycle recorded;
* every check returns (well within 60 s) whatever the peers do;
* when the peers answer again, every spooled point arrives and the DOWN mail
  is delivered exactly once;
* the daemon keeps cycling on time against a dripping InfluxDB and exits
  within grace_s on SIGTERM.

Timings are printed, never asserted tightly (machines are noisy): the bounds
asserted are orders of magnitude (the old behaviour was "never returns").
bench/peer_faults.py measures the page times.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from fault_servers import DripServer, Fault, FaultServer, FaultSMTPServer, read_http_request  # noqa: E402
from smtp_server import in_netns  # noqa: E402
from test_alerts_integration import PY, base_sites, cycles, site_toml, store_query, wm_env  # noqa: E402
from waiting import Output  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

NOC = "noc@x.example"
DEAD_ADMIN = "chet@x.example"


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


class InfluxEndpoint(FaultServer):
    """An InfluxDB 1.x /write endpoint on one port whose behaviour the test switches:
    "silent" (reads, never answers), "drip" (one byte every drip_s, never a whole
    answer) or "good" (204, and the lines are kept in `lines`)."""

    def __init__(self, mode: str = "silent", drip_s: float = 0.5):
        super().__init__()
        self.mode = mode
        self.drip_s = drip_s
        self.lines: list[str] = []
        self.requests = 0
        self.asked = threading.Event()  # set at the first request

    def handle(self, conn) -> None:
        while True:
            req = read_http_request(conn)
            if req is None:
                return
            with self._lock:
                self.requests += 1
            self.asked.set()
            mode = self.mode
            if mode == "silent":
                while not self.pause(0.2):
                    pass
                return
            if mode == "drip":
                for b in b"HTTP/1.1 204 No Content\r\nX-Drip: " + b"a" * 10_000:
                    if self.pause(self.drip_s):
                        return
                    conn.sendall(bytes([b]))
                return
            body = req.split(b"\r\n\r\n", 1)[1]
            with self._lock:
                self.lines.extend(line for line in body.decode().split("\n") if line)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


def start_in(lab, srv):
    """Start a server inside the lab's client namespace (its 127.0.0.1 is the check's)."""
    return in_netns(lab.client, srv.start)


def config(tmp: Path, lab, influx_port: int, smtp_port: int, *, interval_s: float = 60, grace_s: float = 30,
           drain_budget_s: float = 6) -> Path:
    sites = base_sites(3) + site_toml("chet", "Điểm chết", "district", lab.dead4, [DEAD_ADMIN],
                                      district="Huyện chết", parent="core")
    text = f"""
[store]
path = "var/wanmon.db"
[icmp]
count = 1
interval_ms = 20
timeout_ms = 300
[snmp]
enabled = false
[page]
out_dir = "public"
[schedule]
icmp_interval_s = {interval_s}
grace_s = {grace_s}
[alerts]
confirm_cycles = 1
recover_cycles = 1
noc = ["{NOC}"]
guard_min_sites = 100
[influxdb]
url = "http://127.0.0.1:{influx_port}"
api = "v1"
database = "wanmon"
timeout_ms = 3000
drain_budget_s = {drain_budget_s}
[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "wanmon@x.example"
timeout_s = 2

{sites}
"""
    p = tmp / "sites.toml"
    p.write_text(text, encoding="utf-8")
    return p


class Check:
    """A `wanmon -v check` running in the lab; its log lines read as they come."""

    def __init__(self, lab, cfg: Path):
        self.t0 = time.monotonic()
        self.p = lab.popen([PY, "-m", "wanmon", "-v", "--config", str(cfg), "check"], cwd=cfg.parent,
                           env=wm_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = Output(self.p.stderr)

    def page_written(self) -> int:
        """Wait for the log line that follows the page: the cycle id it showed."""
        return int(self.log.wait_for(r"cycle id=(\d+) .*page_after_ms=").group(1))

    def finish(self, limit: float = 60) -> tuple[int, float, str]:
        try:
            self.p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"wanmon check did not return within {limit} s")
        self.log.close()
        return self.p.returncode, time.monotonic() - self.t0, self.log.text()


def page_cycle(cfg: Path) -> int | None:
    """The cycle id the page shows (status.json), None before the first page."""
    try:
        data = json.loads((cfg.parent / "public" / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return (data.get("last_cycle") or {}).get("id")


def spooled(cfg: Path) -> int:
    return store_query(cfg, "SELECT count(*) FROM spool")[0][0]


def page_after_ms(err: str) -> int:
    m = re.search(r"page_after_ms=(\d+)", err)
    assert m, err[-2000:]
    return int(m.group(1))


def test_hung_peers_never_hold_the_page_the_lock_or_the_next_check(lab, tmp_path):
    influx = start_in(lab, InfluxEndpoint("silent"))
    smtp = start_in(lab, FaultSMTPServer(faults={"greeting": Fault("silent")}))
    try:
        cfg = config(tmp_path, lab, influx.port, smtp.port)
        timings = []
        # 1. silent peers: the page comes while the publisher is stuck on the silent InfluxDB
        c1 = Check(lab, cfg)
        assert c1.page_written() == 1 and page_cycle(cfg) == 1
        assert influx.asked.wait(30), "the first check never reached the silent InfluxDB"
        assert c1.p.poll() is None, "the check ended before it reached the silent peer: nothing was tested"
        # a check started meanwhile records its own cycle and exits 0
        c2 = Check(lab, cfg)
        rc2, took2, err2 = c2.finish()
        assert rc2 == 0, err2[-3000:]
        assert cycles(cfg) == 2 and page_cycle(cfg) == 2
        assert c1.p.poll() is None, "the first check's publishing was not what held it"
        rc1, took1, err1 = c1.finish()
        assert rc1 == 0, err1[-3000:]
        timings += [("silent", page_after_ms(err1), took1), ("meanwhile", page_after_ms(err2), took2)]
        assert "deadline" in err1 or "timed out" in err1 or "timeout" in err1, err1[-2000:]

        # 2. dripping peers: same story
        influx.mode = "drip"
        smtp.faults = {"greeting": Fault("drip", drip_s=0.3)}
        c3 = Check(lab, cfg)
        assert c3.page_written() == 3 and page_cycle(cfg) == 3
        rc3, took3, err3 = c3.finish()
        assert rc3 == 0, err3[-3000:]
        timings.append(("drip", page_after_ms(err3), took3))
        assert took3 < 45, f"the check took {took3:.1f} s against dripping peers (budgets: 6 s drain, 30 s mail)"
        n_points = spooled(cfg)
        assert n_points == 3 * (5 + 1), f"{n_points} points spooled for 3 cycles of 5 sites + the agent"
        assert not smtp.acked()

        # 3. the peers answer again: every point arrives, the DOWN mail goes out once
        influx.mode = "good"
        smtp.faults = {}
        rc4, took4, err4 = Check(lab, cfg).finish()
        assert rc4 == 0, err4[-3000:]
        assert spooled(cfg) == 0, "points left in the spool after a good drain"
        # the DOWN mail that went out is noted for the other agents (wanmon_notice), once
        notices = [ln for ln in influx.lines if ln.startswith("wanmon_notice,")]
        assert len(notices) == 1 and 'kind="down"' in notices[0], notices
        sent = {ln.rsplit(" ", 1)[1] + ln.split(" ", 1)[0] for ln in influx.lines if not ln.startswith("wanmon_notice,")}
        icmp_cycles = {ln.rsplit(" ", 1)[1] for ln in influx.lines if ln.startswith("wanmon_icmp,")}
        assert len(icmp_cycles) == 4, f"ICMP points of {len(icmp_cycles)} cycles arrived, wanted 4"
        assert len(sent) == 4 * (5 + 1), f"{len(sent)} distinct points arrived, wanted 24"
        mails = [m for m in smtp.acked() if DEAD_ADMIN in m.rcpt_tos]
        assert len(mails) == 1, [(m.rcpt_tos, m.subject) for m in smtp.acked()]
        assert "Điểm chết" in mails[0].subject
        ids = [m.message_id for m in smtp.acked()]
        assert len(ids) == len(set(ids)), "a mail was delivered twice"
        print("\n(what, page after start ms, check s):", [(w, p, round(t, 2)) for w, p, t in timings])
    finally:
        influx.stop()
        smtp.stop()


def test_daemon_keeps_cycling_against_a_dripping_influxdb_and_stops_within_grace(lab, tmp_path):
    drip = start_in(lab, DripServer(drip_s=0.2))
    smtp = start_in(lab, FaultSMTPServer())
    grace = 3
    try:
        cfg = config(tmp_path, lab, drip.port, smtp.port, interval_s=1, grace_s=grace, drain_budget_s=20)
        cfg.write_text(cfg.read_text().replace("timeout_ms = 3000", "timeout_ms = 30000"))  # per-read timeouts alone never end
        d = lab.popen([PY, "-m", "wanmon", "-v", "--config", str(cfg), "run"], cwd=cfg.parent, env=wm_env(),
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log = Output(d.stderr, tmp_path / "daemon.log")
        try:
            log.wait_for(r"cycle id=1 took=")
            mark, t0 = log.mark(), time.monotonic()
            log.wait_for(r"cycle id=\d+ took=", start=mark, n=5)   # 5 more cycles while the drain drips
            per_cycle = (time.monotonic() - t0) / 5
            assert per_cycle < 3, f"{per_cycle:.2f} s per cycle with a 1 s interval while the drain drips"
            assert drip.bytes_sent > 0 and drip.connections == 1, "publishing ran twice at once"
            text = log.text()
            assert "maximum number of running instances" not in text, text[-3000:]
            t_stop = time.monotonic()
            d.send_signal(signal.SIGTERM)
            rc = d.wait(timeout=grace + 10)
            took = time.monotonic() - t_stop
        finally:
            if d.poll() is None:
                d.kill()
                d.wait()
        log.close()
        text = log.text()
        assert rc == 0, text[-3000:]
        assert took <= grace + 1, f"exit took {took:.1f} s with grace_s = {grace}"
        assert store_query(cfg, "PRAGMA integrity_check")[0][0] == "ok"
        assert spooled(cfg) == cycles(cfg) * 6, "points were lost"
        print(f"\ncycles every {per_cycle:.2f} s while the drain dripped; SIGTERM -> exit in {took:.2f} s")
    finally:
        drip.stop()
        smtp.stop()
