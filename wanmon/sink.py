"""InfluxDB sink: drain the durable spool (in the store) to the server, in order.

A point leaves the spool only when the server acknowledged it (2xx). Failures
never lose it:

* connection refused / timeout: stop, try again next cycle (or next drain);
* 429 and 5xx: retried with back-off within the time budget; a Retry-After
  header is respected (and remembered across cron runs);
* 413 (too large): the batch is split in halves;
* 400 / 422 (bad data): the batch is split until the offending lines are
  alone; those are quarantined (kept in the store, logged) so one bad point
  never blocks the queue forever.

A retried batch that had landed is harmless: same series, same timestamp.

Deadlines, not just timeouts: every write has one deadline for the whole
request (min(timeout_ms, what is left of the drain budget)), enforced while it
runs (wanmon/deadline.py): its sockets are watched and shut down when it
passes, so a server that drips one byte a second cannot hold `wanmon check`.
A deadline hit is a connection-level failure ("InfluxDB write: no complete
answer within 5 s (deadline)"): the points stay spooled and the drain stops.

One HTTP stack for both APIs, on documented APIs only (wanmon/httpclient.py,
issue 21): v2 (`api = "v2"`) posts to /api/v2/write?org=&bucket= (InfluxDB
2.x, 3.x, 1.8+, VictoriaMetrics), v1 (`api = "v1"`) to /write?db= (InfluxDB
1.7 and older, Debian's 1.6.7); `wanmon influx check` and the InfluxQL reader
(wanmon/influxql.py) use the same request function. Each request runs on a
socket of wanmon's own: DNS and connect through the deadline, the socket
watched from its creation, TLS wrapped with `SSLContext.wrap_socket` and the
TLS socket watched before its handshake, the answer framed by wanmon (status
line, header block through `http.client.parse_headers`, Content-Length or
chunked body). No other library's private names: influxdb-client (urllib3)
and http.client's connection classes document no way to hand them such a
socket, and a per-read timeout, all they offer, does not bound a write.
(Neither API uses http_proxy/https_proxy from the environment: an InfluxDB is
reached directly.)
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import http.client
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from wanmon import httpclient
from wanmon.config import InfluxSpec
from wanmon.deadline import Deadline
from wanmon.errors import WanmonError
from wanmon.store import Store

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_JOIN_MARGIN_S = 0.5  # a write thread gets this long past its deadline before it is abandoned
_WHAT = "InfluxDB write"

# The deadline of the write running in this thread. A writer's interface is
# write(body) (the tests' scripted writers too): write_within() sets the
# deadline here and Writer.write() finds it.
_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("wanmon_influx_deadline", default=None)


@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    status: int | None = None  # HTTP status; None for a connection problem
    error: str | None = None
    retry_after_s: float | None = None


class SinkError(WanmonError):
    pass


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@contextlib.contextmanager
def under(deadline: Deadline) -> Iterator[Deadline]:
    """Make `deadline` the current write's deadline in this thread (the writers find it there)."""
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def _write_deadline(seconds: float, what: str = _WHAT) -> Iterator[Deadline]:
    """The current deadline, or a new one of `seconds` when a writer is called on its own."""
    d = _CURRENT.get()
    if d is not None:
        yield d
        return
    with Deadline(seconds, what) as d, under(d):
        yield d


def write_within(writer, body: bytes, seconds: float, what: str = _WHAT) -> WriteResult:
    """One write under a deadline of `seconds` for the whole request, enforced while it runs.
    An answer that did not come in time becomes a clear connection-level failure."""
    with Deadline(seconds, what) as d, under(d):
        res = writer.write(body)
    if d.expired and res.status is None:
        return WriteResult(False, None, d.message())
    return res


def auth_headers(spec: InfluxSpec) -> dict[str, str]:
    """The Authorization header for [influxdb]: v1 Basic (username and password), v2 Token
    (InfluxDB 2.x also takes it on its v1 /query API); none without credentials."""
    st = spec.settings
    if st.api == "v1":
        if not st.username:
            return {}
        pw = spec.secret.reveal() if spec.secret else ""
        return {"Authorization": "Basic " + base64.b64encode(f"{st.username}:{pw}".encode()).decode()}
    return {"Authorization": f"Token {spec.secret.reveal()}"} if spec.secret else {}


