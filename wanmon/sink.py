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

v2 (`api = "v2"`) writes through influxdb-client to /api/v2/write (InfluxDB
2.x, 3.x, 1.8+, VictoriaMetrics), its urllib3 connections hooked so the
current write's deadline watches them; v1 (`api = "v1"`) posts to /write?db=
for InfluxDB 1.7 and older (Debian's 1.6.7) with http.client, connecting
through the deadline. (Neither uses http_proxy/https_proxy from the
environment: an InfluxDB is reached directly.)
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message

from wanmon.config import InfluxSpec
from wanmon.deadline import Deadline
from wanmon.errors import WanmonError
from wanmon.store import Store

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_JOIN_MARGIN_S = 0.5  # a write thread gets this long past its deadline before it is abandoned
_WHAT = "InfluxDB write"

# The deadline of the write running in this thread: the urllib3 connections of
# influxdb-client (V2Writer) have no parameter for it, so they look it up here.
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


def _why(exc: BaseException) -> str:
    if isinstance(exc, http.client.HTTPException):  # BadStatusLine('HTTP/1.1 2') says little alone
        return f"not a valid HTTP answer ({type(exc).__name__}: {exc})"
    return str(exc) or type(exc).__name__


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose TLS handshake runs on a watched socket (see Deadline.wrap_tls)."""

    deadline: Deadline

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP through _create_connection (the deadline)
        server_hostname = self._tunnel_host or self.host
        self.sock = self.deadline.wrap_tls(self._context, self.sock, server_hostname, self.timeout)


def http_request(url: str, method: str, path: str, d: Deadline, per_op_s: float, body: bytes | None = None,
                 headers: dict[str, str] | None = None, limit: int = 1 << 16) -> tuple[int, Message, bytes]:
    """One HTTP request on a new connection, within deadline `d`: DNS and connect go through the
    deadline (Host and TLS SNI stay the URL's name) and the socket is watched while it runs.
    Returns (status, headers, the first `limit` bytes of the body)."""
    u = urllib.parse.urlsplit(url)
    https = u.scheme == "https"
    cls = _HTTPSConnection if https else http.client.HTTPConnection
    kw = {"context": ssl.create_default_context()} if https else {}
    conn = cls(u.hostname or "localhost", u.port, timeout=d.timeout(per_op_s), **kw)
    conn.deadline = d

    def connect(address, timeout=None, source_address=None):
        return d.connect(address[0], address[1], d.timeout(per_op_s), source_address)

    conn._create_connection = connect
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read(limit)
    finally:
        conn.close()


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


class V1Writer:
    """POST /write?db=&rp=&precision=ns (InfluxDB 1.x); the password goes in a header, never the URL."""

    def __init__(self, spec: InfluxSpec):
        st = spec.settings
        q = {"db": st.database, "precision": "ns"}
        if st.retention_policy:
            q["rp"] = st.retention_policy
        self.base = st.url.rstrip("/")
        self.path = (urllib.parse.urlsplit(self.base).path or "") + "/write?" + urllib.parse.urlencode(q)
        self.timeout = st.timeout_ms / 1000.0
        self.headers = {"Content-Type": "text/plain; charset=utf-8", **auth_headers(spec)}

    def write(self, body: bytes) -> WriteResult:
        with _write_deadline(self.timeout) as d:
            try:
                status, headers, data = http_request(self.base, "POST", self.path, d, self.timeout, body, self.headers)
            except (OSError, http.client.HTTPException) as exc:
                if d.expired:
                    return WriteResult(False, None, d.message())
                return WriteResult(False, None, f"cannot reach {self.base}: {_why(exc)}")
            if d.expired:
                # Cut off at the deadline: what was read is no answer, even when http.client
                # takes a dripped status line ended by the shutdown for a whole 204.
                return WriteResult(False, None, d.message())
        if 200 <= status < 300:
            return WriteResult(True, status)
        text = data[:500].decode("utf-8", "replace").strip()
        return WriteResult(False, status, f"HTTP {status}: {text}", _retry_after(headers.get("Retry-After")))

    def close(self) -> None:
        pass


class V2Writer:
    """influxdb-client, synchronous, no library retries: the spool does the retrying."""

    def __init__(self, spec: InfluxSpec):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from urllib3 import Retry

        st = spec.settings
        self.st = st
        self.timeout = st.timeout_ms / 1000.0
        self.client = InfluxDBClient(url=st.url, token=spec.secret.reveal() if spec.secret else "", org=st.org,
                                     timeout=int(st.timeout_ms), retries=Retry(total=0, raise_on_status=False),
                                     enable_gzip=False)
        _watch_pools(self.client.api_client.rest_client.pool_manager)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> WriteResult:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        with _write_deadline(self.timeout) as d:
            try:
                self.api.write(bucket=self.st.bucket, org=self.st.org, record=body, write_precision=WritePrecision.NS)
                if d.expired:  # cut off at the deadline: a truncated answer is no acknowledgement
                    return WriteResult(False, None, d.message())
                return WriteResult(True, 204)
            except ApiException as exc:
                body_text = (exc.body or "")[:500] if isinstance(exc.body, str) else str(exc.body)[:500]
                headers = exc.headers or {}
                return WriteResult(False, exc.status, f"HTTP {exc.status}: {body_text.strip() or exc.reason}",
                                   _retry_after(headers.get("Retry-After")))
            except Exception as exc:  # urllib3 connection errors and timeouts
                if d.expired:
                    return WriteResult(False, None, d.message())
                return WriteResult(False, None, f"cannot reach {self.st.url}: {type(exc).__name__}: {_short(exc)}")

    def close(self) -> None:
        self.client.close()


# -- urllib3 hooks for influxdb-client ----------------------------------------
#
# influxdb-client talks through a urllib3 PoolManager. Its pools get connection
# classes that connect through the current write's deadline (DNS and connect
# bounded) and have it watch their socket: at connect, and again before each
# request on a kept-alive connection (a new write, a new deadline). For HTTPS
# the TLS socket is watched before its handshake (`_WatchedSSLSocket`).


class _WatchedSSLSocket(ssl.SSLSocket):
    """An SSLSocket that the current write's deadline watches before the handshake starts."""

    def do_handshake(self, block: bool = False) -> None:
        d = _CURRENT.get()
        if d is not None:
            d.watch(self)
        super().do_handshake(block)


_POOLS: dict[str, type] = {}


def _pool_classes() -> dict[str, type]:
    """{'http': pool class, 'https': pool class} with deadline-aware connections (built once)."""
    if _POOLS:
        return _POOLS
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    class Watched:
        def _new_conn(self) -> socket.socket:
            d = _CURRENT.get()
            if d is None:
                return super()._new_conn()
            per_op = self.timeout if isinstance(self.timeout, (int, float)) else None
            try:
                sock = d.connect(self._dns_host, self.port, per_op, self.source_address)
            except socket.gaierror as exc:
                raise NameResolutionError(self.host, self, exc) from exc
            except TimeoutError as exc:  # a connect timeout, or the deadline (DeadlineExceeded)
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out: {exc}") from exc
            except OSError as exc:
                raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
            for opt in self.socket_options or ():
                sock.setsockopt(*opt)
            return sock

        def request(self, *args, **kw):
            d = _CURRENT.get()
            if d is not None and self.sock is not None:
                d.watch(self.sock)  # a kept-alive connection: this write's deadline guards it too
            return super().request(*args, **kw)

    class Conn(Watched, HTTPConnection):
        pass

    class SConn(Watched, HTTPSConnection):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            if self.ssl_context is None:
                self.ssl_context = _tls_context(self)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(HTTPSConnectionPool):
        ConnectionCls = SConn

    _POOLS.update(http=Pool, https=SPool)
    return _POOLS


def _tls_context(conn) -> ssl.SSLContext:
    """What urllib3 would build for this connection, with a watched SSLSocket class. (urllib3 loads
    the default CAs itself only for a context of its own making: done here, unless CAs are given.)"""
    from urllib3.util.ssl_ import create_urllib3_context, resolve_cert_reqs, resolve_ssl_version

    ctx = create_urllib3_context(ssl_version=resolve_ssl_version(conn.ssl_version),
                                 ssl_minimum_version=conn.ssl_minimum_version,
                                 ssl_maximum_version=conn.ssl_maximum_version,
                                 cert_reqs=resolve_cert_reqs(conn.cert_reqs))
    if not (conn.ca_certs or conn.ca_cert_dir or conn.ca_cert_data):
        ctx.load_default_certs()
    ctx.sslsocket_class = _WatchedSSLSocket
    return ctx


def _watch_pools(pool_manager) -> None:
    """Make influxdb-client's PoolManager build deadline-aware pools (before its first request)."""
    pool_manager.pool_classes_by_scheme = dict(_pool_classes())


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "…"


def writer_for(spec: InfluxSpec):
    return V2Writer(spec) if spec.settings.api == "v2" else V1Writer(spec)


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
        except BaseException as exc:  # a bug: raised again in the drain's thread
            self._exc = exc
        finally:
            self._done.set()

    def result(self) -> WriteResult:
        if not self._done.wait(max(0.0, self.until - time.monotonic())):
            logger.error("influx write still running %.1f s past its deadline: abandoned (points kept)",
                         _JOIN_MARGIN_S)
            return WriteResult(False, None, f"{_WHAT}: no complete answer within {round(self.seconds, 1):g} s "
                                            "(deadline; abandoned)")
        if self._exc is not None:
            raise self._exc
        assert self._res is not None
        return self._res


def drain(store: Store, spec: InfluxSpec, budget_s: float, writer=None,
          now: Callable[[], float] = time.time) -> DrainReport:
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
    extra = {"spool_last_sent": str(now())} if rep.sent else {}
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


def _after(store: Store, writer, rows: list[tuple[int, str]], res: WriteResult, budget: _Budget,
           rep: DrainReport) -> str:
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
        logger.warning("influx rejected a point (HTTP %s): quarantined: %s | %s", res.status, res.error, rows[0][1][:200])
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
            status, headers, _ = http_request(base, "GET", _path(base, "/ping"), d, timeout)
        except (OSError, http.client.HTTPException) as exc:
            why = d.message() if d.expired else f"cannot reach {base}: {_why(exc)}"
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
    w = V1Writer(spec)
    path = _path(w.base, "/query?" + urllib.parse.urlencode({"q": "SHOW DATABASES"}))
    auth = auth_headers(spec)
    with Deadline(w.timeout, "InfluxDB SHOW DATABASES") as d:
        try:
            status, _, raw = http_request(w.base, "GET", path, d, w.timeout, headers=auth, limit=1 << 22)
        except (OSError, http.client.HTTPException) as exc:
            return [(False, f"query failed: {d.message() if d.expired else _why(exc)}")]
    if status in (401, 403):
        who = f"user '{st.username}'" if st.username else "no username"
        return [(False, f"authentication failed ({who}): check [influxdb] username and password_env/password_file")]
    if status >= 300:
        return [(False, f"SHOW DATABASES answered HTTP {status}")]
    try:
        data = json.loads(raw)
    except ValueError:
        return [(False, f"SHOW DATABASES: not a JSON answer: {raw[:200]!r}")]
    names = [row[0] for res in data.get("results", []) for ser in res.get("series", []) for row in ser.get("values", [])]
    err = next((r.get("error") for r in data.get("results", []) if r.get("error")), None)
    if err:
        return [(False, f"SHOW DATABASES failed: {err}")]
    if st.database not in names:
        return [(False, f"database '{st.database}' does not exist (have: {', '.join(names) or 'none'}): create it with "
                        f"CREATE DATABASE \"{st.database}\" or fix [influxdb] database")]
    return [(True, f"authenticated; database '{st.database}' exists")]


def _check_v2(spec: InfluxSpec) -> list[tuple[bool, str]]:
    st = spec.settings
    w = V2Writer(spec)
    try:
        probe = f"wanmon_check,host={socket.gethostname().replace(' ', '_') or 'wanmon'} ok=1i {time.time_ns()}\n"
        res = write_within(w, probe.encode(), w.timeout, "InfluxDB test write")
    finally:
        w.close()
    if res.ok:
        return [(True, f"test write to org '{st.org}', bucket '{st.bucket}' accepted (measurement wanmon_check)")]
    if res.status in (401, 403):
        return [(False, "authentication failed: the token is wrong or may not write to this bucket "
                        "(check [influxdb] token_env/token_file)")]
    if res.status == 404:
        return [(False, f"org '{st.org}' or bucket '{st.bucket}' not found ({res.error}): create it or fix [influxdb]")]
    return [(False, f"test write failed: {res.error}")]
