"""The path at the outage, on the routed lab (tests/routed.py), as a user meets it: `wanmon check`
runs in the agent's namespace, links are cut on the router before them, the DOWN mail arrives at a
real SMTP server (tests/smtp_server.py) and is read with the standard library's email parser.

    agent -> core (the carrier's router, an [[hops]] entry) -> gia-binh (d1) -> dai-lai (c11)
                                                                           -> xuan-lai (c12)
                                                          -> luong-tai (d2) -> lai-ha (c21)

Acceptance 1: the commune's link behind the district router cut: the DOWN mail and the page's
incident name the district router's site and its hop; a second cut further up is told at its own.
Acceptance 2: 300 communes down behind 3 cut district routers: at most 3 traces that cycle, every
one to a district's address, and the page in place before the first trace began.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import prereq
import pytest
import test_trace_lab
from test_trace_lab import CORE_NAME, run, write_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns
import routed
from seams import query
from smtp_server import SMTPServer

from wanmon.config import load
from wanmon.page import out_dir

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

NOC = "noc@x.example"
ALERTS = f'[alerts]\nconfirm_cycles = 2\nrecover_cycles = 1\nnoc = ["{NOC}"]\n'


cut = test_trace_lab.cut  # the fixture: cut(role) until the test ends


@pytest.fixture(scope="module")
def lab():
    with routed.lab() as lb:
        yield lb


def page(cfg: Path) -> tuple[dict, str]:
    """(status.json, index.html) as the page's readers get them."""
    folder = out_dir(load(cfg))
    return json.loads((folder / "status.json").read_text("utf-8")), (folder / "index.html").read_text("utf-8")


def incident(snap: dict, site: str) -> dict:
    """The page's ongoing incident of a site."""
    return next(i for i in snap["incidents"] if i["site"] == site and i["end"] is None)


def down_mail(smtp: SMTPServer, name: str, n: int):
    """The n-th mail so far (arrival order), a DOWN of the site named `name`, parsed."""
    got = smtp.wait_for(n, timeout=30)
    m = got[n - 1]
    assert name in (m.subject or "") and "mất kết nối" in (m.subject or ""), [x.subject for x in got]
    return m


def check(lab, cfg: Path) -> str:
    cp = run(lab, cfg, "-v", "check")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp.stderr


def test_a_cut_is_told_by_the_down_mail_and_the_page_at_its_hop_and_a_cut_further_up_at_its_own(lab, tmp_path, cut):
    n = lab.nodes
    with SMTPServer(netns=lab.agent.ns) as smtp:
        cfg = write_config(tmp_path, lab, extra=ALERTS + smtp.toml())
        check(lab, cfg)  # the store, every site up
        assert run(lab, cfg, "topology").returncode == 0  # every site's good path, kept in the store

        # 1. dai-lai's link behind gia-binh's router: the first down cycle traces it after its page
        cut("c11")
        log = check(lab, cfg)
        assert "traces outage=1 " in log, log
        want = f"đường truyền dừng sau {n['d1'].addr} (UBND huyện Gia Bình), hop 2 của 3"
        snap, html = page(cfg)
        inc = incident(snap, "dai-lai")
        assert inc["path"]["text"] == want, (log, inc["path"])  # the agent's log and the hops, if not
        assert (inc["path"]["site"], inc["path"]["hop"], inc["path"]["of"]) == ("gia-binh", 2, 3)
        assert inc["path"]["ts"] >= snap["last_cycle"]["started_at"]  # traced by this cycle, after its page
        assert want in html
        assert smtp.snapshot() == []  # confirm_cycles = 2: no DOWN yet

        # the confirmation cycle: its DOWN mail says where the path stops
        check(lab, cfg)
        m = down_mail(smtp, "UBND xã Đại Lai", 1)
        assert NOC in m.rcpt_tos
        assert "Dò đường lúc " in m.text and f": {want}." in m.text, m.text
        assert want in m.html, m.html
        status = json.loads(run(lab, cfg, "status", "--json").stdout)
        by_id = {s["id"]: s for s in status["sites"]}
        assert by_id["dai-lai"]["status"] == "down" and by_id["dai-lai"]["path"]["text"] == want
        assert [h["address"] for h in by_id["dai-lai"]["path"]["hops"]] == [n["core"].addr, n["d1"].addr]
        assert by_id["dai-lai"]["good_path"]["hops"] == [n["core"].addr, n["d1"].addr, n["c11"].addr]
        assert by_id["xuan-lai"]["path"] is None  # up: no outage path

        # 2. further up: gia-binh's own link from the core; dai-lai and xuan-lai are behind it now
        cut("d1")
        log = check(lab, cfg)
        assert "traces outage=1 " in log, log  # gia-binh alone: the sites behind it are unreachable
        up = f"đường truyền dừng sau {n['core'].addr} ({CORE_NAME}), hop 1 của 2"
        snap, html = page(cfg)
        assert incident(snap, "gia-binh")["path"]["text"] == up and up in html, (log, incident(snap, "gia-binh")["path"])
        assert incident(snap, "gia-binh")["path"]["site"] is None  # the carrier's router: a named hop, no site
        check(lab, cfg)
        m = down_mail(smtp, "UBND huyện Gia Bình", 2)
        assert f": {up}." in m.text and up in m.html, m.text
        assert "UBND xã Đại Lai" in m.text and want not in m.text  # listed under it, its own path not repeated
        status = json.loads(run(lab, cfg, "status", "--json").stdout)
        by_id = {s["id"]: s for s in status["sites"]}
        assert by_id["gia-binh"]["path"]["text"] == up
        assert by_id["dai-lai"]["status"] == "unreachable" and by_id["dai-lai"]["path"] is None
        # the agent's record: one outage path per root cause, each traced once
        kept = query(tmp_path / "var" / "wanmon.db", "SELECT site_id FROM outage_paths ORDER BY start_ts")
        assert kept == [("dai-lai",), ("gia-binh",)]


