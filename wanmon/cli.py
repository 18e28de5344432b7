"""Command line: `wanmon [--config PATH] validate | check | status`.

Exit codes: 0 done (even with sites down), 1 the command could not do its job,
2 invalid configuration (nothing run, nothing written), 75 another cycle holds
the store lock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wanmon import __version__
from wanmon.config import DEFAULT_CONFIG, Config, InfluxSpec, load
from wanmon.errors import EXIT_CONFIG, EXIT_FAILURE, WanmonError
from wanmon.inventory import Inventory
from wanmon.status import SEVERITY, STATUSES
from wanmon.text import printable, printable_lines

if TYPE_CHECKING:  # rich loads when a command draws (start-up time)
    from rich.progress import Progress, TaskID

logger = logging.getLogger("wanmon")

STATUS_STYLE = {"up": "green", "degraded": "yellow", "down": "bold red", "unreachable": "magenta", "unknown": "dim"}
STATUS_MARK = {"up": "✔", "degraded": "▲", "down": "✖", "unreachable": "⊘", "unknown": "?"}


class _SafeFormatter(logging.Formatter):
    """Log lines carry device and config strings: their control characters are shown, not sent
    to the terminal (wanmon.text)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _fail(exc: WanmonError) -> None:
    click.echo(f"wanmon: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _read_store(cfg: Config, read: Callable[[Any], Any], any_older: bool = False) -> Any:
    """Open the store read-only, return read(store), close it; a store problem ends the command.
    any_older: read a store of an older schema as it is (never migrated here)."""
    from wanmon.store import Store

    try:
        store = Store.open_readonly(cfg.store_path, any_older=any_older)
        try:
            return read(store)
        finally:
            store.close()
    except WanmonError as exc:
        _fail(exc)


_STORE_PATH: list = [None]  # the loaded config's store, for the one-line messages of main()
_WRITER_CFG: list = [
    None
]  # the config of a command that writes the store (check, store check): damage found is told to the NOC


def _tell_noc_if_damaged() -> None:
    """The store was found damaged while a writing command ran: mail the NOC (once; never fails the command)."""
    cfg = _WRITER_CFG[0]
    if cfg is None:
        return
    from wanmon.cycle import tell_noc_of_damage

    try:
        tell_noc_of_damage(cfg)
    except Exception:
        logger.exception("telling the NOC that the store is damaged failed")


def _load(ctx: click.Context, secrets: bool = True) -> Config:
    try:
        cfg = load(ctx.obj["config"], secrets=secrets)
        _STORE_PATH[0] = cfg.store_path
        return cfg
    except WanmonError as exc:
        _fail(exc)
        raise  # unreachable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config",
    default=DEFAULT_CONFIG,
    envvar="WANMON_CONFIG",
    show_default=True,
    help="Sites and settings file (env WANMON_CONFIG).",
    type=click.Path(dir_okay=False),
)
@click.option("--verbose", "-v", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="wanmon")
@click.pass_context
def cli(ctx: click.Context, config: str, verbose: int) -> None:
    """wanmon: inventory and monitoring of a provincial WAN."""
    # Quiet by default, the daemon too (a journal or a cron log full of routine lines hides the
    # warnings): -v one line per cycle and per SNMP poll, -vv every site's detail.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if verbose < 2:  # APScheduler says "Running job ..." twice per job and cycle at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    ctx.obj = {"config": config}


