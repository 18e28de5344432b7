"""`wanmon` end to end against real time-series databases (tests/tsdb_servers.py):
Debian's InfluxDB 1.6 (api = "v1"), VictoriaMetrics (api = "v2", its InfluxDB
v2 write endpoint), and a FlakyProxy in front of them for 429/5xx/400/413,
outages, a slow server and token checks.

Every wanmon run is a new process (cron mode), pinging loopback addresses
127.0.0.x with SNMP off.  Every server listens on 127.0.0.1 only and is stopped
with SIGTERM, even when a test fails.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402
from conftest import wanmon  # noqa: E402
from tsdb_servers import FlakyProxy, InfluxV1Server, VictoriaMetricsServer  # noqa: E402

import prereq  # noqa: E402
from prereq import needs  # noqa: E402

FAKETIME = shutil.which("faketime")
_ifx_ok, _ifx_why = ts.influx_available()
_vm_ok, _vm_why = ts.victoria_available()
need_influx = prereq.needs(_ifx_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _ifx_why)
need_vm = prereq.needs(_vm_ok, "VictoriaMetrics", prereq.VICTORIA, _vm_why)

DB = "wanmon"
PASSWORD = "mật-khẩu-influx-7f3a"          # v1 admin password (auth-enabled server)
TOKEN = "wanmon-token-9c1e5b7d"             # v2 token (VictoriaMetrics ignores it; the proxy may check it)

# (id, name, level, district, address, parent): names with every character that
# line protocol escapes in tag values (space, comma, '='), a double quote and
# Vietnamese diacritics.
SITES = [
    ("dc-core", "Trung tâm dữ liệu tỉnh, khu=A", "province", None, "127.0.0.1", None),
    ("tien-du", "UBND huyện Tiên Du, x=1", "district", "Tiên Du", "127.0.0.2", "dc-core"),
    ("phat-tich", 'UBND xã Phật Tích "cũ", phòng máy số 2', "commune", "Tiên Du", "127.0.0.3", "tien-du"),
    ("que-vo", "UBND huyện Quế Võ", "district", "Quế Võ", "127.0.0.4", "dc-core"),
]
SITE_IDS = [s[0] for s in SITES]
PER_CYCLE = len(SITES) + 1      # one wanmon_icmp point per site + one wanmon_agent point (SNMP off)

ICMP_INT = {"sent", "received", "up"}
ICMP_FLOAT = {"loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms"}
# The cycle's own point; SNMP polls (a tail of the cycle, not part of it) write snmp_polled,
# snmp_failed and snmp_ms in a wanmon_agent point of their own, at the poll's time.
AGENT_FIELDS = {"cycle_ms", "sites", "up", "degraded", "down", "unreachable", "unknown",
                "spool_points", "spool_dropped"}
SITE_TAGS = {"site_id", "site_name", "level", "district", "address", "agent", "parent"}


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)   # a JSON string is a TOML basic string


def _ns(ts_s: float) -> int:
    """The nanosecond timestamp wanmon derives from a JSON `ts` (seconds, float)."""
    return int(round(ts_s * 1e9))


def same_time(ns: int, ts_s: float) -> bool:
    """A point's ns timestamp is the JSON `ts` (float seconds) to the microsecond.

    (A float of ~1.8e9 s carries ~0.24 us of resolution, so its last ns digits are noise.)"""
    return abs(ns - ts_s * 1e9) < 1000


class Rig:
    """A config folder + the environment wanmon runs with."""

    def __init__(self, tmp_path: Path, influx: dict, *, sites=SITES, env: dict | None = None):
        self.dir = tmp_path
        self.sites = sites
        self.env = {"WANMON_INFLUX_PASSWORD": PASSWORD, "INFLUX_TOKEN": TOKEN, **(env or {})}
        self.outputs: list[str] = []     # every stdout/stderr, to look for leaked secrets
        self.write(influx)

    def write(self, influx: dict) -> None:
        lines = ['[store]', 'path = "var/wanmon.db"', '',
                 '[icmp]', 'count = 2', 'interval_ms = 50', 'timeout_ms = 300', '',
                 '[snmp]', 'enabled = false', '']
        if influx is not None:
            lines.append('[influxdb]')
            lines += [f"{k} = {_toml(v)}" for k, v in influx.items()]
            lines.append('')
        for sid, name, level, district, addr, parent in self.sites:
            lines += ['[[sites]]', f'id = {_toml(sid)}', f'name = {_toml(name)}', f'level = {_toml(level)}',
                      f'address = {_toml(addr)}', f'admins = ["noc@{sid}.example"]']
            if district:
                lines.append(f'district = {_toml(district)}')
            if parent:
                lines.append(f'parent = {_toml(parent)}')
            lines.append('')
        self.config = self.dir / "sites.toml"
        self.config.write_text("\n".join(lines), encoding="utf-8")

    def run(self, *args: str, timeout: float = 120, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
        r = wanmon("--config", str(self.config), *args, cwd=self.dir, env=self.env, timeout=timeout, prefix=prefix)
        self.outputs += [r.stdout, r.stderr]
        return r

    def check(self, *, max_s: float | None = None, prefix: list[str] | None = None) -> list[dict]:
        """`wanmon check --json`; asserts exit 0 (and a wall-time bound); returns the sites."""
        t = time.monotonic()
        r = self.run("check", "--json", prefix=prefix)
        took = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        if max_s is not None:
            assert took < max_s, f"wanmon check took {took:.1f} s (bound {max_s} s)\n{r.stderr}"
        self.last_stderr = r.stderr
        return json.loads(r.stdout)

    def status(self) -> dict:
        r = self.run("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def spool(self) -> dict:
        return self.status()["spool"]

    def assert_no_secret_leaked(self) -> None:
        blobs = list(self.outputs)
        for p in (self.dir / "var").glob("wanmon.db*"):
            blobs.append(p.read_bytes().decode("utf-8", "replace"))
        for secret in (PASSWORD, TOKEN):
            for b in blobs:
                assert secret not in b, f"secret {secret!r} leaked into output/store: ...{b[:300]}"


def v1_cfg(url: str, **kw) -> dict:
    return {"url": url, "api": "v1", "database": DB, "username": "admin", "password_env": "WANMON_INFLUX_PASSWORD",
            "timeout_ms": 3000, **kw}


def v1_noauth_cfg(url: str, **kw) -> dict:
    return {"url": url, "api": "v1", "database": DB, "timeout_ms": 3000, **kw}


def v2_cfg(url: str, **kw) -> dict:
    return {"url": url, "api": "v2", "org": "wanmon", "bucket": "wanmon", "token_env": "INFLUX_TOKEN",
            "timeout_ms": 3000, **kw}


def icmp_rows(server: InfluxV1Server, db: str = DB) -> list[dict]:
    if "wanmon_icmp" not in server.measurements(db):
        return []
    return server.rows('SELECT * FROM "wanmon_icmp"', db)


def agent_rows(server: InfluxV1Server, db: str = DB) -> list[dict]:
    if "wanmon_agent" not in server.measurements(db):
        return []
    return server.rows('SELECT * FROM "wanmon_agent"', db)


def per_site(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["site_id"], []).append(r)
    return out


def line_ts(line: str) -> int:
    return int(line.rsplit(" ", 1)[1])


def write_requests(px: FlakyProxy) -> list:
    return [r for r in px.requests if "/write" in r.path]


@pytest.fixture(scope="module")
def influx_auth():
    """One auth-enabled InfluxDB 1.6 for the tests that do not stop it (a database per test)."""
    if not _ifx_ok:
        prereq.need("InfluxDB 1.x (influxd)", prereq.INFLUXDB, _ifx_why)
    with InfluxV1Server(auth=True, admin_password=PASSWORD) as s:
        yield s


@pytest.fixture
def db(influx_auth, request):
    """A fresh database named after the test, on the shared server; returns its name."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "")[:60]
    influx_auth.create_database(name)
    yield name
    influx_auth.drop_database(name)