def test_300_communes_behind_3_cut_districts_make_3_traces_after_the_page(tmp_path):
    """Acceptance 2: 100 communes behind each of 3 district routers (extra addresses on one
    namespace per district), a 4th district up; the 3 districts' uplinks cut: one cycle finds 3
    sites down and 300 unreachable, traces the 3 and nothing else, only after its page."""
    tree = {"d1": ["c1"], "d2": ["c2"], "d3": ["c3"], "d4": ["c4"]}
    with routed.lab(tree) as lab:
        n = lab.nodes
        communes = {d: lab.add_addresses(c, 100) for d, c in (("d1", "c1"), ("d2", "c2"), ("d3", "c3"))}
        text = (
            '[store]\npath = "var/wanmon.db"\n[icmp]\ncount = 1\ninterval_ms = 50\ntimeout_ms = 500\n'
            "[snmp]\nenabled = false\n[alerts]\nenabled = false\n"
            f'[[hops]]\naddress = "{n["core"].addr}"\nname = "{CORE_NAME}"\n'
        )
        for d in tree:
            text += f'[[sites]]\nid = "{d}"\nname = "Huyện {d}"\nlevel = "district"\ndistrict = "{d}"\n'
            text += f'address = "{n[d].addr}"\n'
            for k, addr in enumerate(communes.get(d, [n[tree[d][0]].addr])):
                text += f'[[sites]]\nid = "{d}-x{k}"\nname = "Xã {k} {d}"\nlevel = "commune"\ndistrict = "{d}"\n'
                text += f'address = "{addr}"\nparent = "{d}"\n'
        cfg = tmp_path / "sites.toml"
        cfg.write_text(text, encoding="utf-8")
        inventory = {n[d].addr for d in tree} | {n["c4"].addr} | {a for v in communes.values() for a in v}
        check(lab, cfg)
        for d in ("d1", "d2", "d3"):
            lab.cut(d)
        with lab.capture(ttl=True) as sent:
            log = check(lab, cfg)
        states = {s["id"]: s["status"] for s in json.loads(run(lab, cfg, "status", "--json").stdout)["sites"]}
        assert sorted(k for k, v in states.items() if v == "down") == ["d1", "d2", "d3"]
        assert sum(v == "unreachable" for v in states.values()) == 300

        # the agent's own record: 3 traces (no refresh in a cycle of outages), each stopping at the core
        assert "traces outage=3 refresh=0 " in log, log
        assert len(re.findall(r"trace ip=", log)) == 3, log
        snap, _html = page(cfg)
        paths = {i["site"]: i["path"] for i in snap["incidents"] if i["path"] is not None}
        assert set(paths) == {"d1", "d2", "d3"}
        assert {p["address"] for p in paths.values()} == {n["core"].addr}
        # the packets: every one an echo request to an inventory address; the short-lived ones
        # (a trace's probes: the sweep's leave with the default TTL) only to the 3 districts
        assert {(proto, typ) for proto, _d, typ, _t in sent} == {(1, 8)}, set(sent)
        assert {dst for _p, dst, _t, _h in sent} <= inventory
        assert {dst for _p, dst, _t, ttl in sent if ttl < 64} == {n[d].addr for d in ("d1", "d2", "d3")}
        # the page was in place before the first trace began (the log's order is the process's)
        lines = log.splitlines()
        page_at = next(k for k, line in enumerate(lines) if "cycle id=2 " in line and "page_after_ms=" in line)
        first_trace = next(k for k, line in enumerate(lines) if "trace ip=" in line)
        assert page_at < first_trace, log
