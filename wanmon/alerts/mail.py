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

from wanmon.collate import in_order, sort_key
from wanmon.config import Config
from wanmon.model import Mail, Notification
from wanmon.words import MAIL as WORDS
from wanmon.words import Fmt, degraded_why, outage, since_text

KIND_ORDER = (
    "guard",
    "down",
    "unreachable",
    "degraded",
    "reminder",
    "flap_start",
    "reboot",
    "flap_end",
    "recovery",
    "guard_end",
)


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
    if n.kind == "unreachable" or (n.kind == "recovery" and n.was == "unreachable" and n.cause):
        return own  # the upstream outage's own DOWN and RECOVERY list it for the NOC
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
    # each site once, in the order of the first kind it appears under
    listed = list(dict.fromkeys(x for k in KIND_ORDER for x in by_kind.get(k, []) if k not in ("guard", "guard_end")))
    shown = ", ".join(listed[:3]) + (", …" if len(listed) > 3 else "")
    text = "[wanmon] " + ", ".join(parts) + (f": {shown}" if shown else "")
    return header_safe(text)[:250]


def detail(
    n: Notification,
    lang: str,
    fmt,
    now: float,
    names: dict[str, str],
    figures: dict[str, tuple[float | None, float | None]],
    thresholds,
) -> str:
    """What a notification says beyond its kind, in the mail's language (the engine's
    `detail` is for the logs). A recovery's times are in its `when` (item())."""
    w = WORDS[lang]
    if n.kind in ("flap_start", "flap_end") and n.value is not None:
        return w["flap"].format(pct=fmt.num(n.value, 0, " %"))
    if n.kind == "degraded":
        rtt, loss = figures.get(n.site_id or "", (None, None))
        return degraded_why(fmt, rtt, loss, thresholds)
    if n.kind == "guard" and len(n.counts) == 5:
        silent, upstream, failing, total, roots = n.counts
        return w["guard_detail"].format(
            sites=", ".join(f"{names.get(c, c)} ({c})" for c in n.children[:5]),
            silent=silent,
            upstream=upstream,
            failing=failing,
            total=total,
            roots=roots,
        )
    if n.kind == "guard_end" and len(n.counts) == 5:
        return w["guard_end_detail"].format(failing=n.counts[2], total=n.counts[3])
    if n.kind == "reboot" and n.uptimes:
        was, up = n.uptimes
        return w["reboot_detail"].format(was="?" if was is None else fmt.span(was), now=fmt.span(up))
    return ""


@dataclass(frozen=True, slots=True)
class Item:
    """One notification as a mail says it to one kind of reader, in plain text that both
    templates show: the cause first, then what to do and whom to call."""

    kind: str
    label: str  # "mất kết nối"
    name: str  # the site's name ("" for the agent-wide guard)
    site_id: str
    when: str  # "từ 07/12/2026 10:31 (4 phút)"; a recovery: "lúc …, sau 4 phút mất kết nối (từ …)"
    detail: str  # figures: thresholds crossed, % of state changes, uptimes, the guard's counts
    cause: str  # why, when it is not the site's own fault (an upstream site down; the agent cut off)
    children_title: str  # "Các điểm không tới được do sự cố này (14)"
    children: tuple[tuple[str, str], ...]  # (name, id), in Vietnamese alphabetical order
    todo: str  # what the reader should do, and whom to call
    path: str = ""  # a DOWN's outage path: "Dò đường lúc …: đường truyền dừng sau …, hop 2 của 3"


