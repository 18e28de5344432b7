"""Self-tests of the time-series database fixtures (tests/tsdb_servers.py):
Debian's InfluxDB 1.6 and VictoriaMetrics, and the FlakyProxy, checked with
plain HTTP (urllib) and with influxdb-client.  Everything listens on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402
from tsdb_servers import FlakyProxy, InfluxError, InfluxV1Server, VictoriaMetricsServer, http_request  # noqa: E402

_ifx_ok, _ifx_why = ts.influx_available()
_vm_ok, _vm_why = ts.victoria_available()
need_influx = prereq.needs(_ifx_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _ifx_why)
need_vm = prereq.needs(_vm_ok, "VictoriaMetrics", prereq.VICTORIA, _vm_why)

# A Vietnamese tag value with every character line protocol makes special in
# tag values (space, comma, equals sign) plus diacritics, and how it is escaped.
SITE_NAME = "UBND huyện Tiên Du, x=1"
DISTRICT = "Tiên Du"
ADDRESS = "Số 1, đường Lý Thường Kiệt, thị trấn Lim"


def esc_tag(v: str) -> str:
    """Line protocol escaping of a tag key/value (and a measurement's commas/spaces)."""
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def esc_str_field(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_escaping_matches_the_documented_example():
    assert esc_tag("UBND huyện Tiên Du, x") == r"UBND\ huyện\ Tiên\ Du\,\ x"


def _line(measurement: str, tags: dict, fields: str, ts_ns: int) -> str:
    t = ",".join(f"{esc_tag(k)}={esc_tag(v)}" for k, v in tags.items())
    return f"{measurement},{t} {fields} {ts_ns}"


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process PID holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:
                continue
            hexaddr, hexport = local.split(":")
            raw = bytes.fromhex(hexaddr)
            if fam == socket.AF_INET:
                addr = socket.inet_ntop(fam, raw[::-1])
            else:
                addr = socket.inet_ntop(fam, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.append((addr, int(hexport, 16)))
    return out


def _refused(url: str) -> bool:
    try:
        http_request("GET", url, timeout=2)
    except urllib.error.URLError as e:
        return isinstance(e.reason, ConnectionRefusedError)
    except ConnectionRefusedError:
        return True
    return False


# ---------------------------------------------------------------------------
# InfluxDB 1.6
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def influx():
    if not _ifx_ok:
        prereq.need("InfluxDB 1.x (influxd)", prereq.INFLUXDB, _ifx_why)
    with InfluxV1Server(databases=["wanmon"]) as s:
        yield s


@need_influx
def test_influx_listens_on_loopback_only(influx):
    socks = _listening(influx.pid)
    assert socks, "influxd holds no listening socket?"
    assert all(a == "127.0.0.1" for a, _ in socks), socks
    assert {p for _, p in socks} == {influx.port, influx.rpc_port}
    assert 8086 not in {p for _, p in socks} and 8088 not in {p for _, p in socks}
    conf = influx.conf_path.read_text()
    assert "reporting-disabled = true" in conf
    assert str(influx.dir) in conf   # meta/data/wal under the temp dir
    r = http_request("GET", influx.url + "/ping")
    assert r.status == 204 and r.headers["x-influxdb-version"].startswith("1.")


@need_influx
def test_influx_roundtrip_vietnamese_tags_and_ns_timestamps(influx):
    t0 = 1_795_000_000_123_456_789
    tags = {"site_id": "tien-du", "site_name": SITE_NAME, "district": DISTRICT, "address": ADDRESS,
            "level": "district"}
    down_x = esc_str_field('down "x"')
    lines = [
        _line("m_rt", tags, f'sent=3i,received=2i,loss_pct=33.333333333333336,up=1i,status={esc_str_field("up")}', t0),
        _line("m_rt", tags, f'sent=3i,received=0i,loss_pct=100,up=0i,status={down_x}', t0 + 1),
        _line("m_rt", {**tags, "site_id": "other"}, "sent=1i", t0),
    ]
    assert r"site_name=UBND\ huyện\ Tiên\ Du\,\ x\=1" in lines[0]
    r = influx.write(lines, "wanmon")
    assert r.status == 204, r.text
    rows = influx.rows("""SELECT * FROM "m_rt" WHERE "site_id"='tien-du'""", "wanmon")
    assert [row["time"] for row in rows] == [t0, t0 + 1]   # nanoseconds, exact
    assert rows[0]["site_name"] == SITE_NAME
    assert rows[0]["district"] == DISTRICT and rows[0]["address"] == ADDRESS
    assert (rows[0]["sent"], rows[0]["received"], rows[0]["loss_pct"], rows[0]["up"], rows[0]["status"]) == \
        (3, 2, 33.333333333333336, 1, "up")
    assert rows[1]["status"] == 'down "x"' and rows[1]["loss_pct"] == 100
    # also selectable by the Vietnamese value itself
    rows2 = influx.rows(f"""SELECT "sent" FROM "m_rt" WHERE "site_name"={ts.influxql_string(SITE_NAME)}""", "wanmon")
    assert len(rows2) == 3   # "other" carries the same name
    assert influx.field_types("wanmon", "m_rt") == {"sent": "integer", "received": "integer", "loss_pct": "float",
                                                    "up": "integer", "status": "string"}
    assert set(influx.tag_keys("wanmon", "m_rt")) == set(tags)
    # RFC 3339 form keeps the nanoseconds too
    raw = influx.query("""SELECT "sent" FROM "m_rt" WHERE "site_id"='tien-du'""", "wanmon", epoch=None)
    assert raw["results"][0]["series"][0]["values"][0][0] == "2026-11-18T11:06:40.123456789Z"


@need_influx
def test_influx_same_series_and_time_collapse(influx):
    line = _line("m_dup", {"site_id": "a"}, "v=1i", 1_795_000_000_000_000_001)
    for _ in range(3):
        assert influx.write([line], "wanmon").status == 204
    rows = influx.rows('SELECT * FROM "m_dup"', "wanmon")
    assert len(rows) == 1


@need_influx
def test_influx_error_statuses(influx):
    r = influx.write(["m v=1"], "no_such_db")
    assert r.status == 404 and "database not found" in r.json()["error"]
    r = influx.write(["garbage"], "wanmon")
    assert r.status == 400 and "unable to parse" in r.json()["error"]
    r = influx.write(["m v=1"], "wanmon", rp="no_such_rp")
    assert r.status == 500 and "retention policy not found" in r.json()["error"]   # a 5xx, not a 4xx!
    # 1.6 has no v2 write endpoint
    r = http_request("POST", influx.url + "/api/v2/write?org=o&bucket=wanmon", body="m v=1")
    assert r.status == 404
    with pytest.raises(InfluxError) as ei:
        influx.query("SELECT * FROM nope WHERE", "wanmon")
    assert ei.value.status == 400


@need_influx
def test_influx_query_get_and_post(influx):
    influx.create_database("scratch db")   # POST (CREATE)
    assert "scratch db" in influx.databases()   # GET (SHOW)
    influx.drop_database("scratch db")
    assert "scratch db" not in influx.databases()


@need_influx
def test_influxdb_client_against_v1_server(influx):
    """influxdb-client's v2 write API is refused by 1.6 (404); ping works."""
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    with InfluxDBClient(url=influx.url, token="u:p", org="-", timeout=5000) as c:
        assert c.ping() is True
        with pytest.raises(ApiException) as ei:
            c.write_api(write_options=SYNCHRONOUS).write(bucket="wanmon/autogen", record="m v=1")
        assert ei.value.status == 404


@need_influx
def test_influx_data_survives_stop_start():
    with InfluxV1Server(databases=["wanmon"]) as s:
        port, rpc, data = s.port, s.rpc_port, s.dir
        t = 1_795_000_000_987_654_321
        assert s.write([_line("m", {"site_id": "x", "site_name": SITE_NAME}, "v=42i", t)], "wanmon").status == 204
        pid = s.pid
        rc = s.stop()
        assert rc == 0   # SIGTERM: a clean exit
        assert not s.running and not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        assert _refused(f"http://127.0.0.1:{port}/ping")
        s.start()
        assert (s.port, s.rpc_port, s.dir) == (port, rpc, data)
        rows = s.rows("""SELECT * FROM "m" WHERE "site_id"='x'""", "wanmon")
        assert [(r["time"], r["v"], r["site_name"]) for r in rows] == [(t, 42, SITE_NAME)]
    assert not data.exists()


@need_influx
def test_influx_auth():
    with InfluxV1Server(auth=True, admin_password="đúng-mật-khẩu 1", databases=["wanmon"]) as s:
        assert "auth-enabled = true" in s.conf_path.read_text()
        good = ("admin", "đúng-mật-khẩu 1")
        bad = ("admin", "sai")
        assert s.write(["m v=1i 1"], "wanmon", auth=good).status == 204
        r = s.write(["m v=2i 2"], "wanmon", auth=bad)
        assert r.status == 401 and r.json()["error"] == "authorization failed"
        r = s.write(["m v=3i 3"], "wanmon", auth=False)
        assert r.status == 401
        # u/p query parameters, as some clients send them
        r = http_request("POST", s.url + "/write?" + urllib.parse.urlencode({"db": "wanmon", "u": "admin", "p": "sai"}),
                         body="m v=4i 4")
        assert r.status == 401
        with pytest.raises(InfluxError) as ei:
            s.query("SHOW DATABASES", auth=bad)
        assert ei.value.status == 401
        s.restart()
        assert [r["v"] for r in s.rows('SELECT * FROM "m"', "wanmon")] == [1]
        # a non-admin user with rights on one database
        s.create_user("writer", "w-pass", grant_all_on="wanmon")
        assert s.write(["m v=5i 5"], "wanmon", auth=("writer", "w-pass")).status == 204


# ---------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vm():
    if not _vm_ok:
        prereq.need("VictoriaMetrics", prereq.VICTORIA, _vm_why)
    with VictoriaMetricsServer() as s:
        yield s


@need_vm
def test_vm_listens_on_loopback_only(vm):
    socks = _listening(vm.pid)
    assert socks and all(a == "127.0.0.1" for a, _ in socks), socks
    assert {p for _, p in socks} == {vm.port}
    assert http_request("GET", vm.url + "/health").status == 200
    assert http_request("GET", vm.url + "/ping").status == 204


@need_vm
def test_vm_maps_line_protocol_via_v2_write(vm):
    t = 1_795_000_000_123_456_789
    tags = {"site_id": "vm-a", "site_name": SITE_NAME, "district": DISTRICT}
    line = _line("wanmon_lp", tags,
                 'sent=3i,loss_pct=33.5,up=1i,ok=true,down=false,num_str="12.5",status="up"', t)
    r = vm.write([line], org="my-org", bucket="my-bucket")
    assert r.status == 204, r.text
    got = {name: (labels, ts_ms, v) for name, labels, ts_ms, v in vm.samples('{__name__=~"wanmon_lp_.*"}', min_samples=7)}
    assert set(got) == {"wanmon_lp_sent", "wanmon_lp_loss_pct", "wanmon_lp_up", "wanmon_lp_ok", "wanmon_lp_down",
                        "wanmon_lp_num_str", "wanmon_lp_status"}
    for labels, ts_ms, _ in got.values():
        assert labels == tags          # org/bucket add no label; values unescaped exactly
        assert ts_ms == t // 1_000_000  # ms, truncated
    assert got["wanmon_lp_sent"][2] == 3 and got["wanmon_lp_loss_pct"][2] == 33.5
    assert got["wanmon_lp_ok"][2] == 1 and got["wanmon_lp_down"][2] == 0
    assert got["wanmon_lp_num_str"][2] == 12.5   # a numeric string becomes the number
    assert got["wanmon_lp_status"][2] == 0       # any other string becomes 0 (not dropped)


@need_vm
def test_vm_v1_write_adds_db_label_and_bad_lines_are_204(vm):
    r = http_request("POST", vm.url + "/write?db=mydb", body="wanmon_v1w,site_id=a v=1 1795000000000000000")
    assert r.status == 204
    r = vm.write(["wanmon_badw,site_id=a v=1 1795000000000000000", "this is not line protocol",
                  "wanmon_badw,site_id=b v=2 1795000000000000000"])
    assert r.status == 204   # the bad line is only skipped (and logged)
    assert [s[1] for s in vm.samples('{__name__="wanmon_v1w_v"}', min_samples=1)] == [{"db": "mydb", "site_id": "a"}]
    assert [s[1]["site_id"] for s in vm.samples('{__name__="wanmon_badw_v"}', min_samples=2)] == ["a", "b"]


@need_vm
def test_vm_with_influxdb_client(vm):
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    t = 1_795_000_001_000_000_000 + 987_654_321
    with InfluxDBClient(url=vm.url, token="any-token", org="wanmon", timeout=5000) as c:
        assert c.ping() is True
        p = (Point("wanmon_cli").tag("site_id", "ic").tag("site_name", SITE_NAME)
             .field("rtt_avg_ms", 1.25).field("sent", 2).time(t, WritePrecision.NS))
        c.write_api(write_options=SYNCHRONOUS).write(bucket="wanmon", record=p)
    got = vm.samples('{__name__=~"wanmon_cli_.*"}', min_samples=2)
    assert [(n, l["site_name"], ts_ms, v) for n, l, ts_ms, v in got] == [
        ("wanmon_cli_rtt_avg_ms", SITE_NAME, t // 1_000_000, 1.25),
        ("wanmon_cli_sent", SITE_NAME, t // 1_000_000, 2),
    ]


@need_vm
def test_vm_data_survives_stop_start():
    with VictoriaMetricsServer() as s:
        port, d = s.port, s.data_dir
        lines = [_line("wanmon_rs", {"site_id": f"s{i}", "site_name": SITE_NAME}, f"v={i}i", 1_795_000_000_000_000_000 + i * 1_000_000)
                 for i in range(50)]
        assert s.write(lines).status == 204
        # no export/flush before the stop: SIGTERM must flush by itself
        assert s.stop() == 0
        assert _refused(f"http://127.0.0.1:{port}/health")
        s.start()
        assert (s.port, s.data_dir) == (port, d)
        got = s.samples('{__name__="wanmon_rs_v"}', min_samples=50)
        assert sorted((lab["site_id"], t, v) for _, lab, t, v in got) == \
            sorted((f"s{i}", 1_795_000_000_000 + i, i) for i in range(50))


@need_vm
def test_vm_duplicates_are_kept_without_dedup(vm):
    line = "wanmon_dupv,site_id=a v=1 1795000000000000000"
    vm.write([line]); vm.write([line])
    got = vm.export('{__name__="wanmon_dupv_v"}', min_samples=2, settle_s=1.2)
    assert got[0]["timestamps"] == [1_795_000_000_000, 1_795_000_000_000]


# ---------------------------------------------------------------------------
# FlakyProxy
# ---------------------------------------------------------------------------


@need_influx
def test_proxy_canned_statuses_then_forwards(influx):
    with FlakyProxy(influx.url) as px:
        px.fail_next(1, 429, retry_after=2)
        px.fail_next(1, 503)
        px.fail_next(2, 500)
        px.fail_next(1, 400, body={"error": "partial write: bad"})
        px.fail_next(1, 413)
        line = _line("m_px", {"site_id": "p", "site_name": SITE_NAME}, "v=1i", 1_795_000_000_000_000_777)
        url = px.url + "/write?db=wanmon&precision=ns"
        got = []
        for _ in range(8):
            r = http_request("POST", url, body=line)
            got.append(r.status)
            if r.status == 429:
                assert r.headers["retry-after"] == "2"
        assert got == [429, 503, 500, 500, 400, 413, 204, 204]
        assert px.forwarded == 2 and px.statuses() == got
        assert px.requests[4].lines == [line]   # the body is recorded
        assert px.pending_failures == 0
        rows = influx.rows("""SELECT * FROM "m_px" WHERE "site_id"='p'""", "wanmon")
        assert [(r["time"], r["site_name"]) for r in rows] == [(1_795_000_000_000_000_777, SITE_NAME)]
        # reads go through too
        r = http_request("GET", px.url + "/ping")
        assert r.status == 204 and px.forwarded == 3


@need_influx
def test_proxy_down_refuses_then_up_on_same_port(influx):
    with FlakyProxy(influx.url) as px:
        port = px.port
        assert http_request("GET", px.url + "/ping").status == 204
        px.down()
        assert _refused(f"http://127.0.0.1:{port}/ping")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        px.up()
        assert px.port == port
        assert http_request("GET", px.url + "/ping").status == 204
        assert px.forwarded == 2


@need_influx
def test_proxy_max_body_bytes_413(influx):
    with FlakyProxy(influx.url, max_body_bytes=200) as px:
        small = "\n".join(f"m_big,site_id=s v={i}i {1_795_000_000_000_000_000 + i}" for i in range(3))
        big = "\n".join(f"m_big,site_id=s v={i}i {1_795_000_000_000_000_000 + i}" for i in range(30))
        assert len(small.encode()) <= 200 < len(big.encode())
        assert http_request("POST", px.url + "/write?db=wanmon", body=big).status == 413
        assert http_request("POST", px.url + "/write?db=wanmon", body=small).status == 204
        assert px.statuses() == [413, 204] and px.forwarded == 1
        assert len(influx.rows('SELECT * FROM "m_big"', "wanmon")) == 3


@need_influx
def test_proxy_only_paths(influx):
    with FlakyProxy(influx.url) as px:
        px.fail_next(1, 503, paths=["/write"])
        assert http_request("GET", px.url + "/ping").status == 204       # not a /write: forwarded
        assert http_request("POST", px.url + "/write?db=wanmon", body="m_op v=1i 1").status == 503
        assert http_request("POST", px.url + "/write?db=wanmon", body="m_op v=1i 1").status == 204


@need_vm
def test_proxy_with_influxdb_client_gzip(vm):
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    with FlakyProxy(vm.url) as px, \
            InfluxDBClient(url=px.url, token="secret-token", org="wanmon", timeout=5000, enable_gzip=True) as c:
        w = c.write_api(write_options=SYNCHRONOUS)
        line = "wanmon_pxc,site_id=g v=5 1795000000000000000"
        px.fail_next(1, 429, retry_after=1)
        with pytest.raises(ApiException) as ei:
            w.write(bucket="wanmon", record=line)
        assert ei.value.status == 429 and ei.value.headers.get("Retry-After") == "1"
        w.write(bucket="wanmon", record=line)
        assert px.statuses() == [429, 204]
        req = px.requests[-1]
        assert req.path.startswith("/api/v2/write?") and req.query["bucket"] == ["wanmon"]
        assert req.headers["content-encoding"] == "gzip" and req.lines == [line]
        assert req.headers["authorization"] == "Token secret-token"
    assert [(s[2], s[3]) for s in vm.samples('{__name__="wanmon_pxc_v"}', min_samples=1, settle_s=1.2)] == [(1_795_000_000_000, 5)]


@need_influx
def test_proxy_upstream_gone_gives_502():
    with InfluxV1Server() as s, FlakyProxy(s.url) as px:
        s.stop()
        r = http_request("GET", px.url + "/ping")
        assert r.status == 502 and px.forwarded == 0
        s.start()
        assert http_request("GET", px.url + "/ping").status == 204 and px.forwarded == 1


@need_influx
def test_proxy_body_rule_auth_and_delay(influx):
    with FlakyProxy(influx.url, require_headers={"X-Token": "good"}, delay_s=0.3) as px:
        px.fail_when_body_contains("site_id=bad", 400, body={"error": "partial write: field type conflict"})
        good = {"X-Token": "good"}
        assert http_request("POST", px.url + "/write?db=wanmon", body="m_rule,site_id=ok v=1i 1").status == 401
        r = http_request("POST", px.url + "/write?db=wanmon", body="m_rule,site_id=ok v=1i 1\nm_rule,site_id=bad v=1i 1",
                         headers=good)
        assert r.status == 400 and "field type conflict" in r.json()["error"]
        t = time.monotonic()
        assert http_request("POST", px.url + "/write?db=wanmon", body="m_rule,site_id=ok v=1i 1", headers=good).status == 204
        assert time.monotonic() - t >= 0.3
        assert px.statuses() == [401, 400, 204] and px.forwarded == 1
        assert "x-token" not in {k for k in px.requests[0].headers}


@need_vm
def test_vm_visibility_and_dedup_option():
    """A written point shows within a few seconds (force_flush + polling); with
    dedup_interval one sample per series and timestamp is left."""
    with VictoriaMetricsServer(dedup_interval="1ms") as s:
        assert "-dedup.minScrapeInterval=1ms" in s.argv()
        line = "wanmon_vis,site_id=a v=1 1795000000000000000"
        t = time.monotonic()
        s.write([line]); s.write([line]); s.write([line.replace("v=1", "v=2")])
        got = s.export('{__name__="wanmon_vis_v"}', min_samples=1, timeout=10)
        assert time.monotonic() - t < 5
        got = s.export('{__name__="wanmon_vis_v"}', settle_s=1.2)
        assert [(x["timestamps"], x["values"]) for x in got] == [([1_795_000_000_000], [2])]
