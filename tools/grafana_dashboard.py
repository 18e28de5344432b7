#!/usr/bin/env python3
"""The Grafana dashboard for wanmon's InfluxDB data (InfluxQL data source), as code.

Built with grafana-foundation-sdk (Grafana's own dashboards-as-code library) and shipped
as grafana/wanmon-dashboard.json, with a provisioning example under grafana/provisioning/.
Regenerate after editing this file:

    .venv/bin/python tools/grafana_dashboard.py            # writes grafana/wanmon-dashboard.json
    .venv/bin/python tools/grafana_dashboard.py --check    # exit 1 if the shipped JSON differs

Variables: datasource, level, district, site, agent (multi-value, "All" by default).
Every panel's InfluxQL is in PANELS with the columns it must return; tests/test_grafana.py
runs each against the real InfluxDB 1.6 filled by real `wanmon check` runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    GridPos,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from wanmon.lineproto import STATUS_CODE  # noqa: E402  (the codes written to InfluxDB)
from wanmon.words import PAGE  # noqa: E402  (the page's words for the statuses)

OUT = REPO / "grafana" / "wanmon-dashboard.json"
GRID_COLUMNS = 24  # Grafana's grid is 24 columns wide
# the page's status colours (templates/page.html.j2, :root), so Grafana and the page agree
_CSS_VAR = {"up": "up", "degraded": "deg", "down": "down", "unreachable": "unr", "unknown": "unk"}
DS = DataSourceRef(type_val="influxdb", uid="${datasource}")

# the site filter every site panel shares (a province site has no district tag: InfluxQL compares
# it as '', which "All" (.*) matches and a chosen district does not)
SITES = '"level" =~ /^$level$/ AND "district" =~ /^$district$/ AND "site_id" =~ /^$site$/ AND "agent" =~ /^$agent$/'


@dataclass(frozen=True)
class PanelQuery:
    title: str
    kind: str            # bargauge | table | timeseries
    query: str
    columns: tuple[str, ...]   # what the query returns (besides time), checked by the tests
    group_by: tuple[str, ...]  # the tags its series are grouped by
    unit: str = ""
    fmt: str = "time_series"   # or table


PANELS = [
    PanelQuery("Availability by level (%)", "bargauge",
               'SELECT sum("prev_available_s") / sum("prev_observed_s") * 100 AS "availability" FROM "wanmon_icmp" '
               f'WHERE $timeFilter AND {SITES} GROUP BY "level"', ("availability",), ("level",), "percent"),
    PanelQuery("Current status", "table",
               'SELECT last("status_code") AS "status_code", last("status") AS "status", last("rtt_avg_ms") AS "rtt_ms", '
               'last("loss_pct") AS "loss_pct" FROM "wanmon_icmp" '
               f'WHERE $timeFilter AND {SITES} GROUP BY "site_id", "site_name", "level", "district", "agent"',
               ("status_code", "status", "rtt_ms", "loss_pct"), ("site_id", "site_name", "level", "district", "agent"),
               fmt="table"),
    PanelQuery("RTT (ms)", "timeseries",
               'SELECT mean("rtt_avg_ms") AS "rtt" FROM "wanmon_icmp" '
               f'WHERE $timeFilter AND {SITES} GROUP BY time($__interval), "site_id", "agent" fill(none)',
               ("rtt",), ("site_id", "agent"), "ms"),
    PanelQuery("Packet loss (%)", "timeseries",
               'SELECT mean("loss_pct") AS "loss" FROM "wanmon_icmp" '
               f'WHERE $timeFilter AND {SITES} GROUP BY time($__interval), "site_id", "agent" fill(none)',
               ("loss",), ("site_id", "agent"), "percent"),
    PanelQuery("Uplink traffic (bit/s)", "timeseries",
               'SELECT mean("uplink_in_bps") AS "in", mean("uplink_out_bps") AS "out" FROM "wanmon_snmp" '
               f'WHERE $timeFilter AND {SITES} GROUP BY time($__interval), "site_id" fill(none)',
               ("in", "out"), ("site_id",), "bps"),
    PanelQuery("Interface errors (per minute)", "timeseries",
               'SELECT non_negative_derivative(max("in_errors"), 1m) AS "in_errors", '
               'non_negative_derivative(max("out_errors"), 1m) AS "out_errors" FROM "wanmon_if" '
               f'WHERE $timeFilter AND {SITES} GROUP BY time($__interval), "site_id", "ifname" fill(none)',
               ("in_errors", "out_errors"), ("site_id", "ifname"), "short"),
    PanelQuery("Agent heartbeats: cycle duration (ms)", "timeseries",
               'SELECT last("cycle_ms") AS "cycle_ms" FROM "wanmon_agent" '
               'WHERE $timeFilter AND "agent" =~ /^$agent$/ AND "sites" >= 0 GROUP BY time($__interval), "agent" '
               'fill(none)', ("cycle_ms",), ("agent",), "ms"),
    PanelQuery("Agent spool (points waiting for InfluxDB)", "timeseries",
               'SELECT last("spool_points") AS "spool" FROM "wanmon_agent" '
               'WHERE $timeFilter AND "agent" =~ /^$agent$/ AND "sites" >= 0 GROUP BY time($__interval), "agent" '
               'fill(none)', ("spool",), ("agent",), "short"),
]

VARIABLES = [  # (name, label, query)
    ("level", "Level", 'SHOW TAG VALUES FROM "wanmon_icmp" WITH KEY = "level"'),
    ("district", "District", 'SHOW TAG VALUES FROM "wanmon_icmp" WITH KEY = "district" WHERE "level" =~ /^$level$/'),
    ("site", "Site", 'SHOW TAG VALUES FROM "wanmon_icmp" WITH KEY = "site_id" WHERE "level" =~ /^$level$/ '
                     'AND "district" =~ /^$district$/'),
    ("agent", "Agent", 'SHOW TAG VALUES FROM "wanmon_agent" WITH KEY = "agent"'),
]


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target (the SDK ships no InfluxDB query type; this is its JSON)."""

    def __init__(self, ref_id: str, query: str, fmt: str):
        self.ref_id, self.query, self.fmt = ref_id, query, fmt

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": DS.to_json(), "query": self.query, "rawQuery": True,
                "resultFormat": self.fmt}