class _Words:
    """What compose() needs to word a cycle's notifications, resolved once per cycle."""

    def __init__(self, cfg: Config, now: float):
        self.cfg, self.now, self.lang = cfg, now, cfg.page.language
        self.w, self.fmt = _mail_words(cfg)
        self.sites = {s.id: s for s in cfg.sites}
        self.names = {s.id: s.name for s in cfg.sites}

    def contact(self, site_id: str) -> str:
        """Whom the site's administrators call: its own contact, its district's, [alerts] contact."""
        s = self.sites.get(site_id)
        a = self.cfg.alerts
        found = (s.contact or a.district_contacts.get(s.district or "") if s else None) or a.contact
        return found or self.w["no_contact"]

    def label(self, site_id: str) -> str:
        return f"{self.names.get(site_id, site_id)} ({site_id})"

    def when(self, n: Notification) -> str:
        f, w = self.fmt, self.w
        if n.kind == "recovery":
            back = n.ts if n.back_ts is None else n.back_ts
            if n.since is None:
                return f"{w['back_at']} {f.dt(back)}"
            span = outage(f, max(0.0, back - n.since), n.was or "down")
            return f"{w['back_at']} {f.dt(back)}, {span} ({w['since']} {f.dt(n.since)})"
        if n.since is not None and n.kind in ("down", "unreachable", "degraded", "reminder"):
            return f"{w['since']} {f.dt(n.since)} ({f.span(max(0.0, self.now - n.since))})"
        return ""

    def cause(self, n: Notification) -> str:
        w, f = self.w, self.fmt
        if n.kind == "guard":
            return w["guard_text"]
        if n.kind != "unreachable" and not (n.kind == "recovery" and n.was == "unreachable"):
            return ""
        if n.cause is None:
            return w["cause_unknown"]
        if n.kind == "recovery":
            if n.cause_since is None:
                return w["cause_was_unknown"].format(site=self.label(n.cause))
            return w["cause_was"].format(site=self.label(n.cause), when=f.dt(n.cause_since))
        what = since_text(f, "down", n.cause_since, self.now) if n.cause_since is not None else w["down"]
        return w["cause_now"].format(site=self.label(n.cause), what=what)

    def todo(self, n: Notification, noc: bool) -> str:
        w = self.w
        if n.kind == "guard":
            return w["todo"].format(text=w["do_guard"])
        if not n.site_id:
            return ""
        if noc:  # the NOC is who the sites call: it gets whom to call at the site
            if n.kind not in ("down", "reminder", "degraded", "flap_start", "reboot"):
                return ""
            admins = self.sites[n.site_id].admins if n.site_id in self.sites else ()
            return w["noc_admins"].format(admins=", ".join(admins)) if admins else w["noc_no_admins"]
        text = w.get(f"do_{n.kind}", "")
        return w["todo"].format(text=text.format(contact=self.contact(n.site_id))) if text else ""

    def children(self, n: Notification) -> tuple[str, tuple[tuple[str, str], ...]]:
        if not n.children or n.kind in ("guard", "guard_end"):
            return "", ()
        kids = in_order(((self.names.get(c, c), c) for c in n.children), lambda x: x[0])
        title = self.w["back_children" if n.kind == "recovery" else "children"]
        return f"{title} ({len(kids)})", tuple(kids)

    def path(self, n: Notification, paths: dict[str, tuple[float, str]]) -> str:
        """Where a down site's path stops (traced after its first down cycle), when it is known."""
        got = paths.get(n.site_id or "") if n.kind in ("down", "reminder") and n.status == "down" else None
        return self.w["path"].format(when=self.fmt.dt(got[0]), text=got[1]) if got else ""

    def item(self, n: Notification, noc: bool, detail_text: str, path: str = "") -> Item:
        title, kids = self.children(n)
        return Item(
            kind=n.kind,
            label=self.w[n.kind],
            name=self.names.get(n.site_id or "", n.site_id or ""),
            site_id=n.site_id or "",
            when=self.when(n),
            detail=detail_text,
            cause=self.cause(n),
            children_title=title,
            children=kids,
            todo=self.todo(n, noc),
            path=path,
        )


def compose(
    cfg: Config,
    notes: Sequence[Notification],
    now: float | None = None,
    figures: dict[str, tuple[float | None, float | None]] | None = None,
    paths: dict[str, tuple[float, str]] | None = None,
) -> list[Mail]:
    """Group the cycle's notifications per recipient: one mail each, written for its reader (a
    site's administrators: the cause, what to do, whom to call; the NOC: whom to call at the site).
    figures: {site_id: (rtt_avg_ms, loss_pct)} of this cycle (a degraded mail gives them);
    paths: {site_id: (when traced, where its path stops)} of the down sites (a DOWN gives it)."""
    if not notes:
        return []
    now = time.time() if now is None else now
    words = _Words(cfg, now)
    names = words.names
    admins = {s.id: s.admins for s in cfg.sites}
    noc_addrs = set(cfg.alerts.noc)
    per: dict[str, dict[Notification, None]] = {}  # a dict per recipient: ordered, and no note twice
    for n in notes:
        for r in recipients_for(n, cfg, admins):
            per.setdefault(r, {})[n] = None
    env_txt, env_html = _envs(cfg)
    details = {n: detail(n, words.lang, words.fmt, now, names, figures or {}, cfg.thresholds) for n in notes}
    items: dict[tuple[Notification, bool], Item] = {}
    # the footer links the page only where people can open it ([page] url): never a server's file path
    ctx_common = {
        "w": words.w,
        "f": words.fmt,
        "names": names,
        "province": cfg.page.province,
        "page": cfg.page.url,
        "now": now,
        "lang": words.lang,
    }
    mails = []
    for rcpt, unique in per.items():
        ns = sorted(unique, key=lambda n: (KIND_ORDER.index(n.kind), sort_key(names.get(n.site_id or "", ""))))
        mine = []
        for n in ns:
            # the NOC's view, unless this address is also one of the site's own administrators
            noc = rcpt in noc_addrs and rcpt not in admins.get(n.site_id or "", ())
            if (n, noc) not in items:
                items[(n, noc)] = words.item(n, noc, details[n], words.path(n, paths or {}))
            mine.append(items[(n, noc)])
        subj = subject(words.lang, ns, names)
        ctx = {**ctx_common, "notes": ns, "items": mine, "noc": rcpt in noc_addrs, "subject": subj}
        mails.append(
            Mail(
                recipient=rcpt,
                subject=subj,
                text=env_txt.get_template("email.txt.j2").render(ctx),
                html=env_html.get_template("email.html.j2").render(ctx),
                message_id=new_message_id(),
                kinds=tuple(dict.fromkeys(n.kind for n in ns)),
                created_ts=now,
                notes=tuple((n.site_id or "", n.kind) for n in ns),
            )
        )
    return mails


