"""The Grafana dashboard (issue 14): the shipped JSON is what tools/grafana_dashboard.py builds
(grafana-foundation-sdk), and every panel's and variable's InfluxQL returns the series and
columns the panel expects from the real InfluxDB 1.6, filled by real `wanmon check` runs
(two agents, loopback sites, a real net-snmp snmpd for the SNMP panels).

Grafana's macros are expanded as Grafana does for "All" and a 24 h range:
$timeFilter -> time > now() - 24h, $__interval -> 1s, a variable -> its "All" value .*"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import snmp_agents as sa  # noqa: E402
import tsdb_servers as ts  # noqa: E402
from conftest import wanmon  # noqa: E402
from snmp_agents import NetSnmpAgent  # noqa: E402
from tsdb_servers import InfluxV1Server  # noqa: E402

grafana_dashboard = prereq.need_module("grafana_dashboard", what="grafana-foundation-sdk (tools/grafana_dashboard.py)")

_ok, _why = ts.influx_available()
_snmp_ok, _snmp_why = sa.netsnmp_available()


def expand(q: str, **values: str) -> str:
    q = q.replace("$timeFilter", "time > now() - 24h").replace("$__interval", "1s")
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*"), q)


def test_the_shipped_dashboard_is_what_the_code_builds():
    shipped = (grafana_dashboard.OUT).read_text(encoding="utf-8")
    assert shipped == grafana_dashboard.text(), "regenerate: python tools/grafana_dashboard.py"
    d = json.loads(shipped)
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "level", "district", "site", "agent"]
    queries = [t["query"] for p in d["panels"] for t in p.get("targets", [])]
    assert queries == [p.query for p in grafana_dashboard.PANELS]


@prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)
@prereq.needs(_snmp_ok, "net-snmp (snmpd, snmpget)", prereq.NETSNMP, _snmp_why)
def test_every_panel_query_returns_what_the_panel_expects(tmp_path):
    with InfluxV1Server(databases=["wanmon"]) as influx, NetSnmpAgent(sys_name="grafana-core") as agent:
        for name, role, extra in (("agent-a", "primary", ""), ("agent-b", "standby", "")):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "sites.toml").write_text(f"""[store]
path = "var/wanmon.db"

[icmp]
count = 1
interval_ms = 20
timeout_ms = 300

[snmp]
enabled = true
interval_s = 0
timeout_ms = 2000
community_env = "COMM"

[agent]
id = "{name}"
role = "{role}"

[influxdb]
url = "{influx.url}"
api = "v1"
database = "wanmon"

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"
[sites.snmp]
port = {agent.port}

[[sites]]
id = "gia-binh"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "core"
address = "127.0.0.2"

[[sites]]
id = "gia-binh-dong-cuu"
name = "UBND xã Đông Cứu"
level = "commune"
district = "Gia Bình"
parent = "gia-binh"
address = "127.0.0.3"
""", encoding="utf-8")
            for _ in range(3):
                r = wanmon("--config", str(folder / "sites.toml"), "check", cwd=folder, env={"COMM": agent.community})
                assert r.returncode == 0, r.stderr

        def rows(q: str) -> list[dict]:
            out = []
            for res in influx.query(q, "wanmon").get("results", []):
                for s in res.get("series") or []:
                    out.append(s)
            return out

        for name, _, q in grafana_dashboard.VARIABLES:
            vals = {v[1] for s in rows(expand(q)) for v in s["values"]}
            want = {"level": {"province", "district", "commune"}, "district": {"Gia Bình"},
                    "site": {"core", "gia-binh", "gia-binh-dong-cuu"}, "agent": {"agent-a", "agent-b"}}[name]
            assert want <= vals, (name, vals)

        for p in grafana_dashboard.PANELS:
            series = rows(expand(p.query))
            assert series, f"{p.title}: no series"
            for s in series:
                assert s["columns"] == ["time", *p.columns], (p.title, s["columns"])
                assert set(s.get("tags") or {}) == set(p.group_by), (p.title, s.get("tags"))
                assert any(v is not None for row in s["values"] for v in row[1:]), (p.title, s["values"][:3])
            tags = [s.get("tags") or {} for s in series]
            if "agent" in p.group_by:
                assert {t["agent"] for t in tags} == {"agent-a", "agent-b"}, p.title
            if p.title.startswith("Availability"):
                assert {t["level"] for t in tags} == {"province", "district", "commune"}
                assert all(abs(s["values"][0][1] - 100.0) < 1e-9 for s in series)  # loopback: always up
            if p.title.startswith("Uplink") or p.title.startswith("Interface"):
                assert {t["site_id"] for t in tags} == {"core"}

        # a chosen district leaves the province site out; a chosen agent only its own series
        st = rows(expand(grafana_dashboard.PANELS[1].query, district="Gia Bình", agent="agent-b"))
        assert {(s["tags"]["site_id"], s["tags"]["agent"]) for s in st} == {("gia-binh", "agent-b"),
                                                                            ("gia-binh-dong-cuu", "agent-b")}
