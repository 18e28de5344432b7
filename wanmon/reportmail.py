"""The availability report by mail: `wanmon report --email`, and the daemon's monthly one.

One message per recipient of [report] recipients: the report's HTML as the body (a
plain-text summary beside it), the PDF and the CSV attached; sent now, on one SMTP
connection, within MAIL_BUDGET_S (enforced while it runs: mailer.send_now).

The daemon mails the previous calendar month's report ([page] timezone) once: the
store's meta `report_mailed` holds the last month mailed, written after the server
accepted every message, so restarts never send it twice. It is tried when the
month has turned and something was observed in that month (a fresh install does not
mail an empty report), in a thread off the cycle's path; a failure is logged and
retried at most every RETRY_S. Edge left open: a crash between the server's
acceptance and the meta write sends it again after the restart (at most once more).
"""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo

from wanmon.config import Config
from wanmon.errors import WanmonError

logger = logging.getLogger(__name__)

MAIL_BUDGET_S = 120.0
RETRY_S = 3600.0


def message_rows(cfg: Config, rep) -> list[dict]:
    from wanmon import report as rp
    from wanmon.alerts.mail import header_safe, new_message_id
    from wanmon.words import Fmt

    w = rep.words()
    fmt = Fmt(rep.language, ZoneInfo(cfg.page.timezone))
    when = rp.period_text(rep.period, fmt, w)
    total = fmt.pct(rep.total.availability_pct)
    subject = header_safe(f"[wanmon] {w['title'].format(province=rep.province)} — {when}: {total}")
    html = rp.to_html(cfg, rep)
    pdf = rp.to_pdf(cfg, rep)
    csv_bytes = rp.to_csv(rep)
    lines = [w["title"].format(province=rep.province), f"{w['period']}: {when}", ""]
    for lv, f in rep.levels:
        lines.append(f"{w['levels'][lv]}: {fmt.pct(f.availability_pct)} ({w['previous']}: {fmt.pct(f.previous_pct)})")
    lines += ["", w["below_n"].format(n=rep.total.below_target, t=fmt.pct(rep.target_pct))]
    name = rp.default_path(cfg, rep, "x").stem
    attachments = [(f"{name}.pdf", "application", "pdf", pdf), (f"{name}.csv", "text", "csv", csv_bytes)]
    return [
        {
            "recipient": to,
            "subject": subject,
            "created_ts": time.time(),
            "message_id": new_message_id(),
            "body_text": "\n".join(lines) + "\n",
            "body_html": html,
            "attachments": attachments,
        }
        for to in cfg.report.recipients
    ]


def send_report(cfg: Config, rep) -> list[str]:
    """Send now; returns the recipients. Raises WanmonError (no [smtp], no recipients, refused)."""
    from wanmon.mailer import send_now

    if cfg.smtp is None:
        raise WanmonError(f"{cfg.path}: no [smtp] table: add one (host, port, from) to mail reports")
    if not cfg.report.recipients:
        raise WanmonError(f"{cfg.path}: [report] recipients is empty: add the addresses to mail the report to")
    rows = message_rows(cfg, rep)
    send_now(cfg.smtp, rows, MAIL_BUDGET_S, "report mail")
    return [r["recipient"] for r in rows]


def last_month(cfg: Config, now: float):
    """The previous calendar month in [page] timezone: `wanmon report`'s default period."""
    from wanmon.report import parse_period

    return parse_period(ZoneInfo(cfg.page.timezone), now)


def last_month_label(cfg: Config, now: float) -> str:
    return last_month(cfg, now).label


class Monthly:
    """The daemon's monthly report: due() is cheap (in memory); run() does the work (a thread)."""

    def __init__(self) -> None:
        self.done_label: str | None = None  # mailed, or known to have nothing to mail
        self.next_try = 0.0

    def due(self, cfg: Config, now: float) -> bool:
        return (
            cfg.report.monthly
            and bool(cfg.report.recipients)
            and cfg.smtp is not None
            and self.done_label != last_month_label(cfg, now)
            and now >= self.next_try
        )

    def run(self, cfg: Config, now: float) -> str:
        """Mail last month's report unless the store says it went; returns what happened."""
        from wanmon import report as rp
        from wanmon.store import Store

        period = last_month(cfg, now)
        label = period.label
        store = Store.open(cfg.store_path, any_thread=True)
        try:
            if store.meta("report_mailed") == label:
                self.done_label = label
                logger.info("monthly report %s: already mailed", label)
                return "already mailed"
            rep = rp.build(cfg, store, period, now)
            if rep.total.observed_s == 0:
                self.done_label = label
                logger.info("monthly report %s: nothing was observed that month, not mailed", label)
                return "nothing observed"
            try:
                sent = send_report(cfg, rep)
            except WanmonError as exc:
                self.next_try = now + RETRY_S
                logger.error("monthly report %s not mailed: %s (next try in %.0f min)", label, exc, RETRY_S / 60)
                return "failed"
            store.set_meta(report_mailed=label)
            self.done_label = label
            logger.info("monthly report %s mailed to %s", label, ", ".join(sent))
            return "mailed"
        finally:
            store.close()
