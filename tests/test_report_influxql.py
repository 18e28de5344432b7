"""The report's figures from InfluxDB (issue 13, acceptance 3): the README's InfluxQL,
run against the real InfluxDB 1.6 server that real `wanmon check` runs wrote to, equals
`wanmon report` on the same history to 0.01 percentage point, per site and per level.

The checks run in the lab's client namespace (sites going down and back behind real
ICMP, see test_alerts_integration.py), and so does influxd (started from a thread
inside that namespace), on its loopback."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402
from smtp_server import in_netns  # noqa: E402
from test_alerts_integration import base_sites, check, hosts, lab, site_toml, wm, write_config  # noqa: E402,F401
from tsdb_servers import influx_in_netns  # noqa: E402

_ok, _why = ts.influx_available()
pytestmark = prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)

# The README's queries ('The same figure from InfluxDB'), with the period and the names filled in.
SITE_Q = ('SELECT sum("prev_available_s") / sum("prev_observed_s") * 100 AS "availability_pct", '
          'sum("prev_down_s") AS "downtime_s", sum("prev_unreachable_s") AS "unreachable_s" '
          'FROM "wanmon_icmp" WHERE time > {start} AND time <= {end} GROUP BY "site_id"')
LEVEL_Q = ('SELECT sum("prev_available_s") / sum("prev_observed_s") * 100 AS "availability_pct" '
           'FROM "wanmon_icmp" WHERE "level" = \'{level}\' AND time > {start} AND time <= {end}')


@pytest.fixture
def influx(lab):  # noqa: F811
    """influxd inside the lab's client namespace, on its loopback."""
    with influx_in_netns(lab.client, databases=["wanmon"]) as srv:
        yield srv


def test_influxql_gives_the_report_figures(lab, hosts, influx, tmp_path):  # noqa: F811
    d, c, e = hosts.new(), hosts.new(), hosts.new()
    sites = (base_sites(2)
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d, district="Gia Bình", parent="core")
             + site_toml("gia-binh-dong-cuu", "UBND xã Đông Cứu", "commune", c, district="Gia Bình", parent="gia-binh")
             + site_toml("gia-binh-lang-ngam", "UBND xã Lãng Ngâm", "commune", e, district="Gia Bình", parent="core"))
    extra = f'[influxdb]\nurl = "{influx.url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n'
    cfg = write_config(tmp_path, None, sites, interval_s=1, alerts="", timeout_ms=200, extra=extra)
    stamps: list[float] = []

    def run() -> None:
        out = json.loads(check(lab, cfg, "--json").stdout)
        stamps.append(out[0]["ts"])

    for _ in range(3):
        run()
    hosts.down(d, c)
    for _ in range(3):
        run()
    hosts.up(d, c)
    run()
    hosts.down(e)
    run()
    time.sleep(3.5)            # longer than the cap (2 s): unobserved, in both
    run()
    hosts.up(e)
    for _ in range(2):
        run()
    r_last = wm(lab, cfg, "-v", "influx", "check")
    st = json.loads(wm(lab, cfg, "status", "--json").stdout)
    assert st["spool"]["points"] == 0, (st["spool"], r_last.stderr)   # everything reached the server

    start, end = stamps[1], stamps[-1]                 # edges on cycle times: exact
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()  # noqa: E731
    r = wm(lab, cfg, "report", "--from", iso(start), "--to", iso(end), "--format", "json", "--out", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    ns = lambda t: str(round(t * 1e9))  # noqa: E731

    def q(text: str) -> list[dict]:
        return in_netns(lab.client, influx.rows, text, "wanmon")

    got = {row["site_id"]: row for row in q(SITE_Q.format(start=ns(start), end=ns(end)))}
    assert set(got) == {s["id"] for s in rep["sites"]}
    for s in rep["sites"]:
        g = got[s["id"]]
        assert g["availability_pct"] == pytest.approx(s["availability_pct"], abs=0.01), (s, g)
        assert g["downtime_s"] == pytest.approx(s["downtime_s"], abs=0.01), (s, g)
        assert g["unreachable_s"] == pytest.approx(s["unreachable_s"], abs=0.01), (s, g)
    assert {s["id"]: s["downtime_s"] > 0 for s in rep["sites"]}["gia-binh"]
    for lv in rep["levels"]:
        rows = q(LEVEL_Q.format(level=lv["level"], start=ns(start), end=ns(end)))
        assert len(rows) == 1
        assert rows[0]["availability_pct"] == pytest.approx(lv["availability_pct"], abs=0.01), lv
