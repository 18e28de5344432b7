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


def layout_problems(panels: list[dict]) -> list[str]:
    """Every panel (rows too, and the panels of a collapsed row) inside Grafana's 24-column
    grid, with a size, and no two rectangles overlapping."""
    flat = [q for p in panels for q in (p, *p.get("panels", []))]
    out = []
    for p in flat:
        g = p["gridPos"]
        if not (g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24):
            out.append(f"{p['title']}: {g} is not inside the 24-column grid")
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            ga, gb = a["gridPos"], b["gridPos"]
            if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                    and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
                out.append(f"{a['title']} {ga} overlaps {b['title']} {gb}")
    return out


def test_the_layout_check_sees_what_was_wrong():
    # the shipped dashboard of issue 22: a full-width table beside a half-width gauge
    gauge = {"title": "Availability", "gridPos": {"x": 0, "y": 1, "w": 12, "h": 6}}
    wide = {"title": "Current status", "gridPos": {"x": 12, "y": 1, "w": 24, "h": 10}}
    below = {"title": "RTT", "gridPos": {"x": 0, "y": 5, "w": 12, "h": 8}}
    problems = layout_problems([gauge, wide, below])
    assert any("Current status" in p and "not inside" in p for p in problems)
    assert any("Availability" in p and "overlaps RTT" in p for p in problems)
    assert layout_problems([gauge, {**wide, "gridPos": {"x": 12, "y": 1, "w": 12, "h": 10}}]) == []


def test_every_panel_lies_inside_the_grid_without_overlap():
    d = json.loads(grafana_dashboard.OUT.read_text(encoding="utf-8"))
    assert layout_problems(d["panels"]) == []
    titles = [p["title"] for p in d["panels"] if p["type"] != "row"]
    assert titles == [p.title for p in grafana_dashboard.PANELS]   # every panel placed, none lost


def test_the_status_table_shows_words_and_the_pages_colours():
    from wanmon.lineproto import STATUS_CODE
    from wanmon.words import PAGE

    d = json.loads(grafana_dashboard.OUT.read_text(encoding="utf-8"))
    (panel,) = [p for p in d["panels"] if p["title"] == "Current status"]
    (q,) = [p for p in grafana_dashboard.PANELS if p.title == "Current status"]
    props = {}
    for o in panel["fieldConfig"]["overrides"]:
        props.setdefault(o["matcher"]["options"], {}).update({pr["id"]: pr["value"] for pr in o["properties"]})
    assert set(props) <= set(q.columns)                 # overrides name fields the query returns
    code = props["status_code"]
    (mapping,) = code["mappings"]
    assert mapping["type"] == "value"
    css = (Path(grafana_dashboard.REPO) / "templates" / "page.html.j2").read_text(encoding="utf-8")
    root = dict(re.findall(r"--(\w+):(#[0-9a-f]{6})", css.split(":root{", 1)[1].split("}", 1)[0]))
    page_colour = {"up": root["up"], "degraded": root["deg"], "down": root["down"],
                   "unreachable": root["unr"], "unknown": root["unk"]}
    shown = {k: (v["text"], v["color"]) for k, v in mapping["options"].items()}
    assert shown == {str(c): (PAGE["en"][s], page_colour[s]) for s, c in STATUS_CODE.items()}
    assert len({c for _, c in shown.values()}) == 5                    # five statuses, five colours
    assert code["custom.cellOptions"]["type"] == "color-background"    # the colour fills the cell
    assert props["status"]["custom.hidden"] is True                    # the same fact once, as a word


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
