"""A primary and a standby agent, one InfluxDB, one set of admins (issue 14, acceptance 2).

Both agents run `wanmon check` as cron would, in the lab's client namespace (real ICMP
to sites that go down and come back, see test_alerts_integration.py), write to a real
InfluxDB 1.6 there, and send through a real SMTP server (aiosmtpd) there. What each
admin receives is joined to the agents' outboxes by Message-ID.

* both running, a site down for both: its admins get exactly one DOWN (the primary's;
  the standby holds its own);
* the primary stopped (its heartbeat stale after 3 intervals): the standby sends the next
  events (another site's DOWN, the first site's RECOVERY);
* the primary back: the standby is quiet again, and the primary does not repeat what the
  standby sent meanwhile (the first site's RECOVERY, the second site's DOWN)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_alerts_integration import base_sites, check, lab, site_toml, smtp, wm, write_config  # noqa: E402,F401
from test_report_influxql import hosts, influx  # noqa: E402,F401

INTERVAL_S = 1


def test_primary_and_standby_each_event_once(lab, hosts, influx, smtp, tmp_path):  # noqa: F811
    x, y = hosts.new(), hosts.new()
    sites = (base_sites(6)
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", x, ["x@x.example"], district="Gia Bình",
                         parent="core")
             + site_toml("que-vo", "UBND huyện Quế Võ", "district", y, ["y@x.example"], district="Quế Võ",
                         parent="core"))
    cfgs = {}
    for name, role in (("primary", "primary"), ("standby", "standby")):
        folder = tmp_path / name
        folder.mkdir()
        extra = (f'[agent]\nid = "{name}"\nrole = "{role}"\n\n'
                 f'[influxdb]\nurl = "{influx.url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n')
        cfgs[name] = write_config(folder, smtp, sites, interval_s=INTERVAL_S, extra=extra)
    p, s = cfgs["primary"], cfgs["standby"]

    def received(addr: str) -> list[tuple[str, str]]:
        """[(agent, kinds)] of the messages addr received, in arrival order."""
        box = {}
        for name, cfg in cfgs.items():
            out = json.loads(wm(lab, cfg, "alerts", "--json").stdout)["outbox"]
            box.update({o["message_id"]: (name, "+".join(o["kinds"])) for o in out})
        return [box[m.message_id] for m in smtp.messages if addr in m.rcpt_tos]

    def held(cfg) -> list[str]:
        out = json.loads(wm(lab, cfg, "alerts", "--json").stdout)["outbox"]
        return ["+".join(o["kinds"]) for o in out if o["status"] == "held"]

    for cfg in (p, s):
        check(lab, cfg)
    # 1. both running, gia-binh down for both: one DOWN, the primary's
    hosts.down(x)
    for _ in range(4):
        check(lab, p)
        check(lab, s)
    assert received("x@x.example") == [("primary", "down")]
    assert "down" in held(s)

    # 2. the primary stops: after 3 intervals its heartbeat is stale, the standby sends
    time.sleep(3 * INTERVAL_S + 1.5)
    hosts.down(y)
    for _ in range(4):
        check(lab, s)
    hosts.up(x)
    for _ in range(3):
        check(lab, s)
    assert received("y@x.example") == [("standby", "down")]
    assert received("x@x.example") == [("primary", "down"), ("standby", "recovery")]

    # 3. the primary is back: the standby is quiet, and the primary repeats nothing
    n_standby_held = len(held(s))
    for _ in range(4):
        check(lab, p)
        check(lab, s)
    hosts.up(y)
    for _ in range(3):
        check(lab, p)
        check(lab, s)
    assert received("x@x.example") == [("primary", "down"), ("standby", "recovery")]
    assert received("y@x.example") == [("standby", "down"), ("primary", "recovery")]
    assert len(held(s)) > n_standby_held               # the standby composed, and held
    assert {"recovery", "down"} <= set(held(p))       # the primary held the news the standby had sent
