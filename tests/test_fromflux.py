"""`wanmon render --source influxdb` (issue 14): the page from every agent's points.

* Two vantage points (acceptance 1): agents in two network namespaces of a lab write to
  one real InfluxDB 1.6 (listening on the lab's alive host, 198.18.1.2, reachable from
  both). A site only one of them can reach (the client namespace's own 198.18.2.1, with
  no route to it from the alive namespace) is shown up, with the disagreement visible;
  when that agent stops, after 3 intervals the page shows the site down, from the
  remaining agent, and the stopped agent as stale.
* Two shards with disjoint sites (acceptance 3) make one page with every site once.
* InfluxDB unreachable: exit 1 with the reason, the last page stays in place.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402
from conftest import wanmon  # noqa: E402
from test_alerts_integration import PY, lab, site_toml, wm_env  # noqa: E402,F401
from tsdb_servers import InfluxV1Server, influx_in_netns  # noqa: E402

import prereq  # noqa: E402
from prereq import needs  # noqa: E402

FAKETIME = shutil.which("faketime")

_ok, _why = ts.influx_available()
pytestmark = prereq.needs(_ok, "InfluxDB 1.x (influxd)", prereq.INFLUXDB, _why)


def agent_config(folder: Path, url: str, agent: str, sites: str, interval_s: float = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "sites.toml"
    p.write_text(f"""[store]
path = "var/wanmon.db"

[icmp]
count = 1
interval_ms = 20
timeout_ms = 300

[snmp]
enabled = false

[alerts]
enabled = false

[schedule]
icmp_interval_s = {interval_s}

[agent]
id = "{agent}"

[influxdb]
url = "{url}"
api = "v1"
database = "wanmon"
timeout_ms = 5000

{sites}""", encoding="utf-8")
    return p


def _audit(page: Path) -> None:
    """html-validate (recommended) and axe-core (WCAG 2.1 A/AA), as tests/test_page_audit.py runs them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import shutil

    from audit_page import NODE, axe, html_validate

    if not (NODE / "node_modules" / "axe-core").is_dir() or not shutil.which("chromium"):
        return  # scripts/test.sh installs both; without them the page's other tests still ran
    assert html_validate(page) == []
    bad, _ = axe(page.as_uri())
    assert bad == [], bad


@pytest.fixture
def influx_alive(lab):  # noqa: F811
    """influxd in the lab's alive namespace on 198.18.1.2, where agents in both namespaces reach it."""
    with influx_in_netns(lab.alive_ns, databases=["wanmon"], host=lab.alive4) as srv:
        yield srv


@needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_two_vantage_points_disagree_then_the_remaining_one_decides(lab, influx_alive, tmp_path):  # noqa: F811
    """Both agents check every 60 s (fresh: 3 x 60 s), so the first page never races the
    clock on a busy machine; then the client agent stops and the remaining one's next check
    and the page run with their clock 200 s on (libfaketime: time injected, not slept)."""
    sites = (site_toml("core", "Trung tâm dữ liệu", "province", lab.alive4)
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", lab.client4_r, district="Gia Bình",
                         parent="core"))
    vc = agent_config(tmp_path / "vc", influx_alive.url, "vp-client", sites, interval_s=60)
    va = agent_config(tmp_path / "va", influx_alive.url, "vp-alive", sites, interval_s=60)
    later: list[str] = []  # the prefix that runs a process with its clock moved on

    def check(cfg: Path, ns: str) -> None:
        r = lab.run([*later, PY, "-m", "wanmon", "--config", str(cfg), "check"], ns=ns, cwd=cfg.parent,
                    env=wm_env())
        assert r.returncode == 0, r.stderr

    def render() -> dict:
        r = lab.run([*later, PY, "-m", "wanmon", "--config", str(vc), "render", "--source", "influxdb", "--out",
                     str(tmp_path / "page")], cwd=vc.parent, env=wm_env())
        assert r.returncode == 0, r.stderr
        return json.loads((tmp_path / "page" / "status.json").read_text(encoding="utf-8"))

    for _ in range(2):
        check(vc, lab.client)
        check(va, lab.alive_ns)
    snap = render()
    assert snap["sites"]["gia-binh"]["status"] == "up" and snap["sites"]["core"]["status"] == "up"
    dis = {d["site"]: d for d in snap["disagreements"]}
    assert {(v["agent"], v["status"]) for v in dis["gia-binh"]["views"]} == {("vp-client", "up"), ("vp-alive", "down")}
    html = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "down from agent vp-alive, up from agent vp-client" in html
    assert {a["agent"]: a["fresh"] for a in snap["agents"]} == {"vp-client": True, "vp-alive": True}
    _audit(tmp_path / "page" / "index.html")  # the agents' section is as valid and accessible as the rest

    # the client agent stops; after 3 of its intervals (200 s > 180 s) only the alive one counts.
    # InfluxDB's own clock is not moved: its raw queries include the points "from the future".
    later[:] = prereq.faketime("+200")
    check(va, lab.alive_ns)
    snap = render()
    assert snap["sites"]["gia-binh"]["status"] == "down", snap["sites"]["gia-binh"]
    assert snap["sites"]["core"]["status"] == "up"
    assert {a["agent"]: a["fresh"] for a in snap["agents"]} == {"vp-client": False, "vp-alive": True}
    assert not snap["disagreements"]


