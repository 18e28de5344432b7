"""A dated inventory and InfluxDB (issue 23, "InfluxDB" and acceptance 5).

* Points keep the tags valid when they were written: the "then" view for free. A point's
  prev_*_s fields tell how long the site's previous cycle held; when a change (or the end of
  its service) falls inside that hold, the piece before the instant is written under the tags
  valid then, so InfluxQL grouped by "district" counts each stretch where it was. No point is
  written for a site out of service.
* `wanmon render --source influxdb` shows today's tree: the inventory's keys now, by site id,
  not the tags of the newest point; a site out of service now is not on the page.

The first test runs cycles in-process (the clock and ICMP through the seams, tests/seams.py)
and sends their points to a real InfluxDB 1.6 through the real drain. The second is the
acceptance lab: real `wanmon check` processes with real ICMP in network namespaces, their
clocks set by libfaketime, a real influxd, then the README's InfluxQL for "then" against
`wanmon report --grouping then`, and the page from InfluxDB.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq
import tsdb_servers as ts
from seams import T0, Clock, Net
from smtp_server import in_netns
from test_alerts_integration import PY, base_sites, hosts, lab, site_toml, wm_env, write_config  # noqa: F401
from tsdb_servers import InfluxV1Server, influx_in_netns

from wanmon import fromflux
from wanmon.config import load
from wanmon.cycle import Peers, run_check
from wanmon.store import Store

_ok, _why = ts.influx_available()
pytestmark = prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)

FAKETIME = shutil.which("faketime")
ICT = timezone(timedelta(hours=7))


def iso(t: float) -> str:
    """A TOML offset date-time (the inventory's instants)."""
    return datetime.fromtimestamp(t, ICT).isoformat()


def dated_site(
    sid: str,
    name: str,
    level: str,
    address: str,
    district: str | None = None,
    parent: str | None = None,
    more: str = "",
) -> str:
    text = f'[[sites]]\nid = "{sid}"\nname = "{name}"\nlevel = "{level}"\naddress = "{address}"\n'
    text += f'district = "{district}"\n' if district else ""
    text += f'parent = "{parent}"\n' if parent else ""
    return text + more + "\n"


@pytest.fixture(scope="module")
def influx():
    with InfluxV1Server(databases=["wanmon"]) as s:
        yield s


def test_points_keep_the_tags_of_their_time_and_the_page_shows_todays_tree(influx, tmp_path):
    # one cycle a minute from T0; the commune moves to Lương Tài (and becomes its seat) at W,
    # halfway between two cycles, while it is down; gia-binh-cu retires at R, between two others
    W, R = T0 + 90, T0 + 150
    RENAMED = T0 + 245  # after the last cycle (T0 + 240), before the page (T0 + 250)
    NEW = T0 + 300  # enters service after the page
    old_name, new_name = "UBND xã Xuân Lai", "UBND xã Xuân Lai (nay thuộc Lương Tài)"
    sites = (
        dated_site("core", "Trung tâm dữ liệu", "province", "127.77.0.1")
        + dated_site("gia-binh", "UBND huyện Gia Bình", "district", "127.77.0.2", "Gia Bình", "core")
        + dated_site("luong-tai", "UBND huyện Lương Tài", "district", "127.77.0.3", "Lương Tài", "core")
        + dated_site(
            "xuan-lai",
            old_name,
            "commune",
            "127.77.0.4",
            "Gia Bình",
            "gia-binh",
            f'  [[sites.changes]]\n  at = {iso(W)}\n  district = "Lương Tài"\n  parent = "luong-tai"\n'
            f'  level = "district"\n  name = "{new_name}"\n'
            f'  [[sites.changes]]\n  at = {iso(RENAMED)}\n  name = "Điểm cầu xã Xuân Lai"\n',
        )
        + dated_site(
            "gia-binh-cu", "UBND xã Cũ", "commune", "127.77.0.5", "Gia Bình", "gia-binh", f"retired_at = {iso(R)}\n"
        )
        + dated_site(
            "moi", "UBND xã Mới", "commune", "127.77.0.6", "Lương Tài", "luong-tai", f"in_service_from = {iso(NEW)}\n"
        )
    )
    path = tmp_path / "sites.toml"
    path.write_text(
        f"""[store]
path = "var/wanmon.db"
[snmp]
enabled = false
[alerts]
enabled = false
[schedule]
icmp_interval_s = 60
[agent]
id = "a1"
[influxdb]
url = "{influx.url}"
api = "v1"
database = "wanmon"
timeout_ms = 5000

{sites}""",
        encoding="utf-8",
    )
    cfg = load(path)
    clock = Clock(T0)
    net = Net(clock)
    peers = Peers(icmp=net.icmp)  # the clock and ICMP through the seams; the drain is the real one
    for t in range(5):
        clock.t = T0 + 60 * t
        net.down = {"127.77.0.4"} if t in (1, 2) else set()  # down at T0 + 60 and T0 + 120
        run_check(cfg, now=clock, peers=peers, snmp_tail=False)
    store = Store.open_readonly(cfg.store_path)
    try:
        assert store.spool_stats()["points"] == 0  # everything reached the server
    finally:
        store.close()

    def points(sid: str) -> list[tuple]:
        rows = influx.rows(
            f'SELECT "status", "prev_observed_s", "prev_down_s" FROM "wanmon_icmp" '
            f'WHERE "site_id" = \'{sid}\' GROUP BY "district", "level", "site_name", "parent"',
            "wanmon",
        )
        return sorted(
            (
                r["time"] / 1e9 - T0,
                r["district"],
                r["level"],
                r["site_name"],
                r["parent"],
                r["status"],
                r["prev_observed_s"],
                r["prev_down_s"],
            )
            for r in rows
        )

    old, new = ("Gia Bình", "commune", old_name, "gia-binh"), ("Lương Tài", "district", new_name, "luong-tai")
    assert points("xuan-lai") == [
        (0, *old, "up", None, None),
        (60, *old, "down", 60, 0),
        (W - T0, *old, None, W - T0 - 60, W - T0 - 60),  # the hold before the move, under the tags then
        (120, *new, "down", 120 - (W - T0), 120 - (W - T0)),
        (180, *new, "up", 60, 60),
        (240, *new, "up", 60, 0),
    ]
    cu = ("Gia Bình", "commune", "UBND xã Cũ", "gia-binh")
    assert points("gia-binh-cu") == [
        (0, *cu, "up", None, None),
        (60, *cu, "up", 60, 0),
        (120, *cu, "up", 60, 0),
        (R - T0, *cu, None, R - T0 - 120, 0),  # its last hold, up to its retirement; nothing after
    ]
    # no other point without a status: the undated sites' points are as they always were
    bare = influx.rows('SELECT "status", "prev_observed_s" FROM "wanmon_icmp" GROUP BY "site_id"', "wanmon")
    assert sorted((r["site_id"], r["time"] / 1e9) for r in bare if r["status"] is None) == [
        ("gia-binh-cu", R),
        ("xuan-lai", W),
    ]
    # the README's InfluxQL grouped by "district": each stretch under the district of its time
    by = influx.rows(
        'SELECT sum("prev_available_s") AS "a", sum("prev_observed_s") AS "o" FROM "wanmon_icmp" '
        f"WHERE time > {int(T0 * 1e9)} AND time <= {int((T0 + 240) * 1e9)} "
        'GROUP BY "district", "site_id"',
        "wanmon",
    )
    got = {(r["district"], r["site_id"]): (r["a"], r["o"]) for r in by if r["site_id"] in ("xuan-lai", "gia-binh-cu")}
    assert got == {
        ("Gia Bình", "xuan-lai"): (60, 60 + (W - T0 - 60)),  # up 60 s, then down until the move
        ("Lương Tài", "xuan-lai"): (60, (120 - (W - T0)) + 60 + 60),  # down until 180, then up
        ("Gia Bình", "gia-binh-cu"): (R - T0, R - T0),
    }

    # another agent (its inventory not dated yet) reports "moi", which ours puts in service later
    r = influx.write(
        "wanmon_icmp,agent=a2,district=Lương\\ Tài,level=commune,site_id=moi,site_name=UBND\\ xã\\ Mới "
        f'status="down",up=0i {int((T0 + 200) * 1e9)}',
        "wanmon",
    )
    assert r.status == 204, r.text
    out = tmp_path / "page"
    fromflux.render(cfg, out, now=T0 + 250)
    snap = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert sorted(snap["sites"]) == ["core", "gia-binh", "luong-tai", "xuan-lai"]  # neither retired nor future
    xl = snap["sites"]["xuan-lai"]
    assert (xl["district"], xl["level"], xl["name"], xl["parent"]) == (
        "Lương Tài",
        "district",
        "Điểm cầu xã Xuân Lai",
        "luong-tai",
    )  # today's keys, not the newest point's tags
    assert xl["status"] == "up"
    assert {d["name"]: set(d["sites"] + d["communes"]) for d in snap["districts"]} == {
        "Gia Bình": {"gia-binh"},
        "Lương Tài": {"luong-tai", "xuan-lai"},
    }


# -- acceptance 5: real checks in the lab, a real influxd, the README's InfluxQL and the report ----

SPACING_S = 10.0  # one check every 10 s of the checks' clock ([schedule] icmp_interval_s = 10: cap 20 s)
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_query(title: str) -> str:
    """The InfluxQL under `-- {title}` in the README (Availability reports, "The same figure from
    InfluxDB"), its example period made {start} and {end}: the test runs what the reader reads."""
    lines = README.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"-- {title}"))
    body = []
    for line in lines[at + 1 :]:
        if line.startswith(("--", "```")):
            break
        body.append(line.strip())
    q = " ".join(body)
    assert "'2026-10-31T17:00:00Z'" in q and "'2026-11-30T17:00:00Z'" in q, q
    return q.replace("'2026-10-31T17:00:00Z'", "{start}").replace("'2026-11-30T17:00:00Z'", "{end}")