@cli.command()
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check the config file; list every problem with its place (exit 2 if any)."""
    cfg = _load(ctx)
    for w in cfg.warnings:
        click.echo(f"wanmon: warning: {w}", err=True)
    inv = Inventory.from_config(cfg)
    counts = inv.level_counts()
    click.echo(
        f"{cfg.path}: OK: {len(cfg.sites)} sites "
        f"({counts['province']} province, {counts['district']} district, {counts['commune']} commune) "
        f"in {len(inv.districts)} districts"
    )
    tl = cfg.timeline
    for t in tl.instants:  # a dated inventory: each state it describes, in one line
        epoch = tl.at(t)
        now = Inventory.from_config(dataclasses.replace(cfg, sites=epoch.active))
        c = now.level_counts()
        click.echo(
            f"  from {tl.labels[t]}: {len(epoch.active)} sites in service "
            f"({c['province']} province, {c['district']} district, {c['commune']} commune) "
            f"in {len(now.districts)} districts"
        )


def _snmp_json(view) -> dict[str, Any]:
    d = view.device if view is not None else None
    ok = d if d is not None and d.last_ok_ts is not None else None  # the figures: once a poll succeeded
    uplink = None
    if ok is not None and ok.uplink_if_index is not None:
        uplink = {
            "if_index": ok.uplink_if_index,
            "name": ok.uplink_name,
            "in_bps": ok.uplink_in_bps,
            "out_bps": ok.uplink_out_bps,
            "util_in_pct": ok.uplink_util_in_pct,
            "util_out_pct": ok.uplink_util_out_pct,
        }
    return {
        "status": view.status if view is not None else "disabled",
        "reason": view.reason if view is not None else None,
        "ts": d.last_poll_ts if d else None,
        "last_ok_ts": d.last_ok_ts if d else None,
        "uptime_s": ok.uptime_s if ok is not None else None,
        "sys_name": ok.sys_name if ok is not None else None,
        "last_reboot": ok.last_reboot_ts if ok is not None else None,
        "uplink": uplink,
    }


def _site_json(o, ip: str | None, snmp_view=None) -> dict[str, Any]:
    return {
        "id": o.site_id,
        "name": o.name,
        "level": o.level,
        "district": o.district,
        "address": o.address,
        "ip": ip,
        "status": o.status,
        "reason": o.reason,
        "ts": o.ts,
        "icmp": {
            "sent": o.sent,
            "received": o.received,
            "loss_pct": o.loss_pct,
            "rtt_min_ms": o.rtt_min_ms,
            "rtt_avg_ms": o.rtt_avg_ms,
            "rtt_max_ms": o.rtt_max_ms,
            "jitter_ms": o.jitter_ms,
        },
        "snmp": _snmp_json(snmp_view),
    }


class _ProgressBar:
    """A transient progress bar on a terminal's stderr; nothing when not a terminal."""

    def __init__(self, total_sites: int):
        self.total_sites = total_sites
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Callable[[int, int, int], None] | None:
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]ICMP[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=_console(stderr=True),
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(f"{self.total_sites} sites", total=None, info="")
        return self.update

    def update(self, sent: int, replies: int, total: int) -> None:
        assert self.progress is not None and self.task is not None
        info = f"sent {sent}/{total}, replies {replies}"
        self.progress.update(self.task, total=total, completed=sent, info=info)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per site (a JSON array) on stdout.")
@click.option("--dry-run", is_flag=True, help="Print the alert mails instead of sending them (on stderr with --json).")
@click.pass_context
def check(ctx: click.Context, as_json: bool, dry_run: bool) -> None:
    """Run one cycle (ping every site), record it in the store, print a summary."""
    from wanmon.cycle import run_check

    cfg = _load(ctx)
    _WRITER_CFG[0] = cfg
    _warn_shared_net_raw()
    try:
        with _ProgressBar(len(cfg.as_of(time.time()).sites)) as progress:
            result = run_check(cfg, progress, dry_run=dry_run)
    except WanmonError as exc:
        _tell_noc_if_damaged()
        _fail(exc)
    if dry_run:
        _print_mails(result.mails, sys.stderr if as_json else sys.stdout)
    if as_json:
        # A JSON array, one site per line: each line by the C encoder (indent= falls back to the
        # pure-Python one: 0.1 s at 2,000 sites), one write.
        enc = json.JSONEncoder(ensure_ascii=False).encode
        sys.stdout.write(
            "[\n"
            + ",\n".join(
                enc(_site_json(o, result.ip_by_site.get(o.site_id), result.snmp.get(o.site_id)))
                for o in result.observations
            )
            + "\n]\n"
        )
    else:
        _print_summary(cfg, result, dry_run)
    if "page" in result.failed:  # the check's own product: the cycle was recorded, mail and InfluxDB went on
        sys.exit(f"wanmon: error: the cycle was recorded and the other outputs ran, but {result.failed['page']}")


def _site_now(cfg: Config, site_id: str) -> Config:
    """The config as of now, when site_id is in service now; else exit 2 saying why, with the
    closest id when it is a typo."""
    import difflib

    now_cfg = cfg.as_of(time.time())
    if any(s.id == site_id for s in now_cfg.sites):
        return now_cfg
    if any(s.id == site_id for s in cfg.timeline.base):
        why = f"site '{site_id}' is not in service now (see its in_service_from / retired_at in {cfg.path})"
    else:
        close = difflib.get_close_matches(site_id, [s.id for s in now_cfg.sites], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (`wanmon status` lists the sites)"
        why = f"unknown site '{site_id}' in {cfg.path}{hint}"
    click.echo(f"wanmon: error: {printable(why)}", err=True)
    sys.exit(EXIT_CONFIG)


@cli.command()
@click.argument("site_id", metavar="SITE")
@click.option("-v", "--verbose", "verbose", is_flag=True, help="Also the SNMP details and the last good path.")
@click.pass_context
def probe(ctx: click.Context, site_id: str, verbose: bool) -> None:
    """One site under the magnifier: DNS, each ICMP reply, the path, SNMP, and what the agent
    concludes. Exit 0 up (or degraded), 1 down or unreachable, 2 unknown site."""
    from wanmon.siteprobe import probe_site

    cfg = _site_now(_load(ctx), site_id)
    lines, code = probe_site(cfg, site_id, verbose)
    for line in lines:
        click.echo(printable(line))
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help='{"suggestions": [...]} on stdout.')
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds for tracing the sites without a stored good path, in all.",
)
@click.option("--fresh", is_flag=True, help="Trace every site now instead of using the stored good paths.")
@click.pass_context
def topology(ctx: click.Context, as_json: bool, budget: float, fresh: bool) -> None:
    """Each site's parent from the evidence (traceroute paths, LLDP neighbours), against the
    configured parents: the differences, their evidence and a patch of the config to review."""
    from wanmon.topology import discover, text_report

    cfg = _load(ctx)
    now_cfg = cfg.as_of(time.time())
    try:
        found = discover(now_cfg, budget, fresh)
    except WanmonError as exc:
        _fail(exc)
    if as_json:
        json.dump({"suggestions": [s.as_json() for s in found.suggestions]}, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return
    for line in text_report(now_cfg, found, cfg.path.read_text(encoding="utf-8")):
        click.echo(printable(line))


def _print_mails(mails, out) -> None:
    if not mails:
        out.write("--dry-run: no alert mail this cycle\n")
    for m in mails:
        out.write(
            f"--- mail (dry run) ---\nTo: {m.recipient}\nSubject: {m.subject}\nMessage-ID: {m.message_id}\n\n{m.text}\n"
        )


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The daemon: a cycle now, then every [schedule] icmp_interval_s (SIGTERM to stop, SIGHUP to reload)."""
    from wanmon.daemon import run as run_daemon

    cfg = _load(ctx)
    sys.exit(run_daemon(cfg))


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Can this host run the agent, as the user running this? ICMP, the store and page folders,
    SMTP and InfluxDB within their deadlines, the page's URL; each problem with its fix (exit 1)."""
    from wanmon.doctor import FAIL, diagnose

    problem = None
    try:
        cfg = load(ctx.obj["config"], secrets=True)
    except WanmonError as exc:
        try:  # a missing secret is one finding; any other config problem ends here (exit 2)
            cfg = load(ctx.obj["config"], secrets=False)
        except WanmonError:
            _fail(exc)
            raise
        problem = str(exc)
    findings = diagnose(cfg, problem)
    for f in findings:
        click.echo(f"{f.level:<4}  {printable(f.what)}")
        if f.fix:
            click.echo(f"      fix: {printable(f.fix)}")
    bad = sum(f.level == FAIL for f in findings)
    click.echo(f"{cfg.path}: {'no problem found' if not bad else f'{bad} problem(s)'}")
    sys.exit(EXIT_FAILURE if bad else 0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON: {problems: [...], outbox: [...]}.")
@click.pass_context
def alerts(ctx: click.Context, as_json: bool) -> None:
    """Open problems (hard, as notified) and the mail outbox."""
    cfg = _load(ctx, secrets=False)
    (states, guard), box = _read_store(cfg, lambda st: (st.alert_states(), st.outbox(limit=100_000)))
    now = cfg.at(time.time())  # the names valid now; a site out of service has no open problem
    names = {s.id: s.name for s in now.sites}
    problems = [
        {
            "id": sid,
            "name": names.get(sid, sid),
            "status": a.hard,
            "since": a.hard_since,
            "notified": a.notified,
            "flapping": a.flapping,
        }
        for sid, a in sorted(states.items())
        if (a.hard != "up" or a.flapping) and (now.in_service(sid) or sid not in now.by_id)
    ]
    outbox = [
        {
            k: r[k]
            for k in (
                "id",
                "status",
                "created_ts",
                "sent_ts",
                "attempts",
                "last_error",
                "next_try_ts",
                "message_id",
                "subject",
            )
        }
        | {"to": r["recipient"], "kinds": r["kinds"].split(",")}
        for r in box
    ]
    if as_json:
        sys.stdout.write(
            json.dumps({"guard": guard, "problems": problems, "outbox": outbox}, ensure_ascii=False, indent=1) + "\n"
        )
        return
    con = _console()
    if guard:
        con.print("[bold red]The agent may be cut off: most sites failed in the last cycle.[/]")
    con.print(f"Open problems: {len(problems)}")
    for p in problems:
        flag = " (flapping)" if p["flapping"] else ""
        con.print(f"  {p['status']:<11} {p['id']:<22} {escape(p['name'])}{flag}")
    pending = [o for o in outbox if o["status"] == "queued"]
    con.print(
        f"Outbox: {len(pending)} queued, {sum(o['status'] == 'sent' for o in outbox)} sent, "
        f"{sum(o['status'] == 'failed' for o in outbox)} failed"
    )
    for o in outbox[-20:]:
        con.print(f"  #{o['id']:<5} {o['status']:<8} {o['to']:<32} {escape(o['subject'])}")
    _print_mail_trouble(con, outbox)


def _print_mail_trouble(con, outbox: list[dict]) -> None:
    """Mail that could not be sent (with why), and mail waiting for a retry (with when)."""
    now = time.time()
    failed = [o for o in outbox if o["status"] == "failed"]
    # queued with an error: tried (waiting for a retry), or not tried because the server could not be used
    retrying = [o for o in outbox if o["status"] == "queued" and (o["attempts"] or o["last_error"])]
    if failed:
        con.print(f"[bold red]Could not be sent: {len(failed)}[/]")
        for o in failed[-20:]:
            con.print(
                f"  #{o['id']:<5} {o['to']:<32} attempts={o['attempts']} last error: {escape(o['last_error'] or '–')}",
                soft_wrap=True,
            )
    if retrying:
        con.print(f"Waiting for a retry: {len(retrying)}")
        for o in retrying[-20:]:
            nxt = o["next_try_ts"]
            when = "now" if nxt is None or nxt <= now else f"in {_age(now, nxt)}"
            con.print(
                f"  #{o['id']:<5} {o['to']:<32} attempts={o['attempts']} next try {when} "
                f"last error: {escape(o['last_error'] or '–')}",
                soft_wrap=True,
            )


@cli.command()
@click.option("--month", metavar="YYYY-MM", help="A calendar month (default: the previous one).")
@click.option("--quarter", metavar="YYYY-Qn", help="A calendar quarter, e.g. 2026-Q4.")
@click.option("--year", metavar="YYYY", help="A calendar year.")
@click.option("--from", "frm", metavar="WHEN", help="Start: ISO 8601 with offset, or a date/time in [page] timezone.")
@click.option("--to", metavar="WHEN", help="End (exclusive; a bare date includes that day). Default: now.")
@click.option(
    "--format",
    "fmt",
    # wanmon.report.FORMATS (a test keeps them equal): importing it here would cost every `check` 9 ms
    type=click.Choice(["html", "pdf", "xlsx", "csv", "json"]),
    default="html",
    show_default=True,
    help="xlsx: for Excel (numbers, percentages and durations as Excel's, any locale); csv: RFC 4180 for programs.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Output file ('-': stdout). Default: [page] out_dir/reports/wanmon-report-PERIOD.FORMAT.",
)
@click.option(
    "--grouping",
    # wanmon.report.GROUPINGS (a test keeps them equal)
    type=click.Choice(["then", "now"]),
    default="then",
    show_default=True,
    help="A dated inventory: 'then' counts each stretch of time under the group, level and name valid then "
    "(a period spanning a change is split at its instant); 'now' counts the whole period under today's keys.",
)
@click.option("--email", is_flag=True, help="Mail it (HTML body, PDF and CSV attached) to [report] recipients.")
@click.pass_context
def report(
    ctx: click.Context, month, quarter, year, frm, to, fmt: str, out: str | None, grouping: str, email: bool
) -> None:
    """Availability over a period, per level, district and site (README: 'Availability reports')."""
    import gc
    from zoneinfo import ZoneInfo

    from wanmon import report as rp

    # One run that reads, writes and leaves (os._exit): the cyclic collector only walks the
    # 10,000 sites' models and rows over and over (5-7 % of a 10,000-site month), and the few
    # cycles it would free go with the process. Reference counting still frees the rest.
    gc.disable()
    cfg = _load(ctx, secrets=email)
    now = time.time()
    try:
        period = rp.parse_period(ZoneInfo(cfg.page.timezone), now, month, quarter, year, frm, to)
    except rp.PeriodError as exc:
        click.echo(f"wanmon: error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if cfg.store_path.exists():
        rep = _read_store(cfg, lambda st: rp.build(cfg, st, period, now, grouping))
    else:
        click.echo(f"wanmon: no store at {cfg.store_path} yet: the report says nothing was observed", err=True)
        rep = rp.build(cfg, _NoStore(), period, now, grouping)
    if rep.total.observed_s == 0:
        click.echo(f"wanmon: nothing was observed in {period.label}: availability is left blank", err=True)
    try:
        if email:
            from wanmon.reportmail import send_report

            sent = send_report(cfg, rep)
            click.echo(f"sent the {period.label} report to {', '.join(sent)}")
            if out is None:
                return
        data = rp.render(cfg, rep, fmt)
    except WanmonError as exc:
        _fail(exc)
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(out) if out else rp.default_path(cfg, rep, fmt)
    from wanmon.files import write_whole

    try:
        write_whole(path, data)
    except OSError as exc:
        from wanmon.errors import os_cause

        click.echo(f"wanmon: error: cannot write the report to {path}: {os_cause(exc)} (--out)", err=True)
        sys.exit(EXIT_FAILURE)
    t = rep.total
    click.echo(
        f"{period.label}: {rp.pct_text(t.availability_pct)} available over {t.sites} sites "
        f"({t.below_target} below {cfg.report.target_pct:g} %); {fmt} written to {path}"
    )


class _NoStore:
    """A store that has recorded nothing (none exists yet)."""

    def status_runs(self, *a):
        return []

    def site_labels(self):
        return {}

    def run_cap_s(self, default: float) -> float:
        return default

    def cadence_s(self) -> None:
        return None

    def meta(self, key):
        return None


def _instant_option(value: str | None, name: str) -> str | None:
    """An instant for regroup as TOML will write it: ISO 8601 with its UTC offset."""
    from datetime import datetime

    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise click.BadParameter(
            f"{value!r}: write the instant with its UTC offset, e.g. 2025-07-01T00:00:00+07:00", param_hint=name
        )
    return dt.isoformat()


@cli.command()
@click.argument("table", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--at", "at", required=True, metavar="WHEN", help="When the table's new units take effect (ISO 8601 with offset)."
)
@click.option(
    "--interim-at",
    metavar="WHEN",
    help="When the table's unit_before_* column took effect where it differs from the old unit.",
)
@click.option(
    "--review",
    "reviews",
    multiple=True,
    metavar="DISTRICT/UNIT=WHY",
    help="Mark that unit's changes 'REVIEW: WHY' (rows that rest on fewer sources). Repeatable.",
)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.pass_context
def regroup(
    ctx: click.Context, table: str, at: str, interim_at: str | None, reviews: tuple[str, ...], out: str | None
) -> None:
    """Write the config carried through a merger of units (a [[sites.changes]] per site), for review.

    TABLE is tab-separated, one row per former commune-level unit, like
    data/bacninh-2023-to-2025-merge.tsv (README, "Dated inventory").
    """
    from wanmon import regroup as rg
    from wanmon.config import parse
    from wanmon.files import replacing

    at_s = _instant_option(at, "--at")
    interim_s = _instant_option(interim_at, "--interim-at")
    assert at_s is not None
    if interim_s is not None and _posix(interim_s) >= _posix(at_s):
        raise click.BadParameter(f"{interim_s} must be before --at {at_s}", param_hint="--interim-at")
    marks: dict[tuple[str, str], str] = {}
    for item in reviews:
        unit, sep, why = item.partition("=")
        district, slash, name = unit.partition("/")
        if not (sep and slash and district.strip() and name.strip() and why.strip()):
            raise click.BadParameter(
                f"{item!r}: write DISTRICT/UNIT=WHY, e.g. 'Lương Tài/Lai Hạ=one source'", param_hint="--review"
            )
        marks[(rg._nfc(district), rg._nfc(name))] = why.strip()
    cfg = _load(ctx)
    try:
        rows = rg.read_table(Path(table))
        p = rg.plan(cfg, rows, Path(table).name, at_s, interim_s, marks)
    except WanmonError as exc:
        _fail(exc)
    steps = f"{interim_s} and {at_s}" if interim_s else at_s
    command = f"wanmon --config {cfg.path.name} regroup {Path(table).name}"
    command += f" --interim-at {interim_s}" if interim_s else ""
    command += f" --at {at_s}" + "".join(f" --review {_shell_quoted(r)}" for r in reviews)
    header = [
        "# " + "=" * 77,
        f"# {cfg.path.name} carried through {steps} by `wanmon regroup`:",
        *(f"#     {line}" for line in _wrap_command(command)),
        "# Review each [[sites.changes]] below (each says the table line it comes from;",
        "# REVIEW: marks rows that rest on fewer sources), then check with `wanmon validate`.",
        "# " + "=" * 77,
        "",
    ]
    text = rg.render(cfg.path.read_text(encoding="utf-8"), p, header)
    try:
        parse(__import__("tomllib").loads(text), text, Path(out or cfg.path), secrets=False)
    except WanmonError as exc:
        click.echo(f"wanmon: error: the regrouped inventory would not validate:\n{exc}", err=True)
        sys.exit(EXIT_FAILURE)
    for note in p.notes:
        click.echo(f"wanmon: note: {note}", err=True)
    if out is None:
        click.echo(text, nl=False)
    else:
        with replacing(Path(out), encoding="utf-8") as f:
            f.write(text)
    moved = sum(1 for ch in p.changes.values() for _ in ch)
    click.echo(f"wanmon: {moved} changes for {len(p.changes)} sites, at {steps}", err=True)


def _shell_quoted(word: str) -> str:
    """word as a shell reads it back, quoted the readable way where one exists."""
    import shlex

    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def _posix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _wrap_command(command: str, width: int = 72) -> list[str]:
    """The command on lines of at most width characters, continued with backslashes."""
    lines: list[str] = []
    current = ""
    for word in command.split(" --"):
        word = word if not current and not lines else "--" + word
        if current and len(current) + 1 + len(word) > width:
            lines.append(current + " \\")
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return lines


@cli.command("test-email")
@click.argument("address")
@click.pass_context
def test_email(ctx: click.Context, address: str) -> None:
    """Send a test message to ADDRESS through [smtp] now."""
    from wanmon.mailer import send_test

    cfg = _load(ctx)
    if cfg.smtp is None:
        click.echo(f"wanmon: error: {cfg.path}: no [smtp] table: add one (host, port, from) to send mail", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        mid = send_test(cfg.smtp, address, cfg.page.language)
    except WanmonError as exc:
        _fail(exc)
    click.echo(f"sent a test message to {address} (Message-ID {mid})")


def _fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def _print_summary(cfg: Config, result, dry_run: bool = False) -> None:
    from rich.table import Table

    con = _console()
    obs = result.observations
    table = Table(title=f"Cycle {result.cycle_id}: {len(obs)} sites in {result.finished_at - result.started_at:.2f} s")
    table.add_column("level")
    for st in STATUSES:
        table.add_column(st, justify="right", style=STATUS_STYLE[st])
    table.add_column("total", justify="right")
    for level in ("province", "district", "commune", None):
        rows = [o for o in obs if level is None or o.level == level]
        if not rows:
            continue
        cells = [str(sum(o.status == st for o in rows)) for st in STATUSES]
        table.add_row(level or "[bold]all[/]", *cells, str(len(rows)))
    con.print(table)
    _print_causes(con, cfg.as_of(result.started_at), obs)  # the parents of the cycle's instant
    _print_snmp_summary(con, result)
    if dry_run:
        con.print("--dry-run: nothing was recorded, no page written, no mail sent", style="dim")
        return
    from wanmon.page import out_dir

    con.print(f"Stored in {cfg.store_path} (cycle {result.cycle_id}); page: {out_dir(cfg) / 'index.html'}", style="dim")


CAUSES_SHOWN = 15
BEHIND_SHOWN = 6  # unreachable ids named under their cause; the rest counted


def problem_causes(cfg: Config, obs) -> list[tuple[Any, list[Any]]]:
    """The sites not up, one entry per root cause, most important first: (the site, the sites
    unreachable because of it). A site down on its own carries the sites behind it (found
    as the page finds them, wanmon.status.root_of), so 14 unreachable communes are one entry
    under their district, not 14; then unreachable sites whose uplink is not down, degraded
    sites (worst loss, then RTT, first), unknown ones."""
    from wanmon.status import root_of

    by_id = {o.site_id: o for o in obs}
    parent = {s.id: s.parent for s in cfg.sites}

    def status_of(sid: str) -> str | None:
        o = by_id.get(sid)
        return o.status if o is not None else None

    behind: dict[str, list[Any]] = {}
    causes = []
    for o in obs:
        if o.status == "unreachable" and (root := root_of(o.site_id, status_of, parent.get)) is not None:
            behind.setdefault(root, []).append(o)
        elif o.status != "up":
            causes.append(o)
    out = [(o, behind.get(o.site_id, [])) for o in causes]
    out.sort(key=lambda c: (SEVERITY[c[0].status], -len(c[1]), -c[0].loss_pct, -(c[0].rtt_avg_ms or 0), c[0].site_id))
    return out


def _print_causes(con, cfg: Config, obs) -> None:
    """The problems by root cause, readable at 80 columns (cron's log, a narrow terminal): the
    status, then the id, name and address, the reason and the sites behind it on lines of their
    own, wrapped between words, so no id is ever cut."""
    from zoneinfo import ZoneInfo

    from rich.table import Table

    from wanmon.words import Fmt, degraded_why, unreachable_count

    causes = problem_causes(cfg, obs)
    if not causes:
        con.print(f"[green]All {len(obs)} sites up.[/]")
        return
    not_up = sum(o.status != "up" for o in obs)
    con.print(f"[bold]Problems by root cause[/]: {len(causes)} cause(s), {not_up} of {len(obs)} sites not up")
    fmt = Fmt("en", ZoneInfo(cfg.page.timezone))
    t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1, 0, 0))
    t.add_column("status", no_wrap=True)
    t.add_column("site", overflow="fold", ratio=1)
    for o, below in causes[:CAUSES_SHOWN]:
        lines = [f"[bold]{o.site_id}[/]  {escape(o.name)}  {escape(o.address)}"]
        why = o.reason or ""
        if o.status == "degraded":
            why = degraded_why(fmt, o.rtt_avg_ms, o.loss_pct, cfg.thresholds) or why
        if why:
            lines.append(escape(why))
        if below:
            ids = ", ".join(b.site_id for b in below[:BEHIND_SHOWN])
            more = f" and {len(below) - BEHIND_SHOWN} more" if len(below) > BEHIND_SHOWN else ""
            lines.append(f"{unreachable_count('en', [b.level for b in below])} behind it: {ids}{more}")
        t.add_row(f"[{STATUS_STYLE[o.status]}]{STATUS_MARK[o.status]} {o.status}[/]", "\n".join(lines))
    with con.capture() as cap:
        con.print(t)
    # without the table's padding to the full width: a log line ends where its text does
    con.file.write("".join(line.rstrip() + "\n" for line in cap.get().splitlines()))
    if len(causes) > CAUSES_SHOWN:
        con.print(f"... and {len(causes) - CAUSES_SHOWN} more causes: `wanmon status` lists every site")


def _print_snmp_summary(con, result) -> None:
    from collections import Counter

    from rich.table import Table

    counts = Counter(v.status for v in result.snmp.values())
    if not counts or set(counts) == {"disabled"}:
        return
    order = ("ok", "timeout", "auth_error", "error", "not_due", "not_polled", "disabled")
    con.print("SNMP: " + ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in order if counts.get(k)))
    failed = [(sid, v) for sid, v in result.snmp.items() if v.status in ("timeout", "auth_error", "error")]
    if failed:
        # Group by (status, reason): 177 placeholders without an agent make one line, not 177.
        groups: dict[tuple, list[str]] = {}
        for sid, v in failed:
            groups.setdefault((v.status, v.reason or ""), []).append(sid)
        t = Table(title="SNMP problems")
        for col in ("sites", "status", "reason"):
            t.add_column(col)
        for (status, reason), ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
            t.add_row(shown, status, escape(reason))
        con.print(t)
        if counts["timeout"] == len(result.snmp) - counts["disabled"]:
            con.print(
                "No SNMP agent answered at all. Expected with placeholder addresses (the shipped "
                "sites.toml: 127.10.x.y on this machine's loopback, where no agent listens); on "
                "your network check the community (WANMON_SNMP_COMMUNITY) and the routers' SNMP "
                "access lists. Ping results above do not depend on SNMP.",
                style="dim",
            )


def _inventory_rows(cfg: Config) -> list[dict[str, Any]]:
    from wanmon.vendors import model, vendor

    devices, ifaces, recent = _read_store(cfg, lambda st: (st.devices(), st.interfaces(), st.events(limit=100_000)))
    events: dict[str, list] = {}
    for e in recent:
        events.setdefault(e.site_id, []).append(e)
    out = []
    cfg = cfg.as_of(time.time())  # the sites in service now, with their keys and SNMP settings now
    for site in Inventory.from_config(cfg).ordered():
        d = devices.get(site.id)
        known = d is not None and d.last_ok_ts is not None
        status = d.status if d else ("never_polled" if site.id in cfg.snmp_specs else "disabled")
        out.append(
            {
                "id": site.id,
                "name": site.name,
                "level": site.level,
                "district": site.district,
                "address": site.address,
                "snmp_status": status,
                "reason": d.reason if d else None,
                "sys_name": d.sys_name if known else None,
                "sys_descr": d.sys_descr if known else None,
                "sys_object_id": d.sys_object_id if known else None,
                "vendor": vendor(d.sys_object_id) if known else None,
                "model": model(d.sys_descr) if known else None,
                "sys_location": d.sys_location if known else None,
                "sys_contact": d.sys_contact if known else None,
                "uptime_s": d.uptime_s if known else None,
                "last_reboot": d.last_reboot_ts if known else None,
                "first_seen": d.first_seen if d else None,
                "last_seen": d.last_seen if d else None,
                "last_poll": d.last_poll_ts if d else None,
                "uplink": d.uplink_name if known else None,
                "interfaces": [
                    {
                        "if_index": i.if_index,
                        "name": i.name,
                        "descr": i.descr,
                        "alias": i.alias,
                        "type": i.type,
                        "admin_status": i.admin_status,
                        "oper_status": i.oper_status,
                        "speed_bps": i.speed_bps,
                        "in_bps": i.in_bps,
                        "out_bps": i.out_bps,
                        "util_in_pct": i.util_in_pct,
                        "util_out_pct": i.util_out_pct,
                        "in_errors": i.in_errors,
                        "out_errors": i.out_errors,
                        "in_discards": i.in_discards,
                        "out_discards": i.out_discards,
                        "last_change": i.last_change_ts,
                    }
                    for i in ifaces.get(site.id, {}).values()
                ],
                "events": [
                    {"ts": e.ts, "kind": e.kind, "detail": e.detail, "data": e.data} for e in events.get(site.id, [])
                ],
            }
        )
    return out


def _fmt_bps(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, div in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} b/s"


def _fmt_uptime(s: float | None) -> str:
    if s is None:
        return "–"
    d, rest = divmod(int(s), 86400)
    return f"{d}d {rest // 3600:02d}h" if d else f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"


# `inventory --csv`: (column, key in the site's row) then (column, key in an interface's row)
_SITE_CSV = (
    ("site_id", "id"),
    ("site_name", "name"),
    *((k, k) for k in ("level", "district", "address", "snmp_status", "sys_name", "vendor", "model")),
    *((k, k) for k in ("uptime_s", "last_reboot", "first_seen", "last_seen")),
)
_INTERFACE_CSV = (
    ("if_index", "if_index"),
    *((f"if_{k}", k) for k in ("name", "descr", "alias", "type")),
    *((k, k) for k in ("admin_status", "oper_status", "speed_bps", "in_bps", "out_bps", "util_in_pct")),
    *((k, k) for k in ("util_out_pct", "in_errors", "out_errors", "in_discards", "out_discards")),
)
INVENTORY_CSV = [col for col, _ in (*_SITE_CSV, *_INTERFACE_CSV)]


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per site, with interfaces and events.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per interface (a site without data: one row).")
@click.option("--refresh", is_flag=True, help="Poll SNMP at every site now (ignoring interval_s) before showing.")
@click.pass_context
def inventory(ctx: click.Context, as_json: bool, as_csv: bool, refresh: bool) -> None:
    """What equipment answers at each site, from the store (`wanmon check` keeps it current)."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    cfg = _load(ctx, secrets=refresh)
    try:
        if refresh:
            from wanmon.cycle import refresh_snmp

            refresh_snmp(cfg)
        rows = _inventory_rows(cfg)
    except WanmonError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        return
    if as_csv:
        sys.stdout.flush()
        sys.stdout.buffer.write(inventory_csv(rows))
        sys.stdout.flush()
        return
    _print_inventory(rows)


def inventory_csv(rows) -> bytes:
    """`inventory --csv`: RFC 4180, UTF-8 with a BOM (Excel then reads Vietnamese right), one row per
    interface and one for a site without any, every row with all INVENTORY_CSV columns (empty cells
    where there is nothing); control characters shown as \\xNN, formula-like cells defused as in
    the report's CSV."""
    import csv
    import io

    from wanmon.report import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(INVENTORY_CSV)
    for r in rows:
        head = [r[k] for _, k in _SITE_CSV]
        for i in r["interfaces"] or [None]:
            tail = [None] * len(_INTERFACE_CSV) if i is None else [i[k] for _, k in _INTERFACE_CSV]
            w.writerow([csv_cell("" if v is None else printable(v)) for v in head + tail])
    return "\ufeff".encode() + buf.getvalue().encode("utf-8")


def _print_inventory(rows) -> None:
    from rich.table import Table

    con = _console()
    now = time.time()
    t = Table(pad_edge=False, box=None, header_style="bold")
    for col, width in (
        ("id", 22),
        ("snmp", 10),
        ("sysName", 18),
        ("vendor", 12),
        ("uptime", 9),
        ("reboot", 10),
        ("ifs up/all", 10),
        ("uplink", 24),
    ):
        t.add_column(col, no_wrap=True, overflow="ellipsis", max_width=width)
    for r in rows:
        ifs = r["interfaces"]
        up = sum(1 for i in ifs if i["oper_status"] == "up")
        t.add_row(
            r["id"],
            r["snmp_status"],
            escape(r["sys_name"] or "–"),
            escape(r["vendor"] or "–"),
            _fmt_uptime(r["uptime_s"]),
            _ago(r["last_reboot"], now) if r["last_reboot"] else "–",
            f"{up}/{len(ifs)}" if ifs else "–",
            escape(r["uplink"] or "–"),
        )
    con.print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the current state as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the current state of every site, from the store (no probing)."""
    from wanmon.store import damaged

    cfg = _load(ctx, secrets=False)
    broken = damaged(cfg.store_path)
    if broken is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(broken["ts"])) if broken.get("ts") else "?"
        click.echo(
            f"wanmon: STORE DAMAGED since {when}: {printable('; '.join(broken['findings'][:2]))}. Nothing is "
            "recorded until it is restored (README, 'Backup and restore'); what follows is what it still "
            "holds.",
            err=True,
        )
    from wanmon import account, outputs

    states, devices, last, spool, health, cadence, paths = _read_store(
        cfg,
        lambda st: (
            {s.site_id: s for s in st.states()},
            st.devices(),
            st.last_cycle(),
            st.spool_stats() if cfg.influx is not None else None,
            outputs.health(st),
            st.cadence_s(),
            (st.current_outage_paths(), st.good_paths(), st.dns_cache()) if as_json else None,
        ),
    )
    slow = account.slow_cadence_note(cfg.schedule.icmp_interval_s, cadence, cfg.path)
    if slow and not as_json:
        click.echo("wanmon: " + slow, err=True)
    cfg = cfg.as_of(time.time())  # the sites in service now, with their keys now
    inv = Inventory.from_config(cfg)
    ordered = inv.ordered()
    if as_json:
        from wanmon.trace import Names, outage_json

        outages, goods, dns_cache = paths
        names = Names.of(cfg, dns_cache)
        out = []
        for site in ordered:
            st = states.get(site.id)
            dev = devices.get(site.id)
            outage, good = outages.get(site.id), goods.get(site.id)
            out.append(
                {
                    "id": site.id,
                    "name": site.name,
                    "level": site.level,
                    "district": site.district,
                    "address": site.address,
                    "status": st.status if st else "unknown",
                    "since": st.since if st else None,
                    "last_ts": st.last_ts if st else None,
                    "consecutive_failures": st.consecutive_failures if st else 0,
                    "loss_pct": st.loss_pct if st else None,
                    "rtt_avg_ms": st.rtt_avg_ms if st else None,
                    "reason": st.reason if st else None,
                    "snmp": {
                        "status": dev.status if dev else ("never_polled" if site.id in cfg.snmp_specs else "disabled"),
                        "reason": dev.reason if dev else None,
                        "last_poll": dev.last_poll_ts if dev else None,
                        "uptime_s": dev.uptime_s if dev and dev.last_ok_ts else None,
                        "sys_name": dev.sys_name if dev and dev.last_ok_ts else None,
                        "last_reboot": dev.last_reboot_ts if dev else None,
                    },
                    # down: the path traced at this outage, where it stops (README, Finding the break)
                    "path": outage_json(outage, names, cfg.page.language) if outage else None,
                    "good_path": {"ts": good.ts, "hops": [h.address for h in good.hops]} if good else None,
                }
            )
        json.dump(
            {
                "last_cycle": last,
                "spool": spool,
                "store_damaged": broken,
                "cadence_s": cadence,
                "slow_cadence": slow,
                "outputs": {k: dataclasses.asdict(h) for k, h in sorted(health.items())},
                "sites": out,
            },
            sys.stdout,
            ensure_ascii=False,
            indent=1,
        )
        sys.stdout.write("\n")
        return
    _print_status(inv, states, devices, last, spool, health)


@cli.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder (default: [page] out_dir, relative to the config file).",
)
@click.option(
    "--source",
    type=click.Choice(["store", "influxdb"]),
    default=None,
    help="Where the page's data comes from: this agent's store, or every agent's points in InfluxDB "
    "(default: [page] source).",
)
@click.pass_context
def render(ctx: click.Context, out: str | None, source: str | None) -> None:
    """Write the status page (index.html + status.json) from the store, without probing."""
    from wanmon.page import write_page

    cfg = _load(ctx, secrets=(source or "") == "influxdb")
    if (source or cfg.page.source) == "influxdb":
        if source is None:
            cfg = _load(ctx)  # with the InfluxDB secret
        _render_from_influx(cfg, out)
        return
    try:
        folder = _read_store(cfg, lambda st: write_page(cfg, st, out))
    except OSError as exc:
        _fail(WanmonError(f"cannot write the page: {exc}"))
    click.echo(
        f"wrote {folder / 'index.html'}, {folder / 'status.json'} and {folder / 'tree.html'} (and their .gz copies)"
    )


def _render_from_influx(cfg: Config, out: str | None) -> None:
    from wanmon import fromflux, influxql

    if cfg.influx is None:
        click.echo(f"wanmon: error: {cfg.path}: --source influxdb needs an [influxdb] table", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        folder = fromflux.render(cfg, out)
    except influxql.QueryError as exc:
        click.echo(f"wanmon: error: the page was not built from InfluxDB, the last one stays in place: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        _fail(WanmonError(f"cannot write the page: {exc}"))
    click.echo(
        f"wrote {folder / 'index.html'}, {folder / 'status.json'} and {folder / 'tree.html'} from InfluxDB"
        " (and their .gz copies)"
    )


@cli.group()
def influx() -> None:
    """The InfluxDB sink: check the server, send the spool now."""


def _influx_cfg(ctx: click.Context) -> tuple[Config, InfluxSpec]:
    """The config and its [influxdb] table (exit with the reason without one)."""
    cfg = _load(ctx.find_root())
    if cfg.influx is None:
        click.echo(
            f"wanmon: error: {cfg.path}: no [influxdb] table: add one (see README, InfluxDB) to use a server", err=True
        )
        sys.exit(EXIT_CONFIG)
    return cfg, cfg.influx


@influx.command("check")
@click.pass_context
def influx_check(ctx: click.Context) -> None:
    """Connectivity, authentication, database/bucket, and the agents writing there (last heartbeat,
    fresh or stale, id collisions); exit 1 with the reason if any fails."""
    from wanmon.sink import check_server

    _, spec = _influx_cfg(ctx)
    results = check_server(spec)
    if all(ok for ok, _ in results):  # the agents writing here, from their heartbeats (InfluxQL /query)
        from wanmon import influxql

        try:
            results += influxql.describe(influxql.agents(spec))
        except influxql.QueryError as exc:  # writing works; reading is what several agents need
            results.append((True, f"note: cannot list the agents (InfluxQL /query): {exc}"))
    for ok, msg in results:
        click.echo(("" if msg.startswith("note: ") else "ok:   " if ok else "FAIL: ") + printable(msg), err=not ok)
    if not all(ok for ok, _ in results):
        sys.exit(EXIT_FAILURE)


@cli.group("store")
def store_group() -> None:
    """The embedded store: a consistent backup, an integrity check."""


@store_group.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.pass_context
def store_backup(ctx: click.Context, dest: str) -> None:
    """Copy the store to DEST (a new file), consistent even while checks run."""
    cfg = _load(ctx.find_root(), secrets=False)
    size = _read_store(cfg, lambda st: st.backup(Path(dest)), any_older=True)  # before an upgrade too
    click.echo(f"backup of {cfg.store_path} written to {dest} ({size:,} bytes)")


@store_group.command("check")
@click.pass_context
def store_check(ctx: click.Context) -> None:
    """SQLite's quick_check of the store; exit 1 with its findings if the file is damaged."""
    from wanmon.store import check_integrity

    cfg = _load(ctx.find_root(), secrets=False)  # a shell without the secrets can check the store
    t0 = time.monotonic()
    problems = check_integrity(cfg.store_path)
    took = time.monotonic() - t0
    if problems:
        try:
            _WRITER_CFG[0] = load(cfg.path)  # with the SMTP password, when this shell has it
        except WanmonError as exc:
            logger.warning("the NOC is told by the next `wanmon check` (this shell cannot read the secrets: %s)", exc)
        _tell_noc_if_damaged()
        for p in problems[:20]:
            click.echo(f"FAIL: {printable(p)}", err=True)
        click.echo(
            f"wanmon: error: the store {cfg.store_path} is damaged ({len(problems)} finding(s)): writes are "
            "stopped; restore the last good backup (README, 'Backup and restore')",
            err=True,
        )
        sys.exit(EXIT_FAILURE)
    click.echo(f"ok: {cfg.store_path} passed quick_check in {took:.2f} s")


@influx.command("drain")
@click.option(
    "--budget", type=float, default=None, help="Seconds to spend at most (default: [influxdb] drain_budget_s)."
)
@click.pass_context
def influx_drain(ctx: click.Context, budget: float | None) -> None:
    """Send the spooled points now (e.g. after an outage), oldest first."""
    from wanmon.sink import drain
    from wanmon.store import CycleLock, Store

    cfg, spec = _influx_cfg(ctx)
    try:
        with CycleLock(cfg.store_path):
            store = Store.open(cfg.store_path)
            try:
                rep = drain(store, spec, spec.settings.drain_budget_s if budget is None else budget)
            finally:
                store.close()
    except WanmonError as exc:
        _fail(exc)
    click.echo(
        f"sent {rep.sent} points in {rep.batches} requests; {rep.remaining} left in the spool"
        + (f"; {rep.quarantined} quarantined" if rep.quarantined else "")
        + (f"; stopped: {rep.error}" if rep.error else "")
    )
    if rep.error and rep.sent == 0:
        sys.exit(EXIT_FAILURE)


def _age(ts: float, now: float) -> str:
    """Compact age for narrow columns: 40s, 23m, 5h, 3d."""
    d = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= 2 * size:
            return f"{d // size}{unit}"
    return f"{d}s"


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    d = max(0, int(now - ts))
    if d < 120:
        return f"{d} s ago"
    if d < 7200:
        return f"{d // 60} min ago"
    if d < 172800:
        return f"{d // 3600} h ago"
    return f"{d // 86400} d ago"


def _warn_shared_net_raw() -> None:
    """setcap on a venv's python lands on the system interpreter it links to: every user of it
    may then open raw sockets. Say so (README, Permissions: a dedicated copy, or systemd)."""
    from wanmon.probes.icmp import shared_interpreter_with_net_raw

    real = shared_interpreter_with_net_raw(sys.executable, sys.prefix, sys.base_prefix)
    if real:
        logger.warning(
            "the interpreter %s has cap_net_raw and is shared (%s runs it): every user of it may open "
            "raw sockets. Remove it (sudo setcap -r %s) and give wanmon its own copy (python3 -m venv "
            "--copies) or systemd's AmbientCapabilities=CAP_NET_RAW (README, Permissions)",
            real,
            sys.executable,
            real,
        )


def escape(text: str) -> str:
    """Text from the config or a device, for rich: its markup ([bold]…) and its control
    characters (ESC…) shown as text."""
    from rich.markup import escape as _e

    return _e(printable(text))


def _print_status(inv: Inventory, states, devices, last, spool=None, health=None) -> None:
    from rich.table import Table

    con = _console()
    now = time.time()
    if last:
        con.print(
            f"Last cycle {last['id']}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['started_at']))} "
            f"({_ago(last['started_at'], now)}), {last['sites']} sites, {last['duration_ms'] / 1000:.2f} s"
        )
    for name, h in sorted((health or {}).items()):
        if h.failing:
            con.print(
                f"[red]Output {name}: FAILING[/] since {_ago(h.failing_since, now)} ({h.failures} in a row): "
                f"{escape(h.error or '?')}"
            )
        else:
            con.print(f"Output {name}: ok ({_ago(h.ok_ts, now)})")
    if spool is not None:
        line = f"InfluxDB spool: {spool['points']} points waiting"
        if spool["points"]:
            line += f" (oldest {_ago(spool['oldest_ts'], now)})"
        if spool["dropped"]:
            line += f", [red]{spool['dropped']} dropped[/] (spool full)"
        if spool["quarantined"]:
            line += f", {spool['quarantined']} quarantined (rejected by the server)"
        if spool["last_error"]:
            line += f"; last error: {escape(spool['last_error'])}"
        con.print(line)
    table = Table(pad_edge=False, box=None, header_style="bold")
    # Fixed widths so every column survives an 80-column terminal or a pipe.
    fixed = {"status": 13, "id": 18, "since": 5, "loss%": 5, "rtt ms": 6, "device": 12}
    name_w = max(12, con.width - sum(fixed.values()) - 2 * len(fixed))
    table.add_column("status", no_wrap=True, width=fixed["status"])
    table.add_column("id", no_wrap=True, overflow="ellipsis", width=fixed["id"])
    table.add_column("name", no_wrap=True, overflow="ellipsis", width=name_w)
    table.add_column("since", no_wrap=True, width=fixed["since"])
    table.add_column("loss%", justify="right", no_wrap=True, width=fixed["loss%"])
    table.add_column("rtt ms", justify="right", no_wrap=True, width=fixed["rtt ms"])
    table.add_column("uptime", no_wrap=True, overflow="ellipsis", width=fixed["device"])  # SNMP uptime, or why not

    def device(site) -> str:
        dev = devices.get(site.id)
        if dev is None:
            return "–"
        if dev.status == "timeout" and dev.fail_since is not None:
            # "no SNMP answer since ...", narrow: the time today, else the day
            fmt = "%H:%M" if now - dev.fail_since < 86400 else "%d/%m"
            return f"[red]silent {time.strftime(fmt, time.localtime(dev.fail_since))}[/]"
        if dev.status != "ok":
            return f"[red]{dev.status}[/]"
        return _fmt_uptime(dev.uptime_s)

    def rows(title: str, sites) -> None:
        table.add_row("", f"[bold underline]{escape(title)}[/]", "", "", "", "", "")
        for site in sites:
            st = states.get(site.id)
            status = st.status if st else "unknown"
            table.add_row(
                f"[{STATUS_STYLE[status]}]{STATUS_MARK[status]} {status}[/]",
                site.id,
                escape(site.name),
                _age(st.since, now) if st else "",
                "–" if not st or st.loss_pct is None else f"{st.loss_pct:g}",
                _fmt_ms(st.rtt_avg_ms) if st else "–",
                device(site),
            )

    if inv.province:
        rows("province", inv.province)
    for d in inv.districts:
        rows(d.name, [*d.sites, *d.communes])
    con.print(table)


# The cyclic garbage collector's first generation runs every 700 new containers by default:
# hundreds of collections per cycle, for data that is acyclic and freed by reference counting.
# Every 50,000: a handful. Measured Dec 2026 (2 cores): `wanmon render` of 2,000 sites with 30
# days of history 0.550-0.562 s with these thresholds, 0.575-0.599 s without (medians of 7); at
# 10,000 sites 0.4-0.6 s of the daemon's page path. The daemon collects in full between cycles
# (daemon._release_memory); a check is one cycle. (The forked sweep was measured and dropped:
# bench/README.md, "Speed mechanisms".)
GC_THRESHOLDS = (50_000, 20, 20)


def main() -> None:
    """The `wanmon` command. It leaves with os._exit once its output is flushed: tearing down
    the interpreter (freeing every object of a 2,000-site cycle one by one) costs 45-55 ms of
    each `render` or cron `check` at 2,000 sites (render 0.556-0.562 s with, 0.603-0.612 s
    without, medians of 7, Dec 2026, 2 cores), and there is nothing left to do by then (stores
    closed, files written, the publishing thread awaited). A non-daemon thread still running
    gets a normal exit."""
    try:
        _main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    _leave(code)


def _leave(code: int | str | None) -> None:
    import threading

    if isinstance(code, str):  # sys.exit("message"): say it, exit 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    code = 0 if code is None else code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # stdout closed early (`| head`): nothing more can be said
        code = code or 1
    logging.shutdown()
    os._exit(code)


def _main() -> None:
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("wanmon: interrupted", err=True)
        sys.exit(130)
    except WanmonError as exc:
        _fail(exc)
    except (sqlite3.Error, OSError) as exc:  # the machine, not a bug: one line that names the cause
        from wanmon.errors import means_damage, os_cause, sqlite_cause

        logger.info("the cause in full", exc_info=True)  # the traceback with -v
        why = os_cause(exc) if isinstance(exc, OSError) else sqlite_cause(exc, _STORE_PATH[0])
        if isinstance(exc, sqlite3.DatabaseError) and _STORE_PATH[0] is not None and means_damage(str(exc)):
            from wanmon.store import mark_damaged

            mark_damaged(_STORE_PATH[0], [str(exc)])  # writes stop; status and the page say so
            _tell_noc_if_damaged()
        click.echo(f"wanmon: error: {why}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception:  # a bug: say so, with the traceback in the log
        logger.exception("internal error")
        sys.exit(EXIT_FAILURE)