@pytest.fixture(scope="module")
def influx():
    with InfluxV1Server(databases=["wanmon"]) as s:
        yield s


def test_two_shards_make_one_page_and_a_dead_server_keeps_the_last_page(influx, tmp_path):
    a = agent_config(tmp_path / "a", influx.url, "shard-a", site_toml("core", "Trung tâm dữ liệu", "province",
                                                                        "127.0.0.1")
                     + site_toml("gia-binh", "UBND huyện Gia Bình", "district", "127.0.0.2", district="Gia Bình",
                                 parent="core"), interval_s=60)
    b = agent_config(tmp_path / "b", influx.url, "shard-b", site_toml("que-vo", "UBND huyện Quế Võ", "district",
                                                                        "127.0.0.3", district="Quế Võ")
                     + site_toml("que-vo-phuong-mao", "UBND xã Phương Mao", "commune", "127.0.0.4",
                                 district="Quế Võ", parent="que-vo"), interval_s=60)
    for cfg in (a, b, a, b):
        r = wanmon("--config", str(cfg), "check", cwd=cfg.parent)
        assert r.returncode == 0, r.stderr
    out = tmp_path / "page"
    r = wanmon("--config", str(a), "render", "--source", "influxdb", "--out", str(out), cwd=a.parent)
    assert r.returncode == 0, r.stderr
    snap = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert sorted(snap["sites"]) == ["core", "gia-binh", "que-vo", "que-vo-phuong-mao"]
    assert all(s["status"] == "up" for s in snap["sites"].values())
    assert {d["name"] for d in snap["districts"]} == {"Gia Bình", "Quế Võ"}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.count("UBND xã Phương Mao") >= 1 and "shard-b" in html
    assert snap["sites"]["que-vo-phuong-mao"]["parent"] == "que-vo"
    assert snap["sites"]["gia-binh"]["availability"]["24h"] == 100.0

    # [page] source = "influxdb": `check` itself writes that page (after its drain)
    pa = a.read_text(encoding="utf-8").replace("[alerts]", '[page]\nsource = "influxdb"\n\n[alerts]')
    a.write_text(pa, encoding="utf-8")
    r = wanmon("--config", str(a), "check", cwd=a.parent)
    assert r.returncode == 0, r.stderr
    own = json.loads((a.parent / "public" / "status.json").read_text(encoding="utf-8"))
    assert sorted(own["sites"]) == ["core", "gia-binh", "que-vo", "que-vo-phuong-mao"] and own["source"] == "influxdb"

    # the server gone: a clear error, exit 1, and the page is the one from before, whole
    before = (out / "index.html").read_bytes()
    dead = agent_config(tmp_path / "dead", "http://127.0.0.1:9", "x", site_toml("core", "C", "province", "127.0.0.1"))
    r = wanmon("--config", str(dead), "render", "--source", "influxdb", "--out", str(out), cwd=dead.parent)
    assert r.returncode == 1
    assert "the last one stays in place" in r.stderr and "cannot reach http://127.0.0.1:9" in r.stderr
    assert (out / "index.html").read_bytes() == before


def test_a_dripping_influxdb_costs_the_deadline_and_keeps_the_last_page(tmp_path):
    """A server that drips one byte a second: the queries end at [page] influx_budget_s (enforced
    while they run, not per read), the command says why, exit 1, and the page from before stays whole."""
    from fault_servers import DripServer

    out = tmp_path / "page"
    out.mkdir()
    (out / "index.html").write_text("<!doctype html><title>the last page</title>", encoding="utf-8")
    with DripServer(drip_s=1.0) as srv:
        cfg = agent_config(tmp_path / "a", f"http://127.0.0.1:{srv.port}", "x",
                           site_toml("core", "C", "province", "127.0.0.1"))
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("[alerts]", "[page]\ninflux_budget_s = 2\n\n[alerts]"),
                       encoding="utf-8")
        t0 = time.monotonic()
        r = wanmon("--config", str(cfg), "render", "--source", "influxdb", "--out", str(out), cwd=cfg.parent)
        took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "the last one stays in place" in r.stderr and "deadline" in r.stderr.lower(), r.stderr
    assert took < 15, f"render took {took:.1f} s against a dripping server (influx_budget_s = 2)"
    assert (out / "index.html").read_text(encoding="utf-8") == "<!doctype html><title>the last page</title>"
    assert not (out / "status.json").exists()
