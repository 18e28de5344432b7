"""Real time-series databases for tests (no pytest dependency).

Everything here listens on 127.0.0.1 only, on ports picked free at start-up,
with its data in a private temporary directory.  Only processes started here
are ever signalled, through their own Popen objects.  Databases are stopped
with SIGTERM and waited for (SIGKILL is a last resort after a timeout: it can
lose acknowledged points).  Every server is a context manager that stops its
process even when the body raised; servers still running at interpreter exit
are stopped by an atexit hook, and (Linux) the children get SIGTERM if the
test process dies (PR_SET_PDEATHSIG).

* :class:`InfluxV1Server` -- Debian's ``influxdb`` package (InfluxDB 1.6.7,
  ``/usr/bin/influxd``).  Only the 1.x HTTP API: ``/ping``, ``/query``,
  ``/write?db=&rp=&precision=``.  ``/api/v2/write`` answers 404 (it appeared in
  1.8), and so does the ``Authorization: Token user:pass`` scheme (401 here):
  1.6 takes Basic auth or ``u=``/``p=`` query parameters.  Facts measured:

  - ``/ping`` answers 204 about 30 ms after exec; SIGTERM stops it in ~1 s and
    every acknowledged point is there after a restart on the same dirs.
  - write to a missing database: 404 ``{"error":"database not found: \\"x\\""}``;
    unparsable line protocol: 400 ``{"error":"unable to parse ..."}``; a
    missing retention policy: **500** ``retention policy not found: x`` (a
    client that retries every 5xx retries that forever).
  - auth on: wrong password (Basic or u/p) 401 ``authorization failed``;
    without any credentials 401 ``unable to parse authentication
    credentials``.  While no user exists, every query but ``CREATE USER ...
    WITH ALL PRIVILEGES`` is refused (403), so the admin user is created right
    after the first start.
  - ``SELECT *`` returns tags and fields as plain columns (use
    :meth:`InfluxV1Server.field_types` / :meth:`tag_keys` to tell them apart);
    ``epoch=ns`` gives integer nanosecond timestamps, kept exactly.
  - points with the same measurement, tag set and timestamp collapse into one
    (the last write's field values win): a re-sent batch is harmless.

* :class:`VictoriaMetricsServer` -- Debian's ``victoria-metrics`` package
  (1.79.5, single-node ``/usr/bin/victoria-metrics``).  How it maps InfluxDB
  line protocol sent to ``/api/v2/write?org=..&bucket=..`` (or ``/write``),
  all checked against this binary:

  - one series per field: ``__name__`` = ``<measurement>_<field>``
    (``-influxMeasurementFieldSeparator``, default ``_``); tags become labels
    with their values unescaped exactly (UTF-8 kept: ``UBND huyện Tiên Du, x=y``).
  - ``org`` and ``bucket`` are ignored: they add no label.  (The v1 ``/write?db=X``
    endpoint adds the label ``db="X"``, see ``-influxDBLabel``.)
  - every value becomes a float64: integers (``3i``, ``7u``) and booleans
    (``true`` -> 1, ``false`` -> 0) too.  **String fields are not dropped**: a
    string that parses as a number becomes that number (``"12.5"`` -> 12.5),
    any other string becomes **0** -- so ``wanmon_icmp_status`` exists with
    value 0 and ``wanmon_event_detail`` too.
  - timestamps are stored in milliseconds, truncated (floored), not rounded
    (``...487664659218`` ns -> ``...487664`` ms); ``precision=`` s/ms/us/ns is
    honoured; a line without a timestamp gets the server's time.
  - an unparsable line is skipped and logged; the request still answers
    **204** (VictoriaMetrics never answers 400 to bad line protocol): use
    :class:`FlakyProxy` to test a client's 400 handling.
  - the default retention (1 month) silently drops older samples: the server
    here runs with ``-retentionPeriod=100y``.
  - no dedup by default: a re-sent point is stored and exported twice (two
    identical samples, same timestamp).  ``VictoriaMetricsServer(
    dedup_interval="1ms")`` passes ``-dedup.minScrapeInterval=1ms``: export
    and queries then show one sample per series and millisecond (checked: 3
    writes at one timestamp, values 1, 1, 2 -> one sample, 2).
  - written points are not visible to ``/api/v1/export`` at once, even with
    ``-search.latencyOffset=0s``: measured here, a NEW series showed after
    ~10 s (its index entries are flushed every ~10 s) and a point of an
    existing series after up to ~1 s (pending rows are flushed once a
    second).  ``/internal/force_flush`` brings both to <= ~1 s, not to 0.
    So :meth:`VictoriaMetricsServer.export` calls force_flush and, given
    ``min_samples=N``, polls until N samples are there (then, with
    ``settle_s``, waits that long more and reads again, to catch extras:
    duplicates).  A SIGTERM flushes everything to disk: nothing written before
    stop() is lost.
  - the ``match[]`` selector must be URL-encoded (``+`` in ``.+`` would become
    a space with a plain ``curl -d``).
  - this version has no ``-inmemoryDataFlushInterval`` flag; ``/health``
    answers 200 ``OK`` when ready; ``/ping`` answers 204 (what
    influxdb-client's ``ping()`` uses); ``health()`` of influxdb-client fails.

* :class:`FlakyProxy` -- a stdlib HTTP reverse proxy on 127.0.0.1 in a thread,
  in front of any of the above: answers the next N requests with a given status
  (429 + Retry-After, 500, 503, 400, 413...), or rejects bodies bigger than a
  limit with 413, or is "down" (its listening socket closed: connection
  refused), and records every request it saw and forwarded.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import gzip
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

INFLUXD = "/usr/bin/influxd"
VICTORIA = "/usr/bin/victoria-metrics"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _which(path: str, name: str) -> str | None:
    if os.access(path, os.X_OK):
        return path
    return shutil.which(name)


def influxd_binary() -> str | None:
    return _which(INFLUXD, "influxd")


def victoria_binary() -> str | None:
    return _which(VICTORIA, "victoria-metrics")


def influx_available() -> tuple[bool, str]:
    b = influxd_binary()
    if not b:
        return False, "influxd not found (Debian package 'influxdb'; scripts/test.sh installs it)"
    return True, b


def victoria_available() -> tuple[bool, str]:
    b = victoria_binary()
    if not b:
        return False, "victoria-metrics not found (Debian package 'victoria-metrics'; scripts/test.sh installs it)"
    return True, b


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on HOST right now (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_loopback_url(url: str) -> None:
    """Loopback, or a tests/netns.py lab's own 198.18.x address (it exists only inside the lab's
    namespaces, which the test created: a server there is reached from a thread inside them)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host.startswith("198.18.") or host in ("localhost", "::1")):
        raise ValueError(f"refusing non-loopback URL {url!r}: tests talk to 127.0.0.0/8 or a lab's 198.18.x only")


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def http_request(method: str, url: str, *, body: bytes | str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> HttpResult:
    """One plain urllib request to a loopback URL; HTTP errors are returned, not raised."""
    _check_loopback_url(url)
    if isinstance(body, str):
        body = body.encode("utf-8")
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    # never go through an environment proxy
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return HttpResult(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return HttpResult(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def basic_auth(user: str, password: str) -> dict[str, str]:
    import base64
    tok = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {tok}"}


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_RUNNING: set["_Proc"] = set()
_RUNNING_LOCK = threading.Lock()


class _Proc:
    """One child process, its log file, stopped by SIGTERM and waited for."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, cwd=cwd, start_new_session=True, preexec_fn=_pdeathsig)
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to TIMEOUT; SIGKILL only as a last resort."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(10)
            return self.popen.returncode
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            try:
                self._log.close()
            except OSError:
                pass

    def log_tail(self, n: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        procs = list(_RUNNING)
    for p in procs:
        try:
            p.stop(timeout=15)
        except Exception:
            pass


def _wait_until(pred: Callable[[], bool], proc: _Proc, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise RuntimeError(f"{what} exited with status {proc.popen.returncode} during start-up:\n{proc.log_tail()}")
        try:
            if pred():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{proc.log_tail()}")
        time.sleep(0.05)


class _ServerBase:
    _name = "server"

    def __init__(self, base_dir: str | Path | None, keep_dir: bool):
        self._own_dir = base_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix=f"wanmon-{self._name}-")) if base_dir is None else Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_dir = keep_dir
        self._proc: _Proc | None = None
        self.host = "127.0.0.1"
        self.port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.alive() else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self._name}.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the exit (data stays in place for start())."""
        if self._proc is None:
            return None
        rc = self._proc.stop(timeout)
        self._proc = None
        return rc

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def start(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_dir and not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# InfluxDB 1.x
# ---------------------------------------------------------------------------


class InfluxError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def influxql_string(s: str) -> str:
    """An InfluxQL string literal: 'it\\'s'."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_ident(s: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1Server(_ServerBase):
    """Debian's influxd 1.6 on 127.0.0.1:<free port>, data in a temp dir.

    ``auth=True`` turns on HTTP auth and creates an admin user
    (``admin_user`` / ``admin_password``, random by default); the helper
    methods then authenticate as that user.  ``databases`` are created after
    the first start.
    """

    _name = "influxd"

    def __init__(self, *, auth: bool = False, admin_user: str = "admin", admin_password: str | None = None,
                 databases: Iterable[str] = (), base_dir: str | Path | None = None, keep_dir: bool = False,
                 start_timeout: float = 30.0, log_level: str = "warn", http_log: bool = False,
                 host: str = "127.0.0.1"):
        ok, why = influx_available()
        if not ok:
            raise FileNotFoundError(why)
        if not (host.startswith("127.") or host.startswith("198.18.")):
            raise ValueError("the test InfluxDB listens on loopback or on a test lab's own address only")
        self.binary = why
        super().__init__(base_dir, keep_dir)
        self.host = host  # HTTP; a lab address (198.18.x, in its own namespace) for agents in several namespaces
        self.auth = auth
        self.admin_user = admin_user
        self.admin_password = admin_password if admin_password is not None else "pw-" + os.urandom(6).hex()
        self._databases = list(databases)
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.http_log = http_log
        self.rpc_port = 0
        self._admin_created = False

    # -- config ----------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.dir / "influxdb.conf"

    def _write_conf(self) -> None:
        d = self.dir
        text = f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d / 'meta'}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[coordinator]
  write-timeout = "10s"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {'true' if self.auth else 'false'}
  log-enabled = {'true' if self.http_log else 'false'}
  pprof-enabled = false
  https-enabled = false
  unix-socket-enabled = false
  max-body-size = 25000000

[ifql]
  enabled = false

[logging]
  level = "{self.log_level}"
  suppress-logo = true

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""
        self.conf_path.write_text(text, encoding="utf-8")

    # -- life cycle --------------------------------------------------------------
    def start(self) -> "InfluxV1Server":
        """Start influxd; on a second call, on the same dirs and ports."""
        if self.running:
            return self
        first = self.port == 0
        if first:
            self.port = free_port()
            self.rpc_port = free_port()
            while self.rpc_port == self.port:
                self.rpc_port = free_port()
        self._write_conf()
        self._proc = _Proc([self.binary, "-config", str(self.conf_path)], self.log_path,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}, cwd=self.dir)
        try:
            _wait_until(lambda: http_request("GET", self.url + "/ping", timeout=1).status == 204,
                        self._proc, "influxd", self.start_timeout)
            if self.auth and not self._admin_created:
                r = self._raw_query(f"CREATE USER {influxql_ident(self.admin_user)} WITH PASSWORD "
                                    f"{influxql_string(self.admin_password)} WITH ALL PRIVILEGES", auth=False)
                _raise_for(r)
                self._admin_created = True
            if first:
                for db in self._databases:
                    self.create_database(db)
        except BaseException:
            self.stop()
            raise
        return self

    # -- HTTP API ------------------------------------------------------------------
    def _auth_headers(self, auth: bool | tuple[str, str]) -> dict[str, str]:
        if auth is True and self.auth:
            return basic_auth(self.admin_user, self.admin_password)
        if isinstance(auth, tuple):
            return basic_auth(*auth)
        return {}

    def _raw_query(self, q: str, *, db: str | None = None, method: str | None = None, epoch: str | None = "ns",
                   auth: bool | tuple[str, str] = True, timeout: float = 30.0) -> HttpResult:
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        if method is None:
            head = q.lstrip().split(None, 1)[0].upper() if q.strip() else ""
            method = "GET" if head in ("SELECT", "SHOW") and " INTO " not in q.upper() else "POST"
        headers = self._auth_headers(auth)
        if method == "GET":
            return http_request("GET", self.url + "/query?" + urllib.parse.urlencode(params), headers=headers,
                                timeout=timeout)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return http_request("POST", self.url + "/query", body=urllib.parse.urlencode(params), headers=headers,
                            timeout=timeout)

    def query(self, influxql: str, db: str | None = None, *, method: str | None = None, epoch: str | None = "ns",
              auth: bool | tuple[str, str] = True, timeout: float = 30.0) -> dict:
        """Run InfluxQL; return the parsed JSON.  GET for SELECT/SHOW, POST otherwise.

        Timestamps are integer nanoseconds (``epoch="ns"``; ``epoch=None`` gives
        RFC 3339 strings).  Raises :class:`InfluxError` on an HTTP error or a
        statement error.
        """
        r = self._raw_query(influxql, db=db, method=method, epoch=epoch, auth=auth, timeout=timeout)
        data = _raise_for(r)
        for res in data.get("results", []):
            if "error" in res:
                raise InfluxError(r.status, res["error"])
        return data

    def rows(self, influxql: str, db: str | None = None, **kw) -> list[dict]:
        """Flatten a query's series into dicts: {"_measurement", "time", <columns>..., <group-by tags>...}."""
        out: list[dict] = []
        for res in self.query(influxql, db, **kw).get("results", []):
            for s in res.get("series", []) or []:
                for vals in s.get("values", []) or []:
                    row = {"_measurement": s.get("name")}
                    row.update(s.get("tags") or {})
                    row.update(zip(s["columns"], vals))
                    out.append(row)
        return out

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {influxql_ident(name)}")

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE {influxql_ident(name)}")

    def databases(self) -> list[str]:
        return [r["name"] for r in self.rows("SHOW DATABASES")]

    def create_user(self, name: str, password: str, *, admin: bool = False, grant_all_on: str | None = None) -> None:
        self.query(f"CREATE USER {influxql_ident(name)} WITH PASSWORD {influxql_string(password)}"
                   + (" WITH ALL PRIVILEGES" if admin else ""))
        if grant_all_on:
            self.query(f"GRANT ALL ON {influxql_ident(grant_all_on)} TO {influxql_ident(name)}")

    def measurements(self, db: str) -> list[str]:
        return [r["name"] for r in self.rows("SHOW MEASUREMENTS", db)]

    def field_types(self, db: str, measurement: str) -> dict[str, str]:
        """{field: "float"|"integer"|"string"|"boolean"}."""
        return {r["fieldKey"]: r["fieldType"]
                for r in self.rows(f"SHOW FIELD KEYS FROM {influxql_ident(measurement)}", db)}

    def tag_keys(self, db: str, measurement: str) -> list[str]:
        return [r["tagKey"] for r in self.rows(f"SHOW TAG KEYS FROM {influxql_ident(measurement)}", db)]

    def write(self, lines: str | bytes | Iterable[str], db: str, *, precision: str = "ns", rp: str | None = None,
              auth: bool | tuple[str, str] = True) -> HttpResult:
        """POST /write?db=&precision= (1.x); returns the HttpResult (204 on success)."""
        if not isinstance(lines, (str, bytes)):
            lines = "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        return http_request("POST", self.url + "/write?" + urllib.parse.urlencode(params), body=lines,
                            headers=self._auth_headers(auth))


def _raise_for(r: HttpResult) -> dict:
    try:
        data = r.json() if r.body else {}
    except ValueError:
        data = {"error": r.text}
    if r.status >= 300:
        raise InfluxError(r.status, data.get("error", r.text) if isinstance(data, dict) else r.text)
    return data


# ---------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------


class VictoriaMetricsServer(_ServerBase):
    """Debian's single-node victoria-metrics on 127.0.0.1:<free port>.

    Extra command-line flags can be passed in ``extra_flags``.  See the module
    docstring for how InfluxDB line protocol is mapped.
    """

    _name = "victoria-metrics"

    def __init__(self, *, base_dir: str | Path | None = None, keep_dir: bool = False, start_timeout: float = 30.0,
                 dedup_interval: str | None = None, extra_flags: Iterable[str] = (), log_level: str = "ERROR"):
        ok, why = victoria_available()
        if not ok:
            raise FileNotFoundError(why)
        self.binary = why
        super().__init__(base_dir, keep_dir)
        self.start_timeout = start_timeout
        self.dedup_interval = dedup_interval
        self.extra_flags = list(extra_flags)
        self.log_level = log_level

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def argv(self) -> list[str]:
        a = [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",          # the default (1 month) drops older samples silently
            "-search.latencyOffset=0s",       # points are visible to queries at once
            "-search.disableCache",           # no stale rollup cache between test steps
            f"-loggerLevel={self.log_level}",
            "-http.shutdownDelay=0s",
            "-memory.allowedPercent=20",
        ]
        if self.dedup_interval:
            a.append(f"-dedup.minScrapeInterval={self.dedup_interval}")
        return a + self.extra_flags

    def start(self) -> "VictoriaMetricsServer":
        if self.running:
            return self
        if self.port == 0:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = _Proc(self.argv(), self.log_path, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                           cwd=self.dir)
        try:
            _wait_until(lambda: http_request("GET", self.url + "/health", timeout=1).status == 200,
                        self._proc, "victoria-metrics", self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def flush(self) -> None:
        """Make every written point searchable now (``/internal/force_flush``)."""
        r = http_request("GET", self.url + "/internal/force_flush")
        if r.status != 200:
            raise RuntimeError(f"force_flush: HTTP {r.status}: {r.text}")

    def write(self, lines: str | bytes | Iterable[str], *, org: str = "wanmon", bucket: str = "wanmon",
              precision: str = "ns", token: str | None = None) -> HttpResult:
        """POST /api/v2/write?org=&bucket=&precision= (what influxdb-client sends)."""
        if not isinstance(lines, (str, bytes)):
            lines = "\n".join(lines)
        q = urllib.parse.urlencode({"org": org, "bucket": bucket, "precision": precision})
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            headers["Authorization"] = f"Token {token}"
        return http_request("POST", self.url + "/api/v2/write?" + q, body=lines, headers=headers)

    def export(self, match: str = '{__name__=~"wanmon_.*"}', *, start: float | None = None,
               end: float | None = None, flush: bool = True, min_samples: int = 0, timeout: float = 15.0,
               settle_s: float = 0.0) -> list[dict]:
        """``/api/v1/export``: one dict per series, {"metric": {...}, "values": [...], "timestamps": [ms...]}.

        With ``min_samples``, poll (force_flush + export) until that many
        samples in all are visible or TIMEOUT passes (then return what there
        is); with ``settle_s``, wait that much longer and export again.
        """
        deadline = time.monotonic() + timeout
        while True:
            if flush:
                self.flush()
            out = self._export_once(match, start, end)
            if sum(len(s["timestamps"]) for s in out) >= min_samples or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if settle_s:
            time.sleep(settle_s)
            if flush:
                self.flush()
            out = self._export_once(match, start, end)
        return out

    def _export_once(self, match: str, start: float | None, end: float | None) -> list[dict]:
        params: list[tuple[str, str]] = [("match[]", match)]
        if start is not None:
            params.append(("start", str(start)))
        if end is not None:
            params.append(("end", str(end)))
        r = http_request("POST", self.url + "/api/v1/export", body=urllib.parse.urlencode(params),
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
        if r.status != 200:
            raise RuntimeError(f"export: HTTP {r.status}: {r.text}")
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def samples(self, match: str = '{__name__=~"wanmon_.*"}', **kw) -> list[tuple[str, dict, int, float]]:
        """Flat, sorted samples: (name, labels without __name__, ts_ms, value)."""
        out = []
        for s in self.export(match, **kw):
            labels = dict(s["metric"])
            name = labels.pop("__name__")
            for ts, v in zip(s["timestamps"], s["values"]):
                out.append((name, labels, ts, v))
        out.sort(key=lambda t: (t[0], sorted(t[1].items()), t[2]))
        return out

    def series_names(self, match: str = '{__name__=~"wanmon_.*"}', **kw) -> set[str]:
        return {s["metric"]["__name__"] for s in self.export(match, **kw)}


# ---------------------------------------------------------------------------
# FlakyProxy
# ---------------------------------------------------------------------------


@dataclass
class ProxiedRequest:
    method: str
    path: str                 # path + query string as sent by the client
    headers: dict[str, str]   # lower-case names
    body: bytes               # as received (possibly gzip)
    status: int = 0           # what the client got
    forwarded: bool = False   # True when the real server answered
    t: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        """The body, gunzipped when Content-Encoding: gzip, as text."""
        b = self.body
        if self.headers.get("content-encoding", "").lower() == "gzip":
            b = gzip.decompress(b)
        return b.decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.text.split("\n") if ln.strip()]

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)


@dataclass
class _Rule:
    status: int
    remaining: int            # -1: forever
    retry_after: str | None
    body: bytes
    only_paths: tuple[str, ...] | None
    predicate: Callable[["ProxiedRequest"], bool] | None = None


class _ProxyHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: "FlakyProxy"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyHTTPServer

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        rec = ProxiedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        proxy._track(self.connection, add=True)
        try:
            canned = proxy._take_rule(rec)
            if canned is not None:
                status, headers, rbody = canned
            else:
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                status, headers, rbody = proxy._forward(rec)
                rec.forwarded = status != 502 or headers.get("x-flakyproxy") != "upstream-error"
            rec.status = status
            proxy._record(rec)
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                    continue
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(rbody)
            self.close_connection = True
        finally:
            proxy._track(self.connection, add=False)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class FlakyProxy:
    """A small HTTP reverse proxy on 127.0.0.1:<port> in front of UPSTREAM.

    * ``fail_next(n, status, retry_after=None, body=None)``: the next N
      requests (optionally only those whose path starts with one of ``paths``)
      get STATUS without reaching the server; calls queue up in order.
    * ``fail_always(status)`` / ``clear()``.
    * ``fail_when_body_contains(text, status)``: a "bad point" rejected
      wherever it is in a batch (for split-and-quarantine tests).
    * ``max_body_bytes``: requests with a bigger (decoded) body get 413
      (how a real server or a reverse proxy limits a batch).
    * ``require_headers``: a request without these exact header values gets
      401 (e.g. ``{"Authorization": "Token good"}``: a token check); /ping
      and /health are exempt, as on InfluxDB.
    * ``delay_s``: wait this long before forwarding (a slow server: long drains).
    * ``down()``: close the listening socket (and any open connection):
      clients get "connection refused"; ``up()`` listens again on the same port.
    * ``requests``: every request seen, with what it got; ``forwarded``: how
      many reached the server; ``forwarded_requests``.

    Every response carries ``Connection: close``: one request per connection.
    """

    def __init__(self, upstream: str, *, port: int | None = None, max_body_bytes: int | None = None,
                 timeout: float = 30.0, delay_s: float = 0.0, require_headers: dict[str, str] | None = None):
        _check_loopback_url(upstream)
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.host = "127.0.0.1"
        self.port = port or 0
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.delay_s = delay_s
        self.require_headers = {k.lower(): v for k, v in (require_headers or {}).items()}
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._conns: set[socket.socket] = set()
        self.requests: list[ProxiedRequest] = []
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> "FlakyProxy":
        """Listen (again, on the same port)."""
        if self._server is not None:
            return self
        deadline = time.monotonic() + 5
        while True:
            try:
                srv = _ProxyHTTPServer((self.host, self.port), _ProxyHandler)
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        srv.proxy = self
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FlakyProxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    start = up

    def down(self) -> None:
        """Close the listening socket and every open client connection."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)
            self._thread = None

    close = down

    def __enter__(self) -> "FlakyProxy":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- behaviour -----------------------------------------------------------------
    def fail_next(self, n: int, status: int, *, retry_after: float | int | str | None = None,
                  body: bytes | str | dict | None = None, paths: Iterable[str] | None = None,
                  when: Callable[[ProxiedRequest], bool] | None = None) -> None:
        """Answer the next N matching requests (N=-1: all) with STATUS.

        A request matches when its path starts with one of PATHS (if given)
        and WHEN(request) is true (if given)."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        elif body is None:
            body = json.dumps({"code": "flakyproxy", "message": f"injected {status}",
                               "error": f"injected {status}"}).encode()
        ra = None if retry_after is None else str(retry_after)
        with self._lock:
            self._rules.append(_Rule(status, n, ra, body, tuple(paths) if paths else None, when))

    def fail_always(self, status: int, **kw) -> None:
        self.fail_next(-1, status, **kw)

    def fail_when_body_contains(self, text: str, status: int = 400, n: int = -1, **kw) -> None:
        """Reject every request whose (decoded) body contains TEXT: a "bad point"
        that a real server would refuse, wherever it sits in a batch."""
        self.fail_next(n, status, when=lambda r: text in r.text, **kw)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return sum(r.remaining for r in self._rules if r.remaining > 0)

    @property
    def forwarded_requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return [r for r in self.requests if r.forwarded]

    @property
    def forwarded(self) -> int:
        return len(self.forwarded_requests)

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    # -- internals -------------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _record(self, rec: ProxiedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _take_rule(self, rec: ProxiedRequest) -> tuple[int, dict, bytes] | None:
        with self._lock:
            for rule in self._rules:
                if rule.only_paths and not any(rec.path.startswith(p) for p in rule.only_paths):
                    continue
                if rule.predicate is not None and not rule.predicate(rec):
                    continue
                if rule.remaining > 0:
                    rule.remaining -= 1
                elif rule.remaining == 0:
                    continue
                headers = {"Content-Type": "application/json"}
                if rule.retry_after is not None:
                    headers["Retry-After"] = rule.retry_after
                self._rules = [r for r in self._rules if r.remaining != 0]
                return rule.status, headers, rule.body
        for k, v in self.require_headers.items():
            if rec.path.split("?")[0] in ("/ping", "/health"):
                break   # like InfluxDB: /ping needs no credentials
            if rec.headers.get(k) != v:
                msg = {"code": "unauthorized", "message": "unauthorized access", "error": "authorization failed"}
                return 401, {"Content-Type": "application/json"}, json.dumps(msg).encode()
        if self.max_body_bytes is not None:
            try:
                size = len(rec.text.encode("utf-8"))
            except OSError:
                size = len(rec.body)
            if size > self.max_body_bytes:
                msg = {"code": "request too large", "message": f"body {size} > {self.max_body_bytes} bytes",
                       "error": "Request Entity Too Large"}
                return 413, {"Content-Type": "application/json"}, json.dumps(msg).encode()
        return None

    def _forward(self, rec: ProxiedRequest) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.timeout)
        try:
            headers = {k: v for k, v in rec.headers.items()
                       if k not in ("host", "connection", "keep-alive", "transfer-encoding", "content-length",
                                    "proxy-connection")}
            headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            headers["Connection"] = "close"
            if rec.body or rec.method in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(rec.body))
            conn.request(rec.method, rec.path, body=rec.body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        except OSError as e:
            return 502, {"Content-Type": "application/json", "x-flakyproxy": "upstream-error"}, \
                json.dumps({"error": f"flakyproxy: upstream unreachable: {e}"}).encode()
        finally:
            conn.close()


@contextlib.contextmanager
def influx_in_netns(ns: str, **kw) -> Iterator[InfluxV1Server]:
    """An InfluxV1Server inside network namespace `ns` (a tests/netns.py lab's), started and
    closed by one thread that lives there as long as the server: influxd dies with the thread
    that started it (PR_SET_PDEATHSIG), and its readiness checks must run inside too. `kw` go to
    InfluxV1Server (e.g. host= the lab's own address, for agents in several namespaces)."""
    from smtp_server import _enter_netns

    srv = InfluxV1Server(**kw)
    ready, done, box = threading.Event(), threading.Event(), {}

    def keeper() -> None:
        try:
            _enter_netns(ns)
            srv.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
            srv.close()
            ready.set()
            return
        ready.set()
        done.wait()
        srv.close()  # stops it and removes its data folder

    th = threading.Thread(target=keeper, name=f"influxd-in-{ns}", daemon=True)
    th.start()
    ready.wait(60)
    if "error" in box:
        raise box["error"]
    try:
        yield srv
    finally:
        done.set()
        th.join(60)
