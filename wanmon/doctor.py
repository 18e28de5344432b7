"""`wanmon doctor`: can this host run the agent, as the process it runs in (run it as the service
user with the service's capability: README, "Deployment")? One finding per line, each problem
with its fix. Looks, never changes anything: no file is written, no mail sent (the SMTP session
ends at QUIT), no point written to InfluxDB."""

from __future__ import annotations

import os
import pwd
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from wanmon.config import Config

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # OK, WARN (worth knowing, the agent runs) or FAIL (a problem: exit 1)
    what: str
    fix: str = ""


def _user() -> str:
    return f"user {pwd_name()} (uid {os.getuid()}, gid {os.getgid()})"


def identity() -> Finding:
    if os.geteuid() == 0:
        return Finding(
            WARN,
            f"running as {_user()}: root may do what the service user may not",
            "run it as the service runs (README, Deployment: setpriv --reuid=wanmon ... wanmon doctor)",
        )
    return Finding(OK, f"running as {_user()}")


def icmp(cfg: Config) -> Finding:
    from wanmon.errors import ProbePermissionError
    from wanmon.probes.icmp import open_sockets

    families: set[int] = {socket.AF_INET}
    # the addresses in service now and from any change to come (a dated inventory)
    ahead = (s for e in cfg.timeline.epochs(time.time()) for s in e.active) if cfg.timeline.dated else cfg.sites
    if any(":" in s.address for s in ahead):
        families.add(socket.AF_INET6)
    try:
        socks = open_sockets(cfg.icmp.mode, families)
    except ProbePermissionError as exc:
        text = str(exc)
        what, _, fix = text.partition(": ")
        return Finding(FAIL, f"ICMP: {what}", fix or text)
    kinds = {
        "raw sockets (root or CAP_NET_RAW)" if f.raw else "unprivileged sockets (gid in ping_group_range)"
        for f in socks.values()
    }
    for f in socks.values():
        f.close()
    return Finding(OK, f"ICMP: this process can ping: {', '.join(sorted(kinds))}")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable(label: str, folder: Path, key: str, relative: bool) -> list[Finding]:
    """folder (or, not made yet, its nearest existing parent, where wanmon creates it) writable
    and traversable by this process; a relative setting said, since it follows the config file."""
    folder = folder.absolute()
    out = []
    if relative:
        out.append(
            Finding(
                WARN,
                f"{label}: {key} is relative, so it is {folder} (from the config file's folder, not the "
                "working directory)",
                f"set an absolute {key} (README, Deployment: /var/lib/wanmon/...)",
            )
        )
    where = _nearest_existing(folder)
    if not where.is_dir():
        return [*out, Finding(FAIL, f"{label}: {where} is not a folder", f"remove it or set {key} elsewhere")]
    ok = os.access(where, os.W_OK | os.X_OK)
    made = "" if where == folder else f" (does not exist yet: wanmon would create it in {where})"
    if ok:
        return [*out, Finding(OK, f"{label}: {folder} is writable by {_user()}{made}")]
    return [
        *out,
        Finding(
            FAIL,
            f"{label}: {where} is not writable by {_user()}{made}",
            f"`chown {pwd_name()}: {where}` (packaging/tmpfiles.d/wanmon.conf makes the folders), or set {key}",
        ),
    ]


def pwd_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def folders(cfg: Config) -> list[Finding]:
    from wanmon.page import out_dir

    out = writable("store", cfg.store_path.parent, "[store] path", not Path(cfg.store.path).is_absolute())
    if cfg.store_path.exists() and not os.access(cfg.store_path, os.R_OK | os.W_OK):
        out.append(
            Finding(
                FAIL,
                f"store: {cfg.store_path} is not readable and writable by {_user()}",
                f"`chown {pwd_name()}: {cfg.store_path}`",
            )
        )
    page = out_dir(cfg)
    out += writable("page", page, "[page] out_dir", not Path(cfg.page.out_dir).is_absolute())
    if page.is_dir():
        out += writable("reports", page / "reports", "[page] out_dir", False)
    return out


def smtp(cfg: Config) -> Finding:
    if cfg.smtp is None:
        return Finding(WARN, "mail: no [smtp] table, so no alert mail is sent", "add [smtp] (host, port, from)")
    from wanmon.mailer import MailError, send_now

    st = cfg.smtp.settings
    try:  # connect, greeting, EHLO, STARTTLS and AUTH as a delivery does, then QUIT; no message
        send_now(cfg.smtp, [], st.timeout_s, "SMTP check")
    except MailError as exc:
        return Finding(
            FAIL,
            f"mail: {exc}",
            "check [smtp] host and port, that the relay runs and that this host may reach it (firewall)",
        )
    login = ", login" if cfg.smtp.user else ""
    return Finding(
        OK, f"mail: SMTP relay {st.host}:{st.port} answered (greeting, EHLO{login}) within {st.timeout_s:g} s"
    )


def influx(cfg: Config) -> list[Finding]:
    if cfg.influx is None:
        return [Finding(OK, "InfluxDB: none configured (everything stays in the store)")]
    from wanmon.sink import check_server

    out = []
    for ok, msg in check_server(cfg.influx):  # each request within [influxdb] timeout_ms, enforced
        out.append(
            Finding(OK, f"InfluxDB: {msg}")
            if ok
            else Finding(FAIL, f"InfluxDB: {msg}", "`wanmon influx check` says more; the README's InfluxDB section")
        )
    return out


def page_url(cfg: Config) -> Finding:
    if cfg.page.url:
        return Finding(OK, f"page: mails link {cfg.page.url}")
    return Finding(
        FAIL,
        "page: [page] url is not set, so alert mails carry no link to the status page",
        'set [page] url = "https://<this host>/wan/" (where the web server serves [page] out_dir)',
    )


def diagnose(cfg: Config, secrets_problem: str | None = None) -> list[Finding]:
    out = [identity()]
    if secrets_problem:
        out.append(
            Finding(
                FAIL,
                f"secrets: {secrets_problem}",
                "put them in /etc/wanmon/secrets.env (EnvironmentFile=) and run doctor with them set",
            )
        )
    out.append(icmp(cfg))
    out += folders(cfg)
    if secrets_problem is None:
        out.append(smtp(cfg))
    out += influx(cfg)
    out.append(page_url(cfg))
    return out
