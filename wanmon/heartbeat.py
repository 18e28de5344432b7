"""The heartbeat URL (`[agent] heartbeat_url`): one GET after each recorded cycle, so that
a watcher outside the agent (an Uptime Kuma push monitor, healthchecks.io) raises the alarm
when the beats stop: when cron, the daemon or the machine itself has stopped.

Uptime Kuma's push URLs take `status=up|down`, `msg` and `ping` (ms) in their query:
`fields` sets them (replacing the same keys in the URL); healthchecks.io ignores a query.

The whole request (DNS, connect, TLS, the request, the answer's status line and headers)
has one deadline, enforced while it runs (wanmon.deadline: a watchdog shuts the socket
down), so a server that drips its answer a byte a second costs at most `budget_s`. It
speaks HTTP/1.1 through wanmon.httpclient (the InfluxDB writes' client: documented APIs
only); an answer cut off before it is whole is a failure, as for the writes. Network
trouble is a result (ok=False and why), never an exception. The URL's path and query carry the monitor's token: reasons and logs name only
scheme://host:port.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from wanmon import httpclient
from wanmon.deadline import Deadline

logger = logging.getLogger(__name__)

BODY_LIMIT = 1 << 16  # what of an answer's body is read (a push endpoint answers a few bytes)


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    ok: bool  # the server answered 2xx
    status: int | None  # its HTTP status code; None without an answer
    reason: str | None  # why not ok: "connection refused", "... (deadline)", "HTTP 404"
    elapsed_ms: float


def where(url: str) -> str:
    """scheme://host:port of url: what a log line may name (the path holds the token)."""
    u = urlsplit(url)
    host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else u.hostname
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")


def target(url: str, fields: dict[str, object] | None = None) -> str:
    """The request target: the URL's path and query, `fields` replacing the same keys."""
    u = urlsplit(url)
    pairs = parse_qsl(u.query, keep_blank_values=True)
    if fields:
        pairs = [(k, v) for k, v in pairs if k not in fields] + [(k, str(v)) for k, v in fields.items()]
    path = quote(u.path or "/", safe="/%:@!$&'()*+,;=-._~")
    return path + ("?" + urlencode(pairs) if pairs else "")


def beat(url: str, budget_s: float, *, fields: dict[str, object] | None = None) -> HeartbeatResult:
    """GET url (http or https), all of it within budget_s. Never raises for network trouble."""
    start = time.monotonic()
    status, reason = None, None
    d = Deadline(budget_s, f"heartbeat to {where(url)}")
    try:
        with d:
            status = _get(url, target(url, fields), d)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, TLS, DNS, deadline; garbled
        reason = d.message() if d.expired else f"{where(url)}: {_why(exc)}"
    if status is not None and not 200 <= status < 300:
        reason = f"{where(url)} answered HTTP {status}" + (
            " (redirects are not followed: give the final URL)" if 300 <= status < 400 else ""
        )
    result = HeartbeatResult(reason is None, status, reason, (time.monotonic() - start) * 1000.0)
    if result.ok:
        logger.debug("heartbeat sent to=%s status=%s ms=%.0f", where(url), status, result.elapsed_ms)
    else:
        logger.warning("heartbeat failed to=%s reason=%s ms=%.0f", where(url), reason, result.elapsed_ms)
    return result


def _get(url: str, path: str, d: Deadline) -> int:
    """One GET on a new connection under deadline d (wanmon.httpclient, the InfluxDB writes'
    client too); the answer's status code."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not an http(s) URL: {where(url)}")
    status, _, _ = httpclient.request(url, "GET", path, d, limit=BODY_LIMIT, headers={"Accept": "*/*"})
    return status


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message or exc})"
    return httpclient.why(exc)