# ---------------------------------------------------------------------------
# (1) v1: every site's wanmon_icmp point, exact names, values and timestamps
# ---------------------------------------------------------------------------


@need_influx
def test_v1_check_writes_points_equal_to_check_json(influx_auth, db, tmp_path):
    rig = Rig(tmp_path, v1_cfg(influx_auth.url, database=db))
    r = rig.run("influx", "check")
    assert r.returncode == 0, r.stderr
    sites = rig.check()
    assert [s["id"] for s in sites] == SITE_IDS and all(s["status"] == "up" for s in sites), sites

    assert set(influx_auth.measurements(db)) == {"wanmon_icmp", "wanmon_agent"}   # SNMP is off
    types = influx_auth.field_types(db, "wanmon_icmp")
    assert {k: types.get(k) for k in ICMP_INT} == dict.fromkeys(ICMP_INT, "integer")
    assert {k: types.get(k) for k in ICMP_FLOAT} == dict.fromkeys(ICMP_FLOAT, "float")
    assert types.get("status") == "string"
    assert set(influx_auth.tag_keys(db, "wanmon_icmp")) == SITE_TAGS

    rows = per_site(icmp_rows(influx_auth, db))
    assert set(rows) == set(SITE_IDS)
    for s in sites:
        assert len(rows[s["id"]]) == 1, rows[s["id"]]
        p = rows[s["id"]][0]
        # tags: Vietnamese names with spaces, commas, '=', quotes, backslashes round-trip exactly
        assert (p["site_name"], p["level"], p["district"], p["address"]) == \
            (s["name"], s["level"], s["district"], s["address"])
        # fields: the same values as check --json
        for k in ("sent", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms"):
            assert p[k] == s["icmp"][k], (s["id"], k, p[k], s["icmp"][k])
        assert p["up"] == (1 if s["status"] in ("up", "degraded") else 0)
        assert p["status"] == s["status"]
        # timestamp: the sample time (the cycle's start) == the JSON ts, to the microsecond
        assert same_time(p["time"], s["ts"]), (p["time"], s["ts"])
    names = {s[0]: s[1] for s in SITES}
    assert rows["phat-tich"][0]["site_name"] == names["phat-tich"] == 'UBND xã Phật Tích "cũ", phòng máy số 2'
    assert rows["dc-core"][0]["district"] is None   # province: no district tag

    # selectable by the escaped Vietnamese value, as in Grafana
    sel = influx_auth.rows(f'SELECT "sent" FROM "wanmon_icmp" WHERE "site_name"={ts.influxql_string(names["tien-du"])}', db)
    assert len(sel) == 1

    agents = agent_rows(influx_auth, db)
    assert len(agents) == 1
    a = agents[0]
    assert set(influx_auth.tag_keys(db, "wanmon_agent")) == {"host", "agent"} and a["host"]
    assert a["agent"] == socket.gethostname() and a["role"] == "primary" and a["interval_s"] == 60.0
    assert {p[0]["agent"] for p in rows.values()} == {socket.gethostname()}   # [agent] id defaults to the host name
    assert AGENT_FIELDS <= set(influx_auth.field_types(db, "wanmon_agent"))
    assert (a["sites"], a["up"], a["down"], a["spool_dropped"]) == (len(SITES), len(SITES), 0, 0)
    assert abs(a["time"] - sites[0]["ts"] * 1e9) < 1000

    sp = rig.spool()
    assert (sp["points"], sp["dropped"], sp["quarantined"]) == (0, 0, 0)
    rig.assert_no_secret_leaked()


# ---------------------------------------------------------------------------
# (2) v2 (/api/v2/write) against VictoriaMetrics
# ---------------------------------------------------------------------------


@need_vm
def test_v2_check_to_victoriametrics(tmp_path):
    with VictoriaMetricsServer() as vm:
        rig = Rig(tmp_path, v2_cfg(vm.url))
        r = rig.run("influx", "check")
        assert r.returncode == 0, r.stdout + r.stderr
        all_sites = [rig.check(), rig.check()]
        series = vm.export('{__name__=~"wanmon_icmp_.*"}', min_samples=2 * len(SITES) * len(ICMP_INT | ICMP_FLOAT),
                           settle_s=1.2)
        by = {(s["metric"]["__name__"], s["metric"]["site_id"]): s for s in series}
        expected_labels = {}
        for sid, name, level, district, addr, parent in SITES:
            lab = {"site_id": sid, "site_name": name, "level": level, "address": addr, "agent": socket.gethostname()}
            if parent:
                lab["parent"] = parent
            if district:
                lab["district"] = district
            expected_labels[sid] = lab
        for field in ICMP_INT | ICMP_FLOAT:
            for sid in SITE_IDS:
                s = by[(f"wanmon_icmp_{field}", sid)]
                labels = dict(s["metric"])
                labels.pop("__name__")
                assert labels == expected_labels[sid]        # no org/bucket label
                want = []
                for cycle in all_sites:
                    site = next(x for x in cycle if x["id"] == sid)
                    v = site["icmp"].get(field) if field != "up" else int(site["status"] in ("up", "degraded"))
                    want.append((_ns(site["ts"]) // 1_000_000, v))   # VictoriaMetrics keeps ms, truncated
                assert list(zip(s["timestamps"], s["values"])) == want, (field, sid)
        # the string field: VictoriaMetrics turns a non-numeric string into 0 (not dropped)
        for s in series:
            if s["metric"]["__name__"] == "wanmon_icmp_status":
                assert set(s["values"]) == {0}
        agent = vm.export('{__name__="wanmon_agent_sites"}', min_samples=2)
        assert len(agent) == 1 and agent[0]["values"] == [len(SITES)] * 2
        assert rig.spool()["points"] == 0
        rig.assert_no_secret_leaked()


# ---------------------------------------------------------------------------
# (3) outage: every point arrives once, in order, with its own timestamp
# ---------------------------------------------------------------------------


@need_influx
def test_outage_ten_cycles_then_everything_arrives_once_in_order(tmp_path):
    with InfluxV1Server(databases=[DB]) as srv, FlakyProxy(srv.url) as px:
        rig = Rig(tmp_path, v1_noauth_cfg(px.url, drain_budget_s=2))
        cycles = [rig.check()]
        assert len(icmp_rows(srv)) == len(SITES)
        px.reset_counts()

        srv.stop()      # SIGTERM, waited for
        px.down()       # first half: connection refused
        for i in range(10):
            if i == 5:
                # second half: the proxy answers again but its upstream is gone (502):
                # retried within drain_budget_s, then left for the next run
                px.up()
            cycles.append(rig.check(max_s=15))
            sp = rig.spool()
            assert sp["points"] == (i + 1) * PER_CYCLE and sp["dropped"] == 0, sp
            assert sp["last_error"], sp
            if i == 4:
                # an explicit drain in the middle of the outage: nothing sent, nothing lost
                r = rig.run("influx", "drain")
                assert r.returncode == 1 and "stopped" in r.stdout, r.stdout + r.stderr
        assert px.forwarded == 0, [(rq.method, rq.path, rq.status) for rq in px.requests]
        assert any(rq.status == 502 for rq in px.requests)

        srv.start()     # same port, same data
        assert len(icmp_rows(srv)) == len(SITES)   # the point written before the outage is still there
        cycles.append(rig.check(max_s=15))
        assert rig.spool()["points"] == 0

        rows = per_site(icmp_rows(srv))
        for sid in SITE_IDS:
            want = [next(x for x in c if x["id"] == sid)["ts"] for c in cycles]
            got = [r["time"] for r in rows[sid]]
            assert len(got) == len(cycles) == 12, (sid, len(got))
            assert all(abs(g - w * 1e9) < 1000 for g, w in zip(got, want)), (sid, got, want)
        assert len(agent_rows(srv)) == 12

        # exactly once and in order, on the wire: the lines the proxy forwarded
        sent = [ln for rq in px.forwarded_requests if "/write" in rq.path for ln in rq.lines]
        assert len(sent) == len(set(sent)) == 11 * PER_CYCLE
        stamps = [line_ts(ln) for ln in sent]
        assert stamps == sorted(stamps)
        assert sorted(set(stamps)) == sorted({_ns(c[0]["ts"]) for c in cycles[1:]})
        rig.assert_no_secret_leaked()


# ---------------------------------------------------------------------------
# (4) kill -9 in the middle of a long drain loses nothing
# ---------------------------------------------------------------------------


@need_influx
def test_kill_9_during_a_long_drain_loses_nothing(tmp_path):
    with InfluxV1Server(databases=[DB]) as srv, FlakyProxy(srv.url) as px:
        rig = Rig(tmp_path, v1_noauth_cfg(px.url, batch_size=3, drain_budget_s=60))
        px.down()
        cycles = [rig.check(max_s=15) for _ in range(8)]
        assert rig.spool()["points"] == 8 * PER_CYCLE
        px.up()
        px.delay_s = 0.15           # a slow server: 15 batches take > 2 s
        env = {k: v for k, v in os.environ.items() if k != "WANMON_CONFIG"}
        env.update(rig.env)
        proc = subprocess.Popen([sys.executable, "-m", "wanmon", "--config", str(rig.config), "check", "--json"],
                                cwd=rig.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while px.forwarded < 4 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            assert proc.poll() is None, "the drain finished before it could be killed"
            assert px.forwarded >= 4
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        left = rig.spool()["points"]
        assert 0 < left < 9 * PER_CYCLE, left   # some batches acknowledged, the rest still spooled
        px.delay_s = 0
        cycles.append(rig.check(max_s=30))
        assert rig.spool()["points"] == 0

        # 8 cycles while down + the killed run's cycle (recorded before its drain) + this one
        rows = per_site(icmp_rows(srv))
        assert {sid: len(rows[sid]) for sid in SITE_IDS} == dict.fromkeys(SITE_IDS, 10)
        assert len(agent_rows(srv)) == 10
        for sid in SITE_IDS:
            want = sorted(_ns(next(x for x in c if x["id"] == sid)["ts"]) for c in cycles)
            got = sorted(r["time"] for r in rows[sid])
            assert all(any(abs(g - w) < 1000 for g in got) for w in want)
        # duplicates on the wire are allowed only as identical lines (same series + timestamp)
        sent = [ln for rq in px.forwarded_requests if "/write" in rq.path for ln in rq.lines]
        assert len(set(sent)) == 10 * PER_CYCLE
        series_and_time = {(re.split(r"(?<!\\) ", ln)[0], line_ts(ln)) for ln in sent}
        assert len(series_and_time) == len(set(sent))


# ---------------------------------------------------------------------------
# (5) the spool bound
# ---------------------------------------------------------------------------


@need_influx
def test_spool_bound_drops_oldest_counts_and_check_stays_fast(tmp_path):
    with InfluxV1Server(databases=[DB]) as srv:
        srv.stop()
        rig = Rig(tmp_path, v1_noauth_cfg(srv.url, spool_max_points=12, drain_budget_s=5))
        cycles = []
        for i in range(5):
            cycles.append(rig.check(max_s=10))
        sp = rig.spool()
        assert (sp["points"], sp["dropped"]) == (12, 5 * PER_CYCLE - 12), sp
        r = rig.run("status")
        assert r.returncode == 0 and f"{5 * PER_CYCLE - 12} dropped" in r.stdout, r.stdout

        srv.start()
        cycles.append(rig.check(max_s=10))
        sp = rig.spool()
        assert (sp["points"], sp["dropped"]) == (0, 6 * PER_CYCLE - 12), sp
        # what arrived: the 12 newest points: cycles 6 and 5 whole, and cycle 4's last two
        # lines (the last site's wanmon_icmp, then wanmon_agent)
        rows = icmp_rows(srv)
        def cycle_of(ns: int) -> int:
            return next(i for i, c in enumerate(cycles) if same_time(ns, c[0]["ts"]))

        got = sorted((r["site_id"], cycle_of(r["time"])) for r in rows)
        want = sorted([(sid, i) for i in (4, 5) for sid in SITE_IDS] + [(SITE_IDS[-1], 3)])
        assert got == want
        agents = agent_rows(srv)
        assert [cycle_of(a["time"]) for a in agents] == [3, 4, 5]
        # the agent's own metrics saw the spool: full (12) and 13 dropped before cycle 6 was added
        assert (agents[-1]["spool_points"], agents[-1]["spool_dropped"]) == (12, 5 * PER_CYCLE - 12)


@need_influx
def test_spool_max_age_drops_old_points(tmp_path):
    with InfluxV1Server(databases=[DB]) as srv:
        srv.stop()
        rig = Rig(tmp_path, v1_noauth_cfg(srv.url, spool_max_age_h=0.0004, drain_budget_s=2))  # 1.44 s
        rig.check(max_s=10)
        time.sleep(1.8)
        rig.check(max_s=10)
        sp = rig.spool()
        assert (sp["points"], sp["dropped"]) == (PER_CYCLE, PER_CYCLE), sp


# ---------------------------------------------------------------------------
# (6) FlakyProxy: 429 / 503 retried, 400 quarantined, 413 split
# ---------------------------------------------------------------------------


@pytest.fixture
def proxied(influx_auth, db, tmp_path):
    with FlakyProxy(influx_auth.url) as px:
        yield px, Rig(tmp_path, v1_cfg(px.url, database=db, drain_budget_s=8)), db


@need_influx
def test_429_with_retry_after_is_retried(influx_auth, proxied):
    px, rig, db = proxied
    px.fail_next(1, 429, retry_after=1, paths=["/write"])
    rig.check(max_s=15)
    w = write_requests(px)
    assert [rq.status for rq in w] == [429, 204]
    assert w[1].t - w[0].t >= 0.95            # Retry-After respected
    assert w[0].lines == w[1].lines           # the same batch again
    assert len(icmp_rows(influx_auth, db)) == len(SITES)
    assert rig.spool()["points"] == 0


@need_influx
def test_503_is_retried_with_backoff(influx_auth, proxied):
    px, rig, db = proxied
    px.fail_next(2, 503, paths=["/write"])
    rig.check(max_s=15)
    assert [rq.status for rq in write_requests(px)] == [503, 503, 204]
    assert len(icmp_rows(influx_auth, db)) == len(SITES)
    assert rig.spool()["points"] == 0


@need_influx
@needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_retry_after_beyond_the_budget_is_remembered_across_runs(influx_auth, db, tmp_path):
    """Retry-After 60 s, the drain's budget 1 s: the store remembers until when; the next run (a
    new process, well within the minute) does not even try; a run whose clock is two minutes on
    (libfaketime: time injected, not waited for) sends everything."""
    with FlakyProxy(influx_auth.url) as px:
        rig = Rig(tmp_path, v1_cfg(px.url, database=db, drain_budget_s=1))
        px.fail_next(1, 429, retry_after=60, paths=["/write"])
        rig.check(max_s=10)
        assert [rq.status for rq in write_requests(px)] == [429]
        rig.check(max_s=10)                      # a new process: still waiting, does not even try
        assert [rq.status for rq in write_requests(px)] == [429]
        assert rig.spool()["points"] == 2 * PER_CYCLE
        rig.check(max_s=10, prefix=prereq.faketime("+120"))  # its clock 2 minutes on (InfluxDB's is not)
        assert [rq.status for rq in write_requests(px)] == [429, 204]
        assert rig.spool()["points"] == 0
        assert len(icmp_rows(influx_auth, db)) == 3 * len(SITES)


@need_influx
def test_400_bad_point_is_quarantined_and_the_queue_moves_on(influx_auth, proxied):
    px, rig, db = proxied
    px.fail_when_body_contains("site_id=que-vo", 400, body={"error": "partial write: field type conflict"})
    rig.check(max_s=15)
    assert "quarantined" in rig.last_stderr and "que-vo" in rig.last_stderr, rig.last_stderr
    sp = rig.spool()
    assert (sp["points"], sp["quarantined"]) == (0, 1), sp
    rig.check(max_s=15)
    sp = rig.spool()
    assert (sp["points"], sp["quarantined"]) == (0, 2), sp
    rows = per_site(icmp_rows(influx_auth, db))
    assert {k: len(v) for k, v in rows.items()} == {sid: 2 for sid in SITE_IDS if sid != "que-vo"}
    assert len(agent_rows(influx_auth, db)) == 2
    # only the bad line was ever refused alone; the others went through
    alone = [rq for rq in write_requests(px) if rq.status == 400 and len(rq.lines) == 1]
    assert len(alone) == 2 and all("site_id=que-vo" in rq.lines[0] for rq in alone)


@need_influx
def test_400_from_the_real_server_field_type_conflict(influx_auth, db, tmp_path):
    # wanmon_agent.cycle_ms is a float; make it a string in this shard first:
    # InfluxDB 1.6 then answers 400 "partial write: field type conflict" for every agent point.
    r = influx_auth.write([f'wanmon_agent,host=elsewhere cycle_ms="not a number" {time.time_ns()}'], db)
    assert r.status == 204, r.text
    rig = Rig(tmp_path, v1_cfg(influx_auth.url, database=db, drain_budget_s=8))
    rig.check(max_s=15)
    rig.check(max_s=15)
    assert "quarantined" in rig.last_stderr, rig.last_stderr
    sp = rig.spool()
    assert (sp["points"], sp["quarantined"]) == (0, 2), sp
    assert {k: len(v) for k, v in per_site(icmp_rows(influx_auth, db)).items()} == dict.fromkeys(SITE_IDS, 2)


@need_influx
def test_413_splits_the_batch(influx_auth, proxied):
    px, rig, db = proxied
    rig.check(max_s=15)
    first = write_requests(px)
    assert len(first) == 1 and len(first[0].lines) == PER_CYCLE
    longest = max(len(ln.encode()) + 1 for ln in first[0].lines)
    px.max_body_bytes = 2 * longest          # two lines fit, a whole cycle does not
    px.reset_counts()
    rig.check(max_s=15)
    w = write_requests(px)
    assert w[0].status == 413 and len(w[0].lines) == PER_CYCLE
    ok = [rq for rq in w if rq.status == 204]
    assert all(len(rq.body) <= px.max_body_bytes for rq in ok)
    assert sorted(ln for rq in ok for ln in rq.lines) == sorted(w[0].lines)   # every line, once
    sp = rig.spool()
    assert (sp["points"], sp["quarantined"]) == (0, 0)
    assert len(icmp_rows(influx_auth, db)) == 2 * len(SITES)


@need_influx
def test_413_for_a_single_point_keeps_it_spooled(influx_auth, proxied):
    px, rig, db = proxied
    px.max_body_bytes = 40                     # smaller than any line
    rig.check(max_s=15)
    sp = rig.spool()
    assert (sp["points"], sp["quarantined"]) == (PER_CYCLE, 0), sp   # not lost, not quarantined
    px.max_body_bytes = None
    rig.check(max_s=15)
    assert rig.spool()["points"] == 0
    assert len(icmp_rows(influx_auth, db)) == 2 * len(SITES)


# ---------------------------------------------------------------------------
# (7) `wanmon influx check`: wrong URL, bad credentials, missing database/bucket
# ---------------------------------------------------------------------------


@need_influx
def test_influx_check_v1_ok_wrong_password_missing_database(influx_auth, db, tmp_path):
    rig = Rig(tmp_path, v1_cfg(influx_auth.url, database=db))
    r = rig.run("influx", "check")
    assert r.returncode == 0, r.stdout + r.stderr

    rig.env["WANMON_INFLUX_PASSWORD"] = "sai-" + PASSWORD[::-1]
    r = rig.run("influx", "check")
    assert r.returncode == 1
    assert "authentication failed" in r.stderr, r.stderr
    assert rig.env["WANMON_INFLUX_PASSWORD"] not in r.stdout + r.stderr
    # a cycle with a wrong password still succeeds; its points wait in the spool
    rig.check(max_s=15)
    assert rig.spool()["points"] == PER_CYCLE
    rig.env["WANMON_INFLUX_PASSWORD"] = PASSWORD

    rig.write(v1_cfg(influx_auth.url, database="no_such_db"))
    r = rig.run("influx", "check")
    assert r.returncode == 1
    assert "no_such_db" in r.stderr and "does not exist" in r.stderr, r.stderr
    rig.assert_no_secret_leaked()


@need_influx
def test_influx_check_wrong_url(tmp_path):
    port = ts.free_port()
    rig = Rig(tmp_path, v1_noauth_cfg(f"http://127.0.0.1:{port}"))
    t = time.monotonic()
    r = rig.run("influx", "check")
    assert r.returncode == 1
    assert "cannot reach" in r.stderr and str(port) in r.stderr, r.stderr
    assert time.monotonic() - t < 10
    # check itself exits 0 with the server unreachable
    rig.check(max_s=10)
    assert rig.spool()["points"] == PER_CYCLE


@need_vm
def test_influx_check_v2_bad_token_and_missing_bucket(tmp_path):
    with VictoriaMetricsServer() as vm, \
            FlakyProxy(vm.url, require_headers={"Authorization": f"Token {TOKEN}"}) as px:
        rig = Rig(tmp_path, v2_cfg(px.url))
        r = rig.run("influx", "check")
        assert r.returncode == 0, r.stdout + r.stderr

        bad = "wrong-token-" + TOKEN[::-1]
        rig.env["INFLUX_TOKEN"] = bad
        r = rig.run("influx", "check")
        assert r.returncode == 1
        assert "authentication failed" in r.stderr and "token" in r.stderr, r.stderr
        assert bad not in r.stdout + r.stderr
        sites = rig.check(max_s=15)          # exit 0; the points stay in the spool
        assert rig.spool()["points"] == PER_CYCLE
        r = rig.run("-vv", "check")
        assert r.returncode == 0
        assert bad not in r.stdout + r.stderr and TOKEN not in r.stdout + r.stderr
        rig.env["INFLUX_TOKEN"] = TOKEN
        rig.check(max_s=15)
        assert rig.spool()["points"] == 0
        got = vm.export('{__name__="wanmon_icmp_sent"}', min_samples=3 * len(SITES), settle_s=1.2)
        assert sum(len(s["values"]) for s in got) == 3 * len(SITES)
        assert any(_ns(sites[0]["ts"]) // 1_000_000 in s["timestamps"] for s in got)

        # a missing bucket, answered as InfluxDB 2.x does
        px.fail_next(-1, 404, when=lambda rq: rq.query.get("bucket") != ["wanmon"],
                     body={"code": "not found", "message": 'bucket "nope" not found'})
        rig.write(v2_cfg(px.url, bucket="nope"))
        r = rig.run("influx", "check")
        assert r.returncode == 1
        assert "nope" in r.stderr and "not found" in r.stderr, r.stderr
        rig.assert_no_secret_leaked()
        assert all(rq.headers.get("authorization", "").startswith("Token ") for rq in px.requests
                   if rq.path.startswith("/api/v2/write"))


# ---------------------------------------------------------------------------
# A backslash in a site name
# ---------------------------------------------------------------------------

BACKSLASH_SITES = [("bs", "Phòng máy \\ tầng 2, UBND", "province", None, "127.0.0.1", None)]


@need_influx
def test_v1_backslash_in_site_name_round_trips(influx_auth, db, tmp_path):
    rig = Rig(tmp_path, v1_cfg(influx_auth.url, database=db), sites=BACKSLASH_SITES)
    rig.check(max_s=15)
    rows = icmp_rows(influx_auth, db)
    assert [r["site_name"] for r in rows] == [BACKSLASH_SITES[0][1]]


@need_vm
def test_v2_backslash_in_site_name_round_trips(tmp_path):
    with VictoriaMetricsServer() as vm:
        rig = Rig(tmp_path, v2_cfg(vm.url), sites=BACKSLASH_SITES)
        rig.check(max_s=15)
        got = vm.export('{__name__="wanmon_icmp_sent"}', min_samples=1)
        assert [s["metric"]["site_name"] for s in got] == [BACKSLASH_SITES[0][1]]


# Every backslash validate allows, in every tag wanmon writes from the config: before a
# comma, '=' and space, doubled, in a district and in the [agent] id. (A trailing one, which
# InfluxDB 1.x cannot store, is refused by validate: tests/test_config.py.)
BACKSLASH_EVERYWHERE = [
    ("bs1", r"Kho C:\dữ liệu\ tầng 2", "province", None, "127.0.0.1", None),
    ("bs2", r"a\,b\=c\ d\\e", "district", r"Tiên\Du", "127.0.0.2", "bs1"),
]
BACKSLASH_AGENT = r"noc\hn"


@need_influx
def test_v1_every_backslash_validate_allows_round_trips(influx_auth, db, tmp_path):
    rig = Rig(tmp_path, v1_cfg(influx_auth.url, database=db), sites=BACKSLASH_EVERYWHERE)
    rig.config.write_text(rig.config.read_text(encoding="utf-8").replace(
        "[snmp]", f"[agent]\nid = {_toml(BACKSLASH_AGENT)}\n\n[snmp]", 1), encoding="utf-8")
    assert rig.run("validate").returncode == 0
    rig.check(max_s=15)
    rows = per_site(icmp_rows(influx_auth, db))
    got = {sid: (r[0]["site_name"], r[0]["district"], r[0]["agent"]) for sid, r in rows.items()}
    assert got == {sid: (name, district, BACKSLASH_AGENT) for sid, name, _, district, _, _ in BACKSLASH_EVERYWHERE}
    assert [a["agent"] for a in agent_rows(influx_auth, db)] == [BACKSLASH_AGENT]
    assert rig.spool()["quarantined"] == 0


@need_influx
def test_v1_a_device_name_ending_in_a_backslash_is_stored_not_refused(influx_auth, db):
    """An interface's name comes from the device, so validate cannot refuse it: InfluxDB 1.x
    refuses the line as it is ('invalid tag format'); wanmon writes a space after the backslash."""
    from wanmon import lineproto

    names = ["Gi0/0\\", "C:\\\\", "\\", "plain"]
    lines = [lineproto.line("wanmon_if", {"site_id": "s", "ifname": n}, {"in_bps": 1.0}, 1.0 + i, v1=True)
             for i, n in enumerate(names)]
    r = influx_auth.write(lines, db)
    assert r.status == 204, r.text
    stored = [row["ifname"] for row in influx_auth.rows('SELECT * FROM "wanmon_if"', db)]
    assert stored == ["Gi0/0\\ ", "C:\\\\ ", "\\ ", "plain"]
