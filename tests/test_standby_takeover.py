"""A standby that cannot silence everyone (issue 20): at takeover it sends the news no agent
has sent, and it takes over when the primary runs but its mail does not get out.

Real `wanmon check` runs as cron starts them, real ICMP in a tests/netns.py lab, a real
InfluxDB 1.6 and real SMTP servers (aiosmtpd). What each admin receives is joined to the
agents' outboxes by Message-ID.

* (a) A site only the standby sees down (the client namespace's own 198.18.2.1, no route to
  it from the alive namespace; as in test_fromflux.py): the primary (client namespace) sees
  it up and sends nothing; the standby (alive namespace) holds its DOWN while the primary is
  fresh. The primary stops: within 3 intervals + 1 cycle the site's admins get exactly one
  DOWN, from the standby, and the NOC is told once that the primary has stopped.
* (b) The primary's relay rejects its login (a wrong password), or refuses every message
  with 554; the standby's relay works: a site down for both reaches its admins exactly
  once, from the standby, and the NOC is told once that the primary's mail fails, naming
  it and the standby.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq  # noqa: E402
import tsdb_servers as ts  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402
from test_alerts_integration import (NOC, PY, base_sites, check, hosts, lab, site_toml, wm,  # noqa: E402,F401
                                     wm_env, write_config)
from test_fromflux import influx_alive  # noqa: E402,F401
from test_report_influxql import influx  # noqa: E402,F401

_ok, _why = ts.influx_available()
pytestmark = prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)

# Generous: a heartbeat is fresh for 3 intervals, and on a busy machine one check of the
# primary plus the standby's sweep must stay well inside that while both run.
INTERVAL_S = 3
ADMIN = "x@x.example"


def _agent(name: str, role: str, influx_url: str) -> str:
    return (f'[agent]\nid = "{name}"\nrole = "{role}"\n\n'
            f'[influxdb]\nurl = "{influx_url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n')


def _outbox(lab, cfg: Path) -> list[dict]:  # noqa: F811
    cp = wm(lab, cfg, "alerts", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["outbox"]


def _received(lab, cfgs: dict[str, Path], servers, addr: str) -> list[tuple[str, str]]:  # noqa: F811
    """[(agent, kinds)] of the messages addr received on any of the servers, in arrival order."""
    box = {}
    for name, cfg in cfgs.items():
        box.update({o["message_id"]: (name, "+".join(o["kinds"])) for o in _outbox(lab, cfg)})
    msgs = sorted((m for srv in servers for m in srv.snapshot() if addr in m.rcpt_tos), key=lambda m: m.received_at)
    return [box[m.message_id] for m in msgs]


def _noc_subjects(servers, word: str) -> list[str]:
    return [m.subject for srv in servers for m in srv.snapshot() if NOC in m.rcpt_tos and word in m.subject]


def test_a_down_only_the_standby_sees_reaches_the_admins_when_the_primary_stops(lab, influx_alive, tmp_path):  # noqa: F811
    sites = (site_toml("core", "Trung tâm dữ liệu", "province", lab.alive4, ["core@x.example"])
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", lab.client4_r, [ADMIN], district="Gia Bình",
                         parent="core"))
    # each agent has its relay on its own namespace's loopback
    relay_p, relay_s = SMTPServer(netns=lab.client).start(), SMTPServer(netns=lab.alive_ns).start()
    try:
        cfgs = {}
        for name, role, relay in (("primary", "primary", relay_p), ("standby", "standby", relay_s)):
            folder = tmp_path / name
            folder.mkdir()
            cfgs[name] = write_config(folder, relay, sites, interval_s=INTERVAL_S,
                                      extra=_agent(name, role, influx_alive.url))
        p, s = cfgs["primary"], cfgs["standby"]
        took: list[float] = []

        def check_s() -> None:
            t0 = time.monotonic()
            r = lab.run([PY, "-m", "wanmon", "--config", str(s), "check"], ns=lab.alive_ns, cwd=s.parent,
                        env=wm_env(), timeout=60)
            assert r.returncode == 0, r.stderr[-3000:]
            took.append(time.monotonic() - t0)

        def received() -> list[tuple[str, str]]:
            return _received(lab, cfgs, (relay_p, relay_s), ADMIN)

        # both running: the primary sees gia-binh up, the standby down (confirmed, its DOWN held)
        for _ in range(5):
            check(lab, p)
            check_s()
        assert received() == []
        held = [o for o in _outbox(lab, s) if o["status"] == "held" and ADMIN == o["to"]]
        assert [o["kinds"] for o in held] == [["down"]], held
        assert not _noc_subjects((relay_p, relay_s), "primary")

        # the primary stops; the standby goes on as cron runs it, once an interval
        stopped = time.time()
        arrived = None
        while time.time() - stopped < 3 * INTERVAL_S + 3 * INTERVAL_S + 30:
            t0 = time.monotonic()
            check_s()
            if received():
                arrived = time.time()
                break
            time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - t0)))
        assert received() == [("standby", "down")]
        # 3 intervals for the heartbeat to go stale, then the next cycle (and that check's own time)
        assert arrived - stopped <= 3 * INTERVAL_S + INTERVAL_S + max(took) + 1, (arrived - stopped, took)
        mail = next(m for m in relay_s.snapshot() if ADMIN in m.rcpt_tos)
        assert "Gia Bình" in mail.subject and "Gia Bình" in mail.text
        stale = _noc_subjects((relay_s,), "primary")
        assert stale == ["[wanmon] Tác tử chính \u201cprimary\u201d đã ngừng (không có nhịp tim)"], stale

        # once: later cycles of the standby send neither the DOWN nor the NOC's notice again
        for _ in range(3):
            check_s()
        assert received() == [("standby", "down")]
        assert len(_noc_subjects((relay_s,), "primary")) == 1
    finally:
        relay_p.stop()
        relay_s.stop()


@pytest.mark.parametrize("fault", ["login", "5xx"])
def test_a_primary_whose_relay_refuses_it_does_not_silence_the_standby(fault, lab, hosts, influx, tmp_path):  # noqa: F811
    """login: one relay with AUTH, the primary's password wrong; 5xx: the primary's relay answers
    every message's DATA with 554 (each message refused for good), the standby's relay works."""
    x = hosts.new()
    sites = base_sites(6) + site_toml("gia-binh", "UBND huyện Gia Bình", "district", x, [ADMIN], district="Gia Bình",
                                      parent="core")
    if fault == "login":
        relay_p = relay_s = SMTPServer(netns=lab.client, auth=("wanmon", "dung-mat-khau")).start()
    else:
        relay_p, relay_s = SMTPServer(netns=lab.client).start(), SMTPServer(netns=lab.client).start()
        relay_p.fail_data = "554 5.7.1 relaying denied"
    relays = tuple({id(r): r for r in (relay_p, relay_s)}.values())
    try:
        cfgs, env = {}, {}
        for name, role, relay, password in (("primary", "primary", relay_p, "sai-mat-khau"),
                                            ("standby", "standby", relay_s, "dung-mat-khau")):
            folder = tmp_path / name
            folder.mkdir()
            login = dict(user_env="SMTP_USER", password_env="SMTP_PASS") if fault == "login" else {}
            cfgs[name] = write_config(folder, None, sites, interval_s=INTERVAL_S,
                                      extra=relay.toml(from_addr="wanmon@x.example", **login)
                                      + "\n" + _agent(name, role, influx.url))
            env[name] = {"SMTP_USER": "wanmon", "SMTP_PASS": password}
        p = cfgs["primary"]

        def run(name: str) -> None:
            cp = wm(lab, cfgs[name], "check", env=env[name])
            assert cp.returncode == 0, cp.stderr[-3000:]

        def received() -> list[tuple[str, str]]:
            return _received(lab, cfgs, relays, ADMIN)

        def notices() -> list:
            return [m for r in relays for m in r.snapshot() if NOC in m.rcpt_tos and "primary" in m.subject]

        run("primary")
        run("standby")
        hosts.down(x)
        rounds = 0
        while not received() and rounds < 12:
            run("primary")
            run("standby")
            rounds += 1
        assert received() == [("standby", "down")], rounds
        if fault == "login":
            assert ("wanmon", False) in relay_p.auth_attempts       # the primary tried, its login was refused
        else:
            assert any(ADMIN in r["rcpt_tos"] for r in relay_p.rejected)  # the primary sent it, it was refused
        st = json.loads(wm(lab, p, "status", "--json").stdout)
        assert st["outputs"]["mail"]["failing_since"] is not None

        told = notices()
        assert len(told) == 1, [m.subject for m in told]
        assert told[0].subject.startswith("[wanmon] Tác tử chính \u201cprimary\u201d không gửi được thư từ ")
        assert "\u201cstandby\u201d" in told[0].text and "wanmon status" in told[0].text

        # once: more cycles of both send neither the DOWN nor the notice again
        for _ in range(3):
            run("primary")
            run("standby")
        assert received() == [("standby", "down")]
        assert len(notices()) == 1
    finally:
        for r in relays:
            r.stop()
