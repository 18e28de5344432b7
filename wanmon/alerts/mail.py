"""Notifications -> one email per recipient per cycle (plain text + HTML from templates/).

Header safety: every text that goes into a header (site names in the subject)
has control characters (CR, LF...) replaced and "=?" encoded-word openers
broken, so a hostile name can add no header and no recipient.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from wanmon.alerts.engine import Notification
from wanmon.config import Config

KIND_ORDER = ("guard", "down", "unreachable", "degraded", "reminder", "flap_start", "reboot", "flap_end", "recovery",
              "guard_end")
WORDS = {
    "vi": {
        "down": "mất kết nối", "unreachable": "không tới được do tuyến trên", "degraded": "suy giảm",
        "recovery": "đã kết nối lại", "reminder": "vẫn mất kết nối", "flap_start": "chập chờn",
        "flap_end": "hết chập chờn", "reboot": "thiết bị khởi động lại",
        "guard": "tác tử giám sát có thể bị cô lập", "guard_end": "tác tử giám sát đã kết nối lại",
        "site": "điểm", "since": "từ", "children": "Các điểm không tới được do sự cố này",
        "intro": "Thông báo từ hệ thống giám sát mạng WAN tỉnh {province}.",
        "guard_text": "Tuyến trên của chính tác tử giám sát không trả lời: có thể chính tác tử giám sát bị mất "
                      "kết nối. Không gửi thông báo cho từng điểm cho đến khi tình trạng này kết thúc.",
        "footer": "Thư tự động từ wanmon. Trang tình trạng: {page}",
        "test_subject": "[wanmon] Thư kiểm tra", "test_body": "Thư kiểm tra từ wanmon: cấu hình [smtp] hoạt động.",
    },
    "en": {
        "down": "down", "unreachable": "unreachable (upstream outage)", "degraded": "degraded",
        "recovery": "recovered", "reminder": "still down", "flap_start": "flapping", "flap_end": "stopped flapping",
        "reboot": "device rebooted", "guard": "the monitoring agent may be cut off",
        "guard_end": "the monitoring agent is connected again",
        "site": "site", "since": "since", "children": "Sites unreachable because of this outage",
        "intro": "Notification from the {province} provincial WAN monitor.",
        "guard_text": "The monitoring agent's own upstream does not answer: the agent itself may be cut off. "
                      "Per-site notifications are held until this ends.",
        "footer": "Automatic mail from wanmon. Status page: {page}",
        "test_subject": "[wanmon] Test message", "test_body": "Test message from wanmon: the [smtp] settings work.",
    },
}


@dataclass(frozen=True, slots=True)
class Mail:
    recipient: str
    subject: str
    text: str
    html: str
    message_id: str
    kinds: tuple[str, ...]
    created_ts: float


_CTRL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def header_safe(text: str) -> str:
    """One line, no control characters, no RFC 2047 encoded-word opener."""
    return _CTRL.sub(" ", text).replace("=?", "= ?").strip()


def new_message_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname()) or "wanmon"
    return f"<wanmon.{uuid.uuid4().hex}@{host}>"


def recipients_for(n: Notification, cfg: Config, admins: dict[str, tuple[str, ...]]) -> list[str]:
    noc = list(cfg.alerts.noc)
    if n.kind in ("guard", "guard_end"):
        return noc
    own = list(admins.get(n.site_id or "", ()))
    if n.kind == "unreachable":
        return own  # the upstream outage's own notice already tells the NOC
    return own + (noc if cfg.alerts.noc_gets_all else [])


def subject(lang: str, notes: Sequence[Notification], names: dict[str, str]) -> str:
    w = WORDS[lang]
    by_kind: dict[str, list[str]] = {}
    for n in notes:
        by_kind.setdefault(n.kind, []).append(names.get(n.site_id or "", n.site_id or ""))
    parts = []
    for k in KIND_ORDER:
        if k in by_kind:
            if k in ("guard", "guard_end"):
                parts.append(w[k])
            else:
                cnt = len(by_kind[k])
                label = w["site"] if lang == "vi" or cnt == 1 else "sites"
                parts.append(f"{cnt} {label} {w[k]}")
    listed = [x for k in KIND_ORDER for x in by_kind.get(k, []) if k not in ("guard", "guard_end")]
    shown = ", ".join(listed[:3]) + (", …" if len(listed) > 3 else "")
    text = "[wanmon] " + ", ".join(parts) + (f": {shown}" if shown else "")
    return header_safe(text)[:250]


def compose(cfg: Config, notes: Sequence[Notification], now: float | None = None) -> list[Mail]:
    """Group the cycle's notifications per recipient: one mail each."""
    if not notes:
        return []
    now = time.time() if now is None else now
    lang = cfg.page.language
    names = {s.id: s.name for s in cfg.sites}
    admins = {s.id: s.admins for s in cfg.sites}
    per: dict[str, dict[Notification, None]] = {}  # a dict per recipient: ordered, and no note twice
    for n in notes:
        for r in recipients_for(n, cfg, admins):
            per.setdefault(r, {})[n] = None
    env_txt, env_html = _envs(cfg)
    from wanmon.page import Fmt, out_dir
    from zoneinfo import ZoneInfo

    fmt = Fmt(lang, ZoneInfo(cfg.page.timezone))
    ctx_common = {"w": WORDS[lang], "f": fmt, "names": names, "province": cfg.page.province,
                  "page": cfg.page.url or str(out_dir(cfg) / "index.html"), "now": now}
    mails = []
    for rcpt, ns in per.items():
        ns = sorted(ns, key=lambda n: (KIND_ORDER.index(n.kind), names.get(n.site_id or "", "")))
        ctx = {**ctx_common, "notes": ns}
        mails.append(Mail(
            recipient=rcpt, subject=subject(lang, ns, names),
            text=env_txt.get_template("email.txt.j2").render(ctx),
            html=env_html.get_template("email.html.j2").render(ctx),
            message_id=new_message_id(), kinds=tuple(dict.fromkeys(n.kind for n in ns)), created_ts=now,
        ))
    return mails


def _envs(cfg: Config):
    import jinja2

    from wanmon.page import template_loader

    loader = template_loader(cfg)
    txt = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    html = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    return txt, html