class Writer:
    """POST line protocol to one write endpoint, one request per write (wanmon/httpclient.py)."""

    def __init__(self, base: str, path: str, headers: dict[str, str], timeout_s: float):
        self.base = base
        self.path = path
        self.headers = headers
        self.timeout = timeout_s
        # built once per writer (a drain): loading the system CAs costs milliseconds
        self.tls = httpclient.tls_context() if urllib.parse.urlsplit(base).scheme == "https" else None

    def write(self, body: bytes) -> WriteResult:
        with _write_deadline(self.timeout) as d:
            try:
                status, headers, data = httpclient.request(
                    self.base, "POST", self.path, d, self.timeout, body, self.headers, tls=self.tls
                )
            except httpclient.ERRORS as exc:
                return WriteResult(False, None, httpclient.failure(d, exc, f"cannot reach {self.base}"))
            if d.expired:
                # cut off at the deadline: what was read is no answer (the shutdown can end a read
                # at a point where the bytes so far look whole)
                return WriteResult(False, None, d.message())
        if 200 <= status < 300:
            return WriteResult(True, status)
        text = data[:500].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
        return WriteResult(False, status, f"HTTP {status}: {text}", _retry_after(headers.get("Retry-After")))

    def close(self) -> None:
        pass


def v1_writer(spec: InfluxSpec) -> Writer:
    """POST /write?db=&rp=&precision=ns (InfluxDB 1.x); the password goes in a header, never the URL."""
    st = spec.settings
    q = {"db": st.database, "precision": "ns"}
    if st.retention_policy:
        q["rp"] = st.retention_policy
    base = st.url.rstrip("/")
    return Writer(
        base,
        _path(base, "/write?" + urllib.parse.urlencode(q)),
        {"Content-Type": "text/plain; charset=utf-8", **auth_headers(spec)},
        st.timeout_ms / 1000.0,
    )


