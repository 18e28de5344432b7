"""Outputs fail alone (issue 20, acceptance 1): with one output broken, the others still
work in the same cycle, and the broken one is reported.

Real peers in the lab's client namespace (tests/netns.py): `wanmon check` as cron runs it,
real ICMP to a site that goes down, a real SMTP server (aiosmtpd) and a real InfluxDB 1.6.

* `[page] out_dir` cannot be written: the DOWN still reaches the site's admins and the
  cycle's points reach InfluxDB; `check` says the page failed (exit 1, one line), `status`
  shows the output failing, and after it keeps failing the NOC gets one notice.
* `[page] source = "influxdb"` with a point `level=bogus` written by another program: the
  DOWN and the points still go out, and the page from InfluxDB is written, the bad point
  skipped and counted on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_server import in_netns  # noqa: E402
from test_alerts_integration import (NOC, base_sites, hosts, lab, site_toml, smtp, wm,  # noqa: E402,F401
                                     write_config)
from test_report_influxql import influx  # noqa: E402,F401

ADMIN = "x@x.example"


def _sites(x: str) -> str:
    return base_sites(2) + site_toml("gia-binh", "UBND huyện Gia Bình", "district", x, [ADMIN], district="Gia Bình",
                                     parent="core")


def _points(lab, influx, site: str) -> list[dict]:  # noqa: F811
    q = f'SELECT "status" FROM "wanmon_icmp" WHERE "site_id" = \'{site}\''
    return in_netns(lab.client, influx.rows, q, "wanmon")


def _down_mails(smtp) -> list:  # noqa: F811
    return [m for m in smtp.snapshot() if ADMIN in m.rcpt_tos]


def test_an_unwritable_page_folder_silences_neither_mail_nor_influxdb(lab, hosts, influx, smtp, tmp_path):  # noqa: F811
    x = hosts.new()
    (tmp_path / "not-a-folder").write_text("a file where the page's folder should be\n")
    extra = f'[influxdb]\nurl = "{influx.url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n'
    cfg = write_config(tmp_path, smtp, _sites(x), extra=extra)
    cfg.write_text(cfg.read_text().replace('out_dir = "public"', 'out_dir = "not-a-folder/public"'))

    def check():
        cp = wm(lab, cfg, "check")
        assert cp.returncode == 1, cp.stderr  # the page is check's own product: it says it failed
        assert "the cycle was recorded and the other outputs ran" in cp.stderr and "[page] out_dir" in cp.stderr
        assert "Traceback" not in cp.stderr
        return cp

    check()
    hosts.down(x)
    for _ in range(3):  # confirm_cycles = 3
        check()
    downs = _down_mails(smtp)
    assert len(downs) == 1 and "Gia Bình" in downs[0].subject, [m.subject for m in smtp.snapshot()]
    statuses = [r["status"] for r in _points(lab, influx, "gia-binh")]
    assert statuses.count("down") == 3 and statuses.count("up") == 1, statuses   # every cycle's point, in time

    st = json.loads(wm(lab, cfg, "status", "--json").stdout)
    page = st["outputs"]["page"]
    assert page["failing_since"] is not None and page["failures"] == 4 and "out_dir" in page["error"]
    assert st["outputs"]["mail"]["failing_since"] is None and st["outputs"]["influxdb"]["failing_since"] is None
    text = wm(lab, cfg, "status").stdout
    assert "Output page: FAILING" in text and "Output mail: ok" in text
    # it kept failing: the NOC was told once, by mail (the mail output works)
    notices = [m for m in smtp.snapshot() if NOC in m.rcpt_tos and "page" in m.subject]
    assert len(notices) == 1, [m.subject for m in smtp.snapshot()]
    assert "out_dir" in notices[0].text
    check()
    assert len([m for m in smtp.snapshot() if NOC in m.rcpt_tos and "page" in m.subject]) == 1  # not again

    # the folder is fixed: the page is written, the NOC hears it works again
    (tmp_path / "not-a-folder").unlink()
    cp = wm(lab, cfg, "check")
    assert cp.returncode == 0, cp.stderr
    assert (tmp_path / "not-a-folder" / "public" / "index.html").exists()
    back = [m for m in smtp.snapshot() if NOC in m.rcpt_tos and "page" in m.subject]
    assert len(back) == 2, [m.subject for m in back]
    st = json.loads(wm(lab, cfg, "status", "--json").stdout)
    assert st["outputs"]["page"]["failing_since"] is None


def test_a_bogus_point_in_influxdb_silences_neither_mail_nor_the_page(lab, hosts, influx, smtp, tmp_path):  # noqa: F811
    x = hosts.new()
    extra = f'[influxdb]\nurl = "{influx.url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 5000\n'
    cfg = write_config(tmp_path, smtp, _sites(x), page='source = "influxdb"', extra=extra)
    # another program wrote a point wanmon cannot show (as with curl)
    line = 'wanmon_icmp,site_id=bogus-1,level=bogus,agent=other status="up",up=1i'
    r = in_netns(lab.client, influx.write, [line], "wanmon")
    assert r.status == 204
    for _ in range(1):
        cp = wm(lab, cfg, "check")
        assert cp.returncode == 0, cp.stderr
    hosts.down(x)
    for _ in range(3):
        cp = wm(lab, cfg, "check")
        assert cp.returncode == 0, cp.stderr
        assert "Traceback" not in cp.stderr
    downs = _down_mails(smtp)
    assert len(downs) == 1 and "Gia Bình" in downs[0].subject, [m.subject for m in smtp.snapshot()]
    statuses = [r["status"] for r in _points(lab, influx, "gia-binh")]
    assert statuses.count("down") == 3, statuses
    snap = json.loads((tmp_path / "public" / "status.json").read_text())
    assert snap["source"] == "influxdb"
    assert snap["sites"]["gia-binh"]["status"] == "down"
    assert "bogus-1" not in snap["sites"]
    assert snap["skipped_points"] == {"an unknown level tag": 1}
    html = (tmp_path / "public" / "index.html").read_text()
    assert "Bỏ qua 1 điểm dữ liệu từ InfluxDB" in html
    st = json.loads(wm(lab, cfg, "status", "--json").stdout)
    assert all(h["failing_since"] is None for h in st["outputs"].values()), st["outputs"]