def damage_mails(cfg: Config, path, marker: dict, now: float) -> list[Mail]:
    """The NOC's notice that the store is damaged (store.damaged's marker), one mail per NOC
    address, in [page] language. Sent at once (cycle.tell_noc_of_damage), not through the
    outbox: the outbox is in the damaged store."""
    w, fmt = _mail_words(cfg)
    when = fmt.dt(marker["ts"]) if marker.get("ts") else "?"
    return noc_mails(
        cfg,
        w["damage_subject"],
        w["damage_text"].format(path=path, when=when),
        (w["damage_findings"], marker.get("findings", [])),
        "store_damaged",
        now,
    )


def output_mails(cfg: Config, output: str, health, now: float, back: bool) -> list[Mail]:
    """The NOC's notice that an output (wanmon.outputs) keeps failing, or works again."""
    w, fmt = _mail_words(cfg)
    fields = {
        "output": output,
        "since": fmt.dt(health.failing_since or now),
        "when": fmt.dt(now),
        "failures": health.failures,
    }
    if back:
        return noc_mails(
            cfg,
            w["output_back_subject"].format(**fields),
            w["output_back_text"].format(**fields),
            None,
            "output_back",
            now,
        )
    return noc_mails(
        cfg,
        w["output_subject"].format(**fields),
        w["output_text"].format(**fields),
        ("", [health.error or "?"]),
        "output_failing",
        now,
    )


def primary_mails(cfg: Config, what: str, primary, now: float) -> list[Mail]:
    """A standby's notice to the NOC about the primary agent (wanmon.agents): what is
    'stale', 'back' (heartbeats again), 'mail' (its mail fails) or 'mail_back'.
    primary: influxql.AgentSeen, from its last heartbeat."""
    w, fmt = _mail_words(cfg)
    fields = {
        "agent": primary.agent,
        "host": primary.host,
        "me": cfg.agent.id,
        "when": fmt.dt(now),
        "last": fmt.dt(primary.last_ts),
        "interval": f"{primary.interval_s:g}",
        "since": fmt.dt(primary.mail_failing_since or primary.last_ts),
        "failures": primary.mail_failures,
        "queued": primary.mail_queued,
    }
    key = {"stale": "primary_stale", "back": "primary_back", "mail": "primary_mail", "mail_back": "primary_mail_back"}[
        what
    ]
    return noc_mails(cfg, w[key + "_subject"].format(**fields), w[key + "_text"].format(**fields), None, key, now)


def _mail_words(cfg: Config):
    """The mail words and formats of [page] language and timezone."""
    from zoneinfo import ZoneInfo

    lang = cfg.page.language
    return WORDS[lang], Fmt(lang, ZoneInfo(cfg.page.timezone))


def noc_mails(
    cfg: Config, subject: str, text: str, findings: tuple[str, list[str]] | None, kind: str, now: float
) -> list[Mail]:
    """A plain notice to each [alerts] noc address: a paragraph, then a titled list (at most 5 lines)."""
    from html import escape

    from wanmon.text import printable

    w = WORDS[cfg.page.language]
    title, items = findings or ("", [])
    items = [printable(f)[:300] for f in items[:5]]
    subj = header_safe(subject)
    body = (
        text
        + "\n\n"
        + (title + "\n" if title else "")
        + "".join(f"- {f}\n" for f in items)
        + ("\n" if items else "")
        + w["footer"]
        + "\n"
    )
    html = (
        f'<!DOCTYPE html>\n<html lang="{cfg.page.language}"><head><meta charset="utf-8"><title>{escape(subj)}'
        f"</title></head><body><p>{escape(text)}</p>"
        + (f"<p>{escape(title)}</p>" if title else "")
        + ("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in items) + "</ul>" if items else "")
        + f"<p>{escape(w['footer'])}</p></body></html>\n"
    )
    return [
        Mail(
            recipient=r, subject=subj, text=body, html=html, message_id=new_message_id(), kinds=(kind,), created_ts=now
        )
        for r in cfg.alerts.noc
    ]


def _envs(cfg: Config):
    import jinja2

    from wanmon.page import template_loader

    loader = template_loader(cfg)
    txt = jinja2.Environment(
        loader=loader,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    html = jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return txt, html