def v2_writer(spec: InfluxSpec) -> Writer:
    """POST /api/v2/write?org=&bucket=&precision=ns (InfluxDB 2.x, 3.x, 1.8+, VictoriaMetrics), the
    request influxdb-client's SYNCHRONOUS write_api sends (no gzip), with `Authorization: Token`."""
    st = spec.settings
    base = st.url.rstrip("/")
    q = {"org": st.org, "bucket": st.bucket, "precision": "ns"}
    return Writer(
        base,
        _path(base, "/api/v2/write?" + urllib.parse.urlencode(q)),
        {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json", **auth_headers(spec)},
        st.timeout_ms / 1000.0,
    )


def writer_for(spec: InfluxSpec) -> Writer:
    return v2_writer(spec) if spec.settings.api == "v2" else v1_writer(spec)


@dataclass
class DrainReport:
    sent: int = 0
    batches: int = 0
    quarantined: int = 0
    remaining: int = 0
    error: str | None = None
    deferred: bool = False  # Retry-After asked us to wait past this run


class _Budget:
    """The drain's time: its end (monotonic), each write's deadline and the wall clock for the store."""

    def __init__(self, budget_s: float, timeout_s: float, now: Callable[[], float]):
        self.budget_s = budget_s
        self.end = time.monotonic() + budget_s
        self.timeout_s = timeout_s
        self.now = now

    def left(self) -> float:
        return self.end - time.monotonic()

    def write_deadline(self) -> tuple[float, str]:
        """(seconds, what) for the next write: timeout_ms, or less when the budget ends sooner."""
        left = max(0.0, self.left())
        if left < self.timeout_s:
            return left, f"{_WHAT} (end of the {self.budget_s:g} s drain budget)"
        return self.timeout_s, _WHAT


class _InFlight:
    """One write in a daemon thread under its deadline, so the next batch is read and encoded
    meanwhile. A daemon thread: a write that outlived its deadline anyway is abandoned (reported,
    points kept), never waited for, not even at interpreter exit."""

    def __init__(self, writer, body: bytes, budget: _Budget):
        self.seconds, what = budget.write_deadline()
        self.until = time.monotonic() + self.seconds + _JOIN_MARGIN_S
        self._done = threading.Event()
        self._res: WriteResult | None = None
        self._exc: BaseException | None = None
        threading.Thread(target=self._run, args=(writer, body, what), name="influx-write", daemon=True).start()

    def _run(self, writer, body: bytes, what: str) -> None:
        try:
            self._res = write_within(writer, body, self.seconds, what)
        except BaseException as exc:  # noqa: BLE001 - a bug: raised again in the drain's thread
            self._exc = exc
        finally:
            self._done.set()

    def result(self) -> WriteResult:
        if not self._done.wait(max(0.0, self.until - time.monotonic())):
            logger.error("influx write still running %.1f s past its deadline: abandoned (points kept)", _JOIN_MARGIN_S)
            return WriteResult(
                False, None, f"{_WHAT}: no complete answer within {round(self.seconds, 1):g} s (deadline; abandoned)"
            )
        if self._exc is not None:
            raise self._exc
        assert self._res is not None
        return self._res


def drain(
    store: Store, spec: InfluxSpec, budget_s: float, writer=None, now: Callable[[], float] = time.time
) -> DrainReport:
    """Send spooled points, oldest first, until the spool is empty, the server
    fails, or budget_s has passed: it returns within budget_s (+ well under a
    second), whatever the server does. Never raises for server trouble.
    `now` is the wall clock (Retry-After memory, quarantine and sent times)."""
    rep = DrainReport()
    not_before = float(store.meta("spool_not_before") or 0)
    if not_before > now():
        rep.deferred = True
        rep.error = f"server asked to retry after {time.strftime('%H:%M:%S', time.localtime(not_before))}"
        rep.remaining = int(store.spool_stats()["points"])
        return rep
    budget = _Budget(budget_s, spec.settings.timeout_ms / 1000.0, now)
    own = writer is None
    writer = writer or writer_for(spec)
    batch_size = spec.settings.batch_size
    backoff = 0.5
    try:
        while budget.left() > 0:
            outcome = _pipeline(store, writer, batch_size, budget, rep)
            if outcome in ("ok", "stop"):
                break  # "ok": the spool is empty
            # retry: back off within the budget
            wait = min(backoff, max(0.0, budget.left()))
            if wait <= 0:
                break
            time.sleep(wait)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
    finally:
        if own:
            writer.close()
    extra: dict[str, str | None] = {"spool_last_sent": str(now())} if rep.sent else {}  # None: delete the key
    if not rep.deferred:
        extra["spool_not_before"] = None
    store.set_meta(spool_last_error=rep.error, **extra)
    rep.remaining = int(store.spool_stats()["points"])
    if rep.error:
        logger.warning("influx drain stopped error=%r sent=%d remaining=%d", rep.error, rep.sent, rep.remaining)
    elif rep.sent:
        logger.info("influx drain sent=%d batches=%d remaining=%d", rep.sent, rep.batches, rep.remaining)
    return rep


def _body(rows: list[tuple[int, str]]) -> bytes:
    return ("\n".join(r[1] for r in rows) + "\n").encode("utf-8")


def _pipeline(store: Store, writer, batch_size: int, budget: _Budget, rep: DrainReport) -> str:
    """Send batches back to back: while one request is in flight, the next batch is read
    and encoded (the server and wanmon work at the same time). A failed batch goes
    through _after, which splits, quarantines or stops. 'ok' (spool empty) | 'retry' | 'stop'."""
    head = store.spool_head(batch_size)
    if not head:
        return "ok"
    flight = _InFlight(writer, _body(head), budget)
    while True:
        nxt = store.spool_head(batch_size, after_id=head[-1][0])
        nxt_body = _body(nxt) if nxt else b""
        res = flight.result()
        rep.batches += 1
        outcome = _after(store, writer, head, res, budget, rep)
        if outcome != "ok":
            return outcome
        if not nxt:
            return "ok"
        if budget.left() <= 0:
            return "stop"
        head = nxt
        flight = _InFlight(writer, nxt_body, budget)


def _send(store: Store, writer, rows: list[tuple[int, str]], budget: _Budget, rep: DrainReport) -> str:
    """Send one batch (splitting it on 413/400). 'ok' | 'retry' | 'stop'."""
    res = _InFlight(writer, _body(rows), budget).result()
    rep.batches += 1
    return _after(store, writer, rows, res, budget, rep)


def _after(
    store: Store, writer, rows: list[tuple[int, str]], res: WriteResult, budget: _Budget, rep: DrainReport
) -> str:
    """Act on the server's answer to one batch: ack, split, quarantine, or stop."""
    ids = [r[0] for r in rows]
    if res.ok:
        store.spool_ack(ids)
        rep.sent += len(ids)
        rep.error = None
        return "ok"
    rep.error = res.error
    if res.status in (413, 400, 422):
        if len(rows) > 1:
            mid = len(rows) // 2
            for part in (rows[:mid], rows[mid:]):
                if budget.left() <= 0:
                    return "stop"
                outcome = _send(store, writer, part, budget, rep)
                if outcome != "ok":
                    return outcome
            return "ok"
        if res.status == 413:
            return "stop"  # a single point too large for the server: retried next time (and logged)
        store.spool_quarantine(ids, res.status, res.error or "", budget.now())
        rep.quarantined += 1
        logger.warning(
            "influx rejected a point (HTTP %s): quarantined: %s | %s", res.status, res.error, rows[0][1][:200]
        )
        rep.error = None
        return "ok"
    if res.status == 429 or (res.status is not None and res.status >= 500):
        if res.retry_after_s is not None and res.retry_after_s > budget.left():
            store.set_meta(spool_not_before=str(budget.now() + res.retry_after_s))
            rep.deferred = True
            return "stop"
        if res.retry_after_s:
            time.sleep(res.retry_after_s)
        return "retry"
    return "stop"  # connection refused, deadline, 401/403/404: the next run tries again


def check_server(spec: InfluxSpec) -> list[tuple[bool, str]]:
    """`wanmon influx check`: reachability, authentication, database/bucket. [(ok, message)].
    Each request has a deadline of timeout_ms, enforced while it runs."""
    st = spec.settings
    out: list[tuple[bool, str]] = []
    base = st.url.rstrip("/")
    timeout = st.timeout_ms / 1000.0
    with Deadline(timeout, f"{base}/ping") as d:
        try:
            status, headers, _ = httpclient.request(base, "GET", _path(base, "/ping"), d, timeout)
        except httpclient.ERRORS as exc:
            why = httpclient.failure(d, exc, f"cannot reach {base}")
            out.append((False, f"{why} (check [influxdb] url, and that the server runs and listens there)"))
            return out
    if status < 300:
        version = headers.get("X-Influxdb-Version") or "unknown version"
        out.append((True, f"{base} answers /ping ({version})"))
    else:
        out.append((status < 500, f"{base}/ping answered HTTP {status}"))
    if st.api == "v1":
        out.extend(_check_v1(spec))
    else:
        out.extend(_check_v2(spec))
    return out


def _path(base: str, path: str) -> str:
    """`path` under the URL's own path (an InfluxDB behind a reverse proxy at /influx)."""
    return (urllib.parse.urlsplit(base).path or "") + path


def _check_v1(spec: InfluxSpec) -> list[tuple[bool, str]]:
    import json

    st = spec.settings
    base = st.url.rstrip("/")
    timeout = st.timeout_ms / 1000.0
    path = _path(base, "/query?" + urllib.parse.urlencode({"q": "SHOW DATABASES"}))
    auth = auth_headers(spec)
    with Deadline(timeout, "InfluxDB SHOW DATABASES") as d:
        try:
            status, _, raw = httpclient.request(base, "GET", path, d, timeout, headers=auth, limit=1 << 22)
        except httpclient.ERRORS as exc:
            return [(False, f"query failed: {d.message() if d.expired else httpclient.why(exc)}")]
    if status in (401, 403):
        who = f"user '{st.username}'" if st.username else "no username"
        return [(False, f"authentication failed ({who}): check [influxdb] username and password_env/password_file")]
    if status >= 300:
        return [(False, f"SHOW DATABASES answered HTTP {status}")]
    try:
        data = json.loads(raw)
    except ValueError:
        return [(False, f"SHOW DATABASES: not a JSON answer: {raw[:200]!r}")]
    names = [
        row[0] for res in data.get("results", []) for ser in res.get("series", []) for row in ser.get("values", [])
    ]
    err = next((r.get("error") for r in data.get("results", []) if r.get("error")), None)
    if err:
        return [(False, f"SHOW DATABASES failed: {err}")]
    if st.database not in names:
        return [
            (
                False,
                f"database '{st.database}' does not exist (have: {', '.join(names) or 'none'}): create it with "
                f'CREATE DATABASE "{st.database}" or fix [influxdb] database',
            )
        ]
    return [(True, f"authenticated; database '{st.database}' exists")]


def _check_v2(spec: InfluxSpec) -> list[tuple[bool, str]]:
    st = spec.settings
    w = v2_writer(spec)
    try:
        probe = f"wanmon_check,host={socket.gethostname().replace(' ', '_') or 'wanmon'} ok=1i {time.time_ns()}\n"
        res = write_within(w, probe.encode(), w.timeout, "InfluxDB test write")
    finally:
        w.close()
    if res.ok:
        return [(True, f"test write to org '{st.org}', bucket '{st.bucket}' accepted (measurement wanmon_check)")]
    if res.status in (401, 403):
        return [
            (
                False,
                "authentication failed: the token is wrong or may not write to this bucket "
                "(check [influxdb] token_env/token_file)",
            )
        ]
    if res.status == 404:
        return [(False, f"org '{st.org}' or bucket '{st.bucket}' not found ({res.error}): create it or fix [influxdb]")]
    return [(False, f"test write failed: {res.error}")]
