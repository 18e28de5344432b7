"""InfluxQL over HTTP `/query`: what several agents wrote, read back (issue 14).

InfluxDB 1.x answers `/query` itself; 2.x through its v1 compatibility API (the bucket
mapped to a database, a token in `Authorization: Token …`); 3.x too. Every request has an
overall deadline, enforced while it runs (wanmon.httpclient, the HTTP stack of the writes:
documented APIs only, the socket watched by wanmon.deadline): a server that drips its
answer costs at most `[influxdb] timeout_ms`.

Query text built from ids, names and agent ids goes through `ident()` and `string()`,
InfluxQL's own quoting (backslash and the quote character escaped), never by hand.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from wanmon import httpclient
from wanmon.config import InfluxSpec
from wanmon.deadline import Deadline
from wanmon.errors import WanmonError

RESPONSE_LIMIT = 1 << 28  # 256 MiB: a 10,000-site day of points is far less


class QueryError(WanmonError):
    pass


def ident(name: str) -> str:
    """A quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string(value: str) -> str:
    """A quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database(spec: InfluxSpec) -> str:
    st = spec.settings
    return st.database if st.api == "v1" else st.bucket


def query(spec: InfluxSpec, q: str, budget_s: float | None = None) -> list[dict[str, Any]]:
    """Run InfluxQL; returns the series [{name, tags, columns, values}] of every statement.
    The whole request within budget_s (default: [influxdb] timeout_ms), enforced while it runs.
    Raises QueryError with the reason (unreachable, slow, auth, a statement error)."""
    from wanmon.sink import auth_headers

    st = spec.settings
    base = st.url.rstrip("/")
    # a heavy aggregate answers after seconds: with a budget, every read may take all of it
    per_op = st.timeout_ms / 1000.0 if budget_s is None else budget_s
    budget = per_op
    params = {"q": q, "db": database(spec), "epoch": "ms"}
    if st.api == "v1" and st.retention_policy:
        params["rp"] = st.retention_policy
    path = (urllib.parse.urlsplit(base).path or "") + "/query?" + urllib.parse.urlencode(params)
    with Deadline(budget, f"InfluxDB query at {base}") as d:
        try:
            status, _, raw = httpclient.request(
                base, "GET", path, d, per_op, headers=auth_headers(spec), limit=RESPONSE_LIMIT
            )
        except httpclient.ERRORS as exc:
            raise QueryError(httpclient.failure(d, exc, f"cannot reach {base}")) from None
        if d.expired:
            raise QueryError(d.message())
    if status in (401, 403):
        raise QueryError(f"{base}: authentication failed (HTTP {status}): check [influxdb] credentials")
    if status >= 300:
        raise QueryError(f"{base}/query answered HTTP {status}: {raw[:300].decode('utf-8', 'replace')}")
    try:
        data = json.loads(raw)
    except ValueError:
        raise QueryError(f"{base}/query: not a JSON answer: {raw[:200]!r}") from None
    out: list[dict[str, Any]] = []  # the series of the JSON answer
    for res in data.get("results", []):
        if res.get("error"):
            raise QueryError(f"{base}: InfluxQL error: {res['error']}")
        out.extend(res.get("series") or [])
    return out


@dataclass(frozen=True)
class AgentSeen:
    agent: str
    host: str
    role: str
    last_ts: float  # its last heartbeat (a cycle's start), unix s
    interval_s: float
    sites: int
    spool_points: int
    # its mail, as its heartbeat says (absent: an agent without [smtp], or older than these fields)
    mail_ok_ts: float | None = None  # its last delivery run that worked
    mail_failing_since: float | None = None  # None: its mail works
    mail_failures: int = 0  # its delivery runs failed in a row
    mail_queued: int = 0

    def fresh(self, now: float) -> bool:
        """Within 3 x its icmp_interval_s of now (issue 14's rule)."""
        return now - self.last_ts <= 3 * self.interval_s

    def mail_failing(self, now: float, runs: int = 2) -> bool:
        """Its heartbeat says its mail fails: `runs` delivery runs in a row, or for `runs` of its
        intervals (a relay that refuses every message fails one run; the next has nothing due)."""
        since = self.mail_failing_since
        return since is not None and (self.mail_failures >= runs or now - since >= runs * self.interval_s)


def agents(spec: InfluxSpec, days: int = 7, budget_s: float | None = None) -> list[AgentSeen]:
    """Every agent that wrote a heartbeat in the last `days`, from its last one (newest first)."""
    q = (
        'SELECT "sites", "role", "interval_s", "spool_points", "mail_ok_ts", "mail_failing_since", "mail_failures", '
        '"mail_queued" FROM "wanmon_agent" '
        f'WHERE time > now() - {int(days)}d AND "sites" >= 0 GROUP BY "agent", "host" ORDER BY time DESC LIMIT 1'
    )
    out = []
    for s in query(spec, q, budget_s):
        try:
            tags = s.get("tags") or {}
            row = dict(zip(s["columns"], s["values"][0]))
            out.append(
                AgentSeen(
                    str(tags.get("agent") or ""),
                    str(tags.get("host") or ""),
                    str(row.get("role") or "primary"),
                    float(row["time"]) / 1000.0,
                    float(row.get("interval_s") or 60.0),
                    int(row.get("sites") or 0),
                    int(row.get("spool_points") or 0),
                    float(row.get("mail_ok_ts") or 0) or None,
                    float(row.get("mail_failing_since") or 0) or None,
                    int(row.get("mail_failures") or 0),
                    int(row.get("mail_queued") or 0),
                )
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise QueryError(
                f"{spec.settings.url}: its /query answer is not InfluxQL's (a server that takes "
                "InfluxDB writes but not InfluxQL queries, such as VictoriaMetrics?)"
            ) from None
    return sorted(out, key=lambda a: -a.last_ts)


def collisions(seen: list[AgentSeen]) -> dict[str, list[str]]:
    """Agent ids used by more than one host: {agent id: [hosts]}."""
    by: dict[str, list[str]] = {}
    for a in seen:
        by.setdefault(a.agent, []).append(a.host)
    return {k: sorted(v) for k, v in by.items() if len(v) > 1}


def describe(seen: list[AgentSeen], now: float | None = None) -> list[tuple[bool, str]]:
    """`wanmon influx check`'s lines about the agents: (ok, text)."""
    now = time.time() if now is None else now
    if not seen:
        return [(True, "no agent heartbeat in the last 7 days (wanmon_agent): none has written yet")]
    lines = []
    for a in seen:
        age = now - a.last_ts
        state = "fresh" if a.fresh(now) else "STALE"
        lines.append(
            (
                True,
                f"agent {a.agent!r} ({a.role}) on {a.host}: last heartbeat {age:.0f} s ago, {state} "
                f"(interval {a.interval_s:g} s), {a.sites} sites, spool {a.spool_points} points"
                + (_mail_failing(a) if a.mail_failing_since else ""),
            )
        )
    for agent, hosts in collisions(seen).items():
        lines.append(
            (
                False,
                f"agent id {agent!r} is used by several hosts ({', '.join(hosts)}): give each agent its own [agent] id",
            )
        )
    return lines


def _mail_failing(a: AgentSeen) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.mail_failing_since))
    return f", mail FAILING since {since} ({a.mail_failures} run{'' if a.mail_failures == 1 else 's'} in a row, {a.mail_queued} queued)"