@pytest.fixture
def lab_influx(lab):  # noqa: F811
    """influxd inside the lab's client namespace (where the checks run), on its loopback."""
    with influx_in_netns(lab.client, databases=["wanmon"]) as srv:
        yield srv


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_then_from_influxql_equals_the_report_and_the_page_from_influxdb_shows_today(
    lab,  # noqa: F811
    hosts,  # noqa: F811
    lab_influx,
    tmp_path,
):
    """A commune moves from Gia Bình to Lương Tài at an instant between two checks, while it is
    down. Each process runs under libfaketime at its chosen instant (no race with the machine)."""
    d1, d2, c, e = hosts.new(), hosts.new(), hosts.new(), hosts.new()
    clock = [math.ceil(time.time() / 3600) * 3600 + 2 * 86400]  # two days ahead, on the hour
    W = clock[0] + 4.5 * SPACING_S  # between the 5th and the 6th check
    moved = "UBND xã Xuân Lai (nay thuộc Lương Tài)"
    sites = (
        base_sites(2)
        + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d1, district="Gia Bình", parent="core")
        + site_toml("luong-tai", "UBND huyện Lương Tài", "district", d2, district="Lương Tài", parent="core")
        + site_toml("gia-binh-xuan-lai", "UBND xã Xuân Lai", "commune", c, district="Gia Bình", parent="gia-binh")
        + f'  [[sites.changes]]\n  at = {iso(W)}\n  district = "Lương Tài"\n  parent = "luong-tai"\n'
        f'  name = "{moved}"\n'
        + site_toml("gia-binh-dong-cuu", "UBND xã Đông Cứu", "commune", e, district="Gia Bình", parent="gia-binh")
    )
    extra = f'[influxdb]\nurl = "{lab_influx.url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n'
    cfg = write_config(tmp_path, None, sites, interval_s=SPACING_S, alerts="", timeout_ms=300, extra=extra)
    stamps: list[float] = []

    def at(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def wm(*args: str):
        return lab.run(
            [*prereq.faketime("@" + at(clock[0])), PY, "-m", "wanmon", "--config", str(cfg), *args],
            cwd=cfg.parent,
            env=wm_env({"TZ": "UTC"}),
            timeout=60,
        )

    def run(n: int) -> None:
        for _ in range(n):
            r = wm("check", "--json")
            assert r.returncode == 0, r.stderr[-3000:]
            stamps.append(json.loads(r.stdout)[0]["ts"])
            clock[0] += SPACING_S

    run(3)
    hosts.down(c)
    run(4)  # the commune down across the move (checks 4 to 7)
    hosts.up(c)
    run(2)
    hosts.down(e)  # Gia Bình keeps a problem of its own after the move
    run(2)
    hosts.up(e)
    run(2)
    assert stamps[4] < W < stamps[5]
    st = json.loads(wm("status", "--json").stdout)
    assert st["spool"]["points"] == 0, st["spool"]  # everything reached the server

    # the commune's points: the tags of their time (the piece of the hold before the move at W)
    rows = in_client(
        lab,
        lab_influx,
        'SELECT "prev_observed_s", "status" FROM "wanmon_icmp" '
        'WHERE "site_id" = \'gia-binh-xuan-lai\' GROUP BY "district", "site_name"',
    )
    for r in rows:
        t = r["time"] / 1e9
        then = ("Gia Bình", "UBND xã Xuân Lai") if t <= W else ("Lương Tài", moved)
        assert (r["district"], r["site_name"]) == then, (t - W, r)
    assert [r["time"] / 1e9 for r in rows if r["status"] is None] == [pytest.approx(W, abs=1e-6)]

    # the README's "then" per district equals `wanmon report --grouping then` to 0.01 pp
    start, end = stamps[0], stamps[-1]  # edges on cycle times: exact
    when = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    r = wm("report", "--from", when(start), "--to", when(end), "--grouping", "then", "--format", "json", "--out", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    ns = lambda t: str(round(t * 1e9))  # noqa: E731
    then_q = readme_query('every district, "then"')
    got = {
        row["district"]: row
        for row in in_client(lab, lab_influx, then_q.format(start=ns(start), end=ns(end)))
        if row.get("district")
    }
    assert set(got) == {d["district"] for d in rep["districts"]}
    for d in rep["districts"]:
        g = got[d["district"]]
        assert g["availability_pct"] == pytest.approx(d["availability_pct"], abs=0.01), (d, g)
        assert g["downtime_s"] == pytest.approx(d["downtime_s"], abs=0.01), (d, g)
    # the commune's downtime is split at the move: both districts have some, and not only their own sites'
    assert got["Gia Bình"]["downtime_s"] > 0 and got["Lương Tài"]["downtime_s"] > 0
    assert got["Lương Tài"]["availability_pct"] < 100

    # the page from InfluxDB groups by today's tree
    out = tmp_path / "page"
    r = wm("render", "--source", "influxdb", "--out", str(out))
    assert r.returncode == 0, r.stderr
    snap = json.loads((out / "status.json").read_text(encoding="utf-8"))
    xl = snap["sites"]["gia-binh-xuan-lai"]
    assert (xl["district"], xl["name"], xl["parent"]) == ("Lương Tài", moved, "luong-tai")
    groups = {g["name"]: set(g["sites"] + g["communes"]) for g in snap["districts"]}
    assert groups["Lương Tài"] == {"luong-tai", "gia-binh-xuan-lai"}
    assert groups["Gia Bình"] == {"gia-binh", "gia-binh-dong-cuu"}


def in_client(lb, srv, q: str) -> list[dict]:
    """A query to the influxd inside the lab's client namespace."""
    return in_netns(lb.client, srv.rows, q, "wanmon")
