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

v2 (`api = "v2"`) writes through influxdb-client to /api/v2/write (InfluxDB
2.x, 3.x, 1.8+, VictoriaMetrics); v1 (`api = "v1"`) posts to /write?db= for
InfluxDB 1.7 and older (Debian's 1.6.7).
"""

from __future__ import annotations

import base64
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from wanmon.config import InfluxSpec
from wanmon.errors import WanmonError
from wanmon.store import Store

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


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


class V1Writer:
    """POST /write?db=&rp=&precision=ns (InfluxDB 1.x); the password goes in a header, never the URL."""

    def __init__(self, spec: InfluxSpec):
        st = spec.settings
        q = {"db": st.database, "precision": "ns"}
        if st.retention_policy:
            q["rp"] = st.retention_policy
        self.url = st.url.rstrip("/") + "/write?" + urllib.parse.urlencode(q)
        self.timeout = st.timeout_ms / 1000.0
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if st.username:
            pw = spec.secret.reveal() if spec.secret else ""
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{st.username}:{pw}".encode()).decode()

    def write(self, body: bytes) -> WriteResult:
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return WriteResult(True, resp.status)
        except urllib.error.HTTPError as exc:
            text = exc.read(500).decode("utf-8", "replace").strip()
            return WriteResult(False, exc.code, f"HTTP {exc.code}: {text}", _retry_after(exc.headers.get("Retry-After")))
        except (urllib.error.URLError, OSError, socket.timeout) as exc:
            reason = getattr(exc, "reason", exc)
            return WriteResult(False, None, f"cannot reach {self.url.split('?')[0]}: {reason}")

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
        self.client = InfluxDBClient(url=st.url, token=spec.secret.reveal() if spec.secret else "", org=st.org,
                                     timeout=int(st.timeout_ms), retries=Retry(total=0, raise_on_status=False),
                                     enable_gzip=False)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> WriteResult:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self.api.write(bucket=self.st.bucket, org=self.st.org, record=body, write_precision=WritePrecision.NS)
            return WriteResult(True, 204)
        except ApiException as exc:
            body_text = (exc.body or "")[:500] if isinstance(exc.body, str) else str(exc.body)[:500]
            headers = exc.headers or {}
            return WriteResult(False, exc.status, f"HTTP {exc.status}: {body_text.strip() or exc.reason}",
                               _retry_after(headers.get("Retry-After")))
        except Exception as exc:  # urllib3 connection errors and timeouts
            return WriteResult(False, None, f"cannot reach {self.st.url}: {type(exc).__name__}: {_short(exc)}")

    def close(self) -> None:
        self.client.close()


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


def drain(store: Store, spec: InfluxSpec, budget_s: float, writer=None) -> DrainReport:
    """Send spooled points, oldest first, until the spool is empty, the server
    fails, or budget_s has passed. Never raises for server trouble."""
    rep = DrainReport()
    now = time.time()
    not_before = float(store.meta("spool_not_before") or 0)
    if not_before > now:
        rep.deferred = True
        rep.error = f"server asked to retry after {time.strftime('%H:%M:%S', time.localtime(not_before))}"
        rep.remaining = int(store.spool_stats()["points"])
        return rep
    own = writer is None
    writer = writer or writer_for(spec)
    deadline = time.monotonic() + budget_s
    batch_size = spec.settings.batch_size
    backoff = 0.5
    try:
        while time.monotonic() < deadline:
            outcome = _pipeline(store, writer, batch_size, deadline, rep)
            if outcome in ("ok", "stop"):
                break  # "ok": the spool is empty
            # retry: back off within the budget
            wait = min(backoff, max(0.0, deadline - time.monotonic()))
            if wait <= 0:
                break
            time.sleep(wait)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
    finally:
        if own:
            writer.close()
    extra = {"spool_last_sent": str(time.time())} if rep.sent else {}
    if not rep.deferred:
        extra["spool_not_before"] = None
    store.set_meta(spool_last_error=rep.error, **extra)
    rep.remaining = int(store.spool_stats()["points"])
    if rep.error:
        logger.warning("influx drain stopped: %s (sent=%d remaining=%d)", rep.error, rep.sent, rep.remaining)
    elif rep.sent:
        logger.info("influx drain sent=%d batches=%d remaining=%d", rep.sent, rep.batches, rep.remaining)
    return rep


def _body(rows: list[tuple[int, str]]) -> bytes:
    return ("\n".join(r[1] for r in rows) + "\n").encode("utf-8")


def _pipeline(store: Store, writer, batch_size: int, deadline: float, rep: DrainReport) -> str:
    """Send batches back to back: while one request is in flight, the next batch is read
    and encoded (the server and wanmon work at the same time). A failed batch goes
    through _after, which splits, quarantines or stops. 'ok' (spool empty) | 'retry' | 'stop'."""
    from concurrent.futures import ThreadPoolExecutor

    head = store.spool_head(batch_size)
    if not head:
        return "ok"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-write") as pool:
        future = pool.submit(writer.write, _body(head))
        while True:
            nxt = store.spool_head(batch_size, after_id=head[-1][0])
            nxt_body = _body(nxt) if nxt else b""
            res = future.result()
            rep.batches += 1
            outcome = _after(store, writer, head, res, deadline, rep)
            if outcome != "ok":
                return outcome
            if not nxt:
                return "ok"
            if time.monotonic() >= deadline:
                return "stop"
            head = nxt
            future = pool.submit(writer.write, nxt_body)


def _send(store: Store, writer, rows: list[tuple[int, str]], deadline: float, rep: DrainReport) -> str:
    """Send one batch (splitting it on 413/400). 'ok' | 'retry' | 'stop'."""
    res = writer.write(_body(rows))
    rep.batches += 1
    return _after(store, writer, rows, res, deadline, rep)


def _after(store: Store, writer, rows: list[tuple[int, str]], res: WriteResult, deadline: float,
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
                if time.monotonic() >= deadline:
                    return "stop"
                outcome = _send(store, writer, part, deadline, rep)
                if outcome != "ok":
                    return outcome
            return "ok"
        if res.status == 413:
            return "stop"  # a single point too large for the server: retried next time (and logged)
        store.spool_quarantine(ids, res.status, res.error or "", time.time())
        rep.quarantined += 1
        logger.warning("influx rejected a point (HTTP %s): quarantined: %s | %s", res.status, res.error, rows[0][1][:200])
        rep.error = None
        return "ok"
    if res.status == 429 or (res.status is not None and res.status >= 500):
        if res.retry_after_s is not None and time.monotonic() + res.retry_after_s > deadline:
            store.set_meta(spool_not_before=str(time.time() + res.retry_after_s))
            rep.deferred = True
            return "stop"
        if res.retry_after_s:
            time.sleep(res.retry_after_s)
        return "retry"
    return "stop"  # connection refused, timeout, 401/403/404: the next run tries again


def check_server(spec: InfluxSpec) -> list[tuple[bool, str]]:
    """`wanmon influx check`: reachability, authentication, database/bucket. [(ok, message)]."""
    st = spec.settings
    out: list[tuple[bool, str]] = []
    base = st.url.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/ping", timeout=st.timeout_ms / 1000.0) as resp:
            version = resp.headers.get("X-Influxdb-Version") or "unknown version"
            out.append((True, f"{base} answers /ping ({version})"))
    except urllib.error.HTTPError as exc:
        out.append((exc.code < 500, f"{base}/ping answered HTTP {exc.code}"))
    except (urllib.error.URLError, OSError) as exc:
        out.append((False, f"cannot reach {base}: {getattr(exc, 'reason', exc)} (check [influxdb] url, and that the "
                           "server runs and listens there)"))
        return out
    if st.api == "v1":
        out.extend(_check_v1(spec))
    else:
        out.extend(_check_v2(spec))
    return out


def _check_v1(spec: InfluxSpec) -> list[tuple[bool, str]]:
    import json

    st = spec.settings
    w = V1Writer(spec)
    url = st.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"q": "SHOW DATABASES"})
    req = urllib.request.Request(url, headers={k: v for k, v in w.headers.items() if k == "Authorization"})
    try:
        with urllib.request.urlopen(req, timeout=w.timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            who = f"user '{st.username}'" if st.username else "no username"
            return [(False, f"authentication failed ({who}): check [influxdb] username and password_env/password_file")]
        return [(False, f"SHOW DATABASES answered HTTP {exc.code}")]
    except (urllib.error.URLError, OSError) as exc:
        return [(False, f"query failed: {getattr(exc, 'reason', exc)}")]
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
        res = w.write(probe.encode())
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
