"""Several agents writing to one InfluxDB (issue 14, first part): every point carries its
agent's id, each cycle's wanmon_agent point is the agent's heartbeat (role, interval), and
`wanmon influx check` lists the agents it sees, fresh or stale, and an id used by two hosts.

Real InfluxDB 1.6 on 127.0.0.1 (tests/tsdb_servers.py), real `wanmon check` runs on
loopback sites. A second host is a process in its own UTS namespace (`unshare --uts`) with
its own host name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402
from conftest import wanmon  # noqa: E402
from tsdb_servers import InfluxV1Server  # noqa: E402

from wanmon import influxql  # noqa: E402
from wanmon.config import load  # noqa: E402

_ok, _why = ts.influx_available()
pytestmark = prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)

WEIRD = 'đại lý "A" \\ 1, x=2'


def config(folder: Path, url: str, agent: str | None, role: str = "primary", interval_s: float = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    agent_t = f"[agent]\nid = {json.dumps(agent, ensure_ascii=False)}\nrole = \"{role}\"\n" if agent else ""
    text = f"""[store]
path = "var/wanmon.db"

[icmp]
count = 1
interval_ms = 20
timeout_ms = 300

[snmp]
enabled = false

[schedule]
icmp_interval_s = {interval_s}

{agent_t}
[influxdb]
url = "{url}"
api = "v1"
database = "wanmon"
timeout_ms = 5000

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"
"""
    p = folder / "sites.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def influx():
    with InfluxV1Server(databases=["wanmon"]) as s:
        yield s


def test_agents_are_tagged_listed_and_a_shared_id_is_reported(influx, tmp_path):
    a = config(tmp_path / "a", influx.url, "agent-a")
    b = config(tmp_path / "b", influx.url, WEIRD, role="standby", interval_s=1)
    for cfg in (a, b):
        r = wanmon("--config", str(cfg), "check", cwd=cfg.parent)
        assert r.returncode == 0, r.stderr

    rows = influx.rows('SELECT "status", "agent" FROM "wanmon_icmp"', "wanmon")
    assert sorted(r["agent"] for r in rows) == sorted(["agent-a", WEIRD])
    # an agent id with quotes, a backslash, a comma and '=' selects its own points, quoted by influxql.string
    assert len(influx.rows(f'SELECT "status" FROM "wanmon_icmp" WHERE "agent" = {influxql.string(WEIRD)}',
                           "wanmon")) == 1
    seen = {x.agent: x for x in influxql.agents(load(a).influx)}
    assert set(seen) == {"agent-a", WEIRD}
    assert (seen["agent-a"].role, seen["agent-a"].interval_s, seen["agent-a"].sites) == ("primary", 60.0, 1)
    assert (seen[WEIRD].role, seen[WEIRD].interval_s) == ("standby", 1.0)

    r = wanmon("--config", str(a), "influx", "check", cwd=a.parent)
    assert r.returncode == 0, r.stderr
    assert "agent 'agent-a' (primary)" in r.stdout and "fresh (interval 60 s)" in r.stdout

    # the same id from another host (its own UTS namespace and host name): reported, exit 1
    if shutil.which("unshare") is None:
        prereq.need("unshare (util-linux)", "Debian package util-linux")
    c = config(tmp_path / "c", influx.url, "agent-a")
    cp = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname wanmon-other && exec "$@"', "sh",
                         sys.executable, "-m", "wanmon", "--config", str(c), "check"],
                        cwd=c.parent, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    r = wanmon("--config", str(a), "influx", "check", cwd=a.parent)
    assert r.returncode == 1
    assert "agent id 'agent-a' is used by several hosts" in r.stderr and "wanmon-other" in r.stderr


def test_a_stale_agent_is_said_stale():
    now = 1_000_000.0
    fresh = influxql.AgentSeen("a", "h1", "primary", now - 100, 60.0, 5, 0)
    stale = influxql.AgentSeen("b", "h2", "standby", now - 181, 60.0, 5, 3)
    lines = dict((text, ok) for ok, text in influxql.describe([fresh, stale], now))
    assert any("'a' (primary)" in t and "fresh" in t for t in lines)
    assert any("'b' (standby)" in t and "STALE" in t for t in lines)


def test_a_primary_whose_heartbeat_says_its_mail_fails():
    """Two delivery runs in a row, or failing for two of its intervals (a relay that refuses
    every message fails one run; the next has nothing due); one failed run is not enough."""
    now = 1_000_000.0
    seen = influxql.AgentSeen("p", "h1", "primary", now - 10, 60.0, 5, 0)
    assert not seen.mail_failing(now)                                   # an agent older than these fields
    once = influxql.AgentSeen("p", "h1", "primary", now - 10, 60.0, 5, 0, now - 200, now - 70, 1, 3)
    assert not once.mail_failing(now)
    assert influxql.AgentSeen("p", "h1", "primary", now - 10, 60.0, 5, 0, None, now - 70, 2, 3).mail_failing(now)
    assert influxql.AgentSeen("p", "h1", "primary", now - 10, 60.0, 5, 0, None, now - 120, 1, 0).mail_failing(now)
    text = influxql.describe([once], now)[0][1]
    assert "mail FAILING since" in text and "1 run in a row, 3 queued" in text


def test_influxql_quoting():
    assert influxql.ident('a"b\\c') == '"a\\"b\\\\c"'
    assert influxql.string("it's \\ x") == "'it\\'s \\\\ x'"
