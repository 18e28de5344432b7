"""The report by mail (issue 13, acceptance 4), through a real SMTP server (aiosmtpd):
the daemon mails last month's report once, and not again after a restart; the
month after, once more; `wanmon report --email` sends it on demand. Each message:
the HTML report as its body, the PDF and the CSV attached."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo


sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_server import in_netns  # noqa: E402
from test_alerts_integration import base_sites, lab, smtp, wm, write_config  # noqa: E402,F401
from test_daemon import Daemon  # noqa: E402

from wanmon.config import load  # noqa: E402
from wanmon.model import Observation  # noqa: E402
from wanmon.reportmail import Monthly, last_month_label  # noqa: E402
from wanmon.store import Store  # noqa: E402

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
TO = ["so-tttt@x.example", "lanh-dao@x.example"]


def last_month_history(cfg_path: Path) -> None:
    """Two hours of 1-minute cycles in the middle of last month, through the real store."""
    cfg = load(cfg_path)
    now = datetime.now(TZ)
    mid = (now.replace(day=1, hour=12, minute=0, second=0, microsecond=0) - timedelta(days=15)).timestamp()
    store = Store.open(cfg.store_path)
    try:
        for i in range(120):
            ts = mid + 60 * i
            obs = [Observation(s.id, s.name, s.level, s.district, s.address, ts,
                               "down" if s.id == "fill-1" and 30 <= i < 45 else "up", None, 1,
                               0 if s.id == "fill-1" and 30 <= i < 45 else 1, 0.0, 1.0, 1.0, 1.0, 0.0)
                   for s in cfg.sites]
            store.record_cycle(ts, ts + 1, obs, run_cap_s=cfg.run_cap_s)
    finally:
        store.close()


def report_mails(smtp) -> list:
    return [m for m in smtp.messages if "application/pdf" in m.content_types()]


def test_monthly_report_mail_once_across_restarts_and_on_demand(lab, smtp, tmp_path):  # noqa: F811
    cfg = write_config(tmp_path, smtp, base_sites(3), interval_s=1, alerts="",
                       extra='[report]\nrecipients = ["%s", "%s"]\n' % tuple(TO))
    last_month_history(cfg)
    label = last_month_label(load(cfg), time.time())

    d = Daemon(lab, cfg, tmp_path / "daemon1.log")
    try:
        d.wait_log(f"monthly report {label} mailed to", timeout=60)
        d.wait_cycles(3)
    finally:
        assert d.stop() == 0
    mails = report_mails(smtp)
    assert sorted(m.rcpt_tos[0] for m in mails) == sorted(TO)
    m = mails[0]
    assert "Báo cáo tỷ lệ sẵn sàng" in m.subject and m.html and "Phương pháp tính" in m.html
    assert "UBND cấp huyện" in m.text  # the levels named as on the page (words.level_names)
    parts = {p.get_filename(): p for p in m.message.iter_attachments()}
    assert set(parts) == {f"wanmon-report-{label}.pdf", f"wanmon-report-{label}.csv"}
    assert parts[f"wanmon-report-{label}.pdf"].get_content().startswith(b"%PDF")
    csv_text = parts[f"wanmon-report-{label}.csv"].get_content()
    csv_text = csv_text.decode("utf-8-sig") if isinstance(csv_text, bytes) else csv_text.lstrip("\ufeff")
    assert "fill-1" in csv_text

    # a restart: the store says it went; nothing more is sent
    d2 = Daemon(lab, cfg, tmp_path / "daemon2.log")
    try:
        d2.wait_log(f"monthly report {label}: already mailed", timeout=60)
        d2.wait_cycles(3)
    finally:
        assert d2.stop() == 0
    assert len(report_mails(smtp)) == len(TO)

    # on demand, for any period
    r = wm(lab, cfg, "report", "--month", label, "--email")
    assert r.returncode == 0, r.stderr
    assert f"sent the {label} report to {', '.join(TO)}" in r.stdout
    smtp.wait_for(2 * len(TO) + len(smtp.messages) - len(report_mails(smtp)), timeout=30)
    assert len(report_mails(smtp)) == 2 * len(TO)

    # the month after (this month's cycles, seen from its end): mailed once more, then not again
    c = load(cfg)
    now = datetime.now(TZ)
    next_month = (now.replace(day=28) + timedelta(days=5)).replace(day=1, hour=0, minute=30).timestamp()
    mon = Monthly()
    assert mon.due(c, next_month)
    assert lab_run(lab, mon, c, next_month) == "mailed"
    assert lab_run(lab, Monthly(), c, next_month) == "already mailed"
    assert len(report_mails(smtp)) == 3 * len(TO)


def lab_run(lab, mon: Monthly, cfg, now: float) -> str:  # noqa: F811
    """Monthly.run inside the lab's client namespace, where the SMTP server listens."""
    return in_netns(lab.client, mon.run, cfg, now)