class Target(cogbuilder.Builder[InfluxQLQuery]):
    def __init__(self, ref_id: str, query: str, fmt: str):
        self._internal = InfluxQLQuery(ref_id, query, fmt)

    def build(self) -> InfluxQLQuery:
        return self._internal


# Where each panel sits (x, y, w, h) on the 24-column grid, by title; rows take one grid row
# of their own (y of the row above each group). Explicit, so nothing depends on the SDK's
# placement, which put a full-width table beside a half-width gauge (x=12, w=24).
ROWS = [("Availability and status", 0), ("Latency and loss", 18), ("SNMP: uplinks", 27), ("Agents", 36)]
LAYOUT = {
    "Availability by level (%)": (0, 1, 24, 5),
    "Current status": (0, 6, 24, 12),
    "RTT (ms)": (0, 19, 12, 8),
    "Packet loss (%)": (12, 19, 12, 8),
    "Uplink traffic (bit/s)": (0, 28, 12, 8),
    "Interface errors (per minute)": (12, 28, 12, 8),
    "Agent heartbeats: cycle duration (ms)": (0, 37, 12, 8),
    "Agent spool (points waiting for InfluxDB)": (12, 37, 12, 8),
}


def status_colours() -> dict[str, str]:
    """status -> the page's colour (#rrggbb), read from the page's template."""
    css = (REPO / "templates" / "page.html.j2").read_text(encoding="utf-8")
    out = {}
    for status, var in _CSS_VAR.items():
        m = re.search(rf"--{var}:(#[0-9a-fA-F]{{6}})", css)
        if m is None:
            raise SystemExit(f"templates/page.html.j2: no --{var} colour in :root")
        out[status] = m.group(1)
    return out


def status_mappings() -> list[ValueMap]:
    """status_code (0..4, wanmon.lineproto.STATUS_CODE) -> the page's word and colour."""
    colours, words = status_colours(), PAGE["en"]
    return [
        ValueMap(
            options={
                str(code): ValueMappingResult(text=words[status], color=colours[status], index=code)
                for status, code in STATUS_CODE.items()
            }
        )
    ]


def _panel(p: PanelQuery):
    builder = {"bargauge": bargauge.Panel, "table": table.Panel, "timeseries": timeseries.Panel}[p.kind]()
    b = builder.title(p.title).datasource(DS).with_target(Target("A", p.query, p.fmt))
    if p.unit:
        b = b.unit(p.unit)
    x, y, w, h = LAYOUT[p.title]
    b = b.grid_pos(GridPos(x=x, y=y, w=w, h=h))
    if p.kind == "bargauge":
        b = b.min(0).max(100)
    if "status_code" in p.columns:  # words and colours instead of 0..4; the status word column is the same fact
        b = b.override_by_name(
            "status_code",
            [
                DynamicConfigValue("displayName", "Status"),
                DynamicConfigValue("mappings", [m.to_json() for m in status_mappings()]),
                DynamicConfigValue("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        ).override_by_name("status", [DynamicConfigValue("custom.hidden", True)])
    return b


def build() -> dict:
    d = (dashboard.Dashboard("wanmon: provincial WAN").uid("wanmon-wan").tags(["wanmon", "wan"])
         .time("now-24h", "now").refresh("1m").timezone("browser").editable())
    d = d.with_variable(dashboard.DatasourceVariable("datasource").label("InfluxDB").type("influxdb"))
    for name, label, q in VARIABLES:
        d = d.with_variable(dashboard.QueryVariable(name).label(label).datasource(DS).query(q).multi(True)
                            .include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    groups = [PANELS[:2], PANELS[2:4], PANELS[4:6], PANELS[6:]]
    for (title, y), panels in zip(ROWS, groups):
        d = d.with_row(dashboard.Row(title).grid_pos(GridPos(x=0, y=y, w=GRID_COLUMNS, h=1)))
        for p in panels:
            d = d.with_panel(_panel(p))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def text() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped JSON is not what this builds")
    args = ap.parse_args(argv)
    new = text()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == new
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from tools/grafana_dashboard.py: regenerate it'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(new, encoding="utf-8")
    print(f"wrote {OUT} ({len(PANELS)} panels, {len(VARIABLES) + 1} variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
