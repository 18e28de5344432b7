"""One HTTP/1.1 request within a Deadline, on documented APIs only (issue 21).

The InfluxDB writes (v1 `/write?db=` and v2 `/api/v2/write`), `wanmon influx check` and the
InfluxQL reader all go through `request()`. Its whole run has one deadline
(wanmon/deadline.py), enforced while it runs:

* DNS and connect: `Deadline.connect` (a socket of ours, watched from its creation);
* TLS: `Deadline.wrap_tls`, i.e. `SSLContext.wrap_socket(..., do_handshake_on_connect=False)`,
  the TLS socket watched, then `do_handshake()`: a peer that drips its handshake is cut off;
* the request: one `sendall` of head and body (no Nagle/delayed-ACK stall);
* the answer: read from `socket.makefile("rb")`; status line and header lines are framed
  here, the header block parsed by the documented `http.client.parse_headers`; the body by
  Content-Length, chunked transfer coding, or until the server closes.

When the deadline passes, the watchdog shuts the socket down and the blocked read returns:
the caller sees `Deadline.expired` and reports the deadline, never the read's error.

Why not http.client's connection classes or urllib3 (through influxdb-client): neither
documents a way to give them a socket connected by someone else, or to have their TLS
socket watched before its handshake; wanmon used to reach into their private names for
that (http.client's connect hook, urllib3's pool and connection classes, an SSLContext's
socket class), which a security release could break without a test noticing. This module is small because
InfluxDB asks little of HTTP: one request per connection (`Connection: close`), no
redirects, no proxies, no compression. (wanmon/heartbeat.py does the same for its GET.)

Stricter than http.client where it matters for acknowledgements: an answer whose status
line or header block was cut off by a close is an error (`IncompleteAnswer` or
http.client's `BadStatusLine`), never a 2xx.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import urllib.parse
from email.message import Message

from wanmon.deadline import Deadline

_MAX_LINE = 65536  # as http.client: a status or header line longer than this is refused
_MAX_HEADERS = 100
USER_AGENT = "wanmon"


class IncompleteAnswer(http.client.HTTPException):
    """The server closed (or the deadline cut) the answer before it was whole."""


def why(exc: BaseException) -> str:
    """An exception of `request()` as words for a log line or a report."""
    if isinstance(exc, http.client.HTTPException):  # BadStatusLine('HTTP/1.1 2') says little alone
        return f"not a valid HTTP answer ({type(exc).__name__}: {exc})"
    return str(exc) or type(exc).__name__


ERRORS = (OSError, http.client.HTTPException)  # what request() raises: the network, the deadline, a garbled answer


def failure(d: Deadline, exc: BaseException, where: str) -> str:
    """Why a request under deadline d failed: the deadline's message once it has passed (what the
    watchdog's shutdown then raised is its doing), else `where: what went wrong`."""
    return d.message() if d.expired else f"{where}: {why(exc)}"


def tls_context() -> ssl.SSLContext:
    """The client TLS context: system CAs (SSL_CERT_FILE/SSL_CERT_DIR honoured), hostname checked."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def request(
    url: str,
    method: str,
    path: str,
    d: Deadline,
    per_op_s: float | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit: int = 1 << 16,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, Message, bytes]:
    """`method path` to the server of `url` (http or https) on a new connection, all of it within
    deadline `d` (every blocking call also bounded by per_op_s). Host and TLS SNI are the URL's
    name. Returns (status, headers, the first `limit` bytes of the body). Raises OSError
    (refused, reset, DNS, TLS, DeadlineExceeded) or http.client.HTTPException (not a whole
    HTTP answer); after the deadline passed, whatever it raised is the deadline's doing."""
    u = urllib.parse.urlsplit(url)
    https = u.scheme == "https"
    host = u.hostname or "localhost"
    port = u.port or (443 if https else 80)
    head = _head(method, path or "/", host, port, 443 if https else 80, body, headers or {})
    sock = d.connect(host, port, d.timeout(per_op_s))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if https:
            sock = d.wrap_tls(tls or tls_context(), sock, host, per_op_s)
        sock.sendall(head + body if body else head)
        with sock.makefile("rb") as fp:
            return _answer(fp, method, limit)
    finally:
        sock.close()


def _head(
    method: str, path: str, host: str, port: int, default_port: int, body: bytes | None, headers: dict[str, str]
) -> bytes:
    if any(c in path for c in " \r\n\0"):
        raise ValueError(f"invalid HTTP request path {path[:80]!r}")
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {name}" + ("" if port == default_port else f":{port}"),
        f"User-Agent: {USER_AGENT}",
        "Accept-Encoding: identity",
        "Connection: close",
    ]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    for k, v in headers.items():
        if any(c in f"{k}{v}" for c in "\r\n\0"):
            raise ValueError(f"invalid HTTP header {k!r}: a line break in its name or value")
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _line(fp: io.BufferedReader, what: str) -> bytes:
    """One whole line (ending in LF); a line cut off by a close is an error, not a line."""
    line = fp.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong(what)
    if not line.endswith(b"\n"):
        raise IncompleteAnswer(f"the connection closed in the middle of {what} ({line[:60]!r})")
    return line


def _status(fp: io.BufferedReader) -> int:
    line = fp.readline(_MAX_LINE + 1)
    if not line:
        raise http.client.RemoteDisconnected("the server closed the connection without an answer")
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("status line")
    if not line.endswith(b"\n"):
        raise http.client.BadStatusLine(f"{line[:60]!r} (the connection closed in mid-line)")
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit() or code[0] == "0":
        raise http.client.BadStatusLine(repr(line[:60]))
    return int(code)


def _headers(fp: io.BufferedReader, what: str = "the headers") -> Message:
    lines = []
    while True:
        line = _line(fp, what)
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
    return http.client.parse_headers(io.BytesIO(b"".join(lines) + b"\r\n"))


def _answer(fp: io.BufferedReader, method: str, limit: int) -> tuple[int, Message, bytes]:
    while True:
        status = _status(fp)
        headers = _headers(fp)
        if not 100 <= status < 200:
            break  # an interim answer (100 Continue, 103 Early Hints) is followed by the real one
    if method == "HEAD" or status in (204, 304):
        return status, headers, b""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return status, headers, _chunked(fp, limit)
    length = headers.get("Content-Length")
    if length is not None:
        if not length.strip().isdigit():
            raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
        want = min(int(length), limit)
        data = fp.read(want)
        if len(data) < want:
            raise IncompleteAnswer(f"the connection closed after {len(data)} of {length.strip()} bytes of the body")
        return status, headers, data
    return status, headers, fp.read(limit)  # until the server closes (we asked for Connection: close)


def _chunked(fp: io.BufferedReader, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        line = _line(fp, "a chunk size")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            _headers(fp, "the trailer")
            break
        data = fp.read(size)
        if len(data) < size:
            raise IncompleteAnswer(f"the connection closed in the middle of a chunk ({len(data)} of {size} bytes)")
        out += data
        if _line(fp, "a chunk's end").strip():
            raise http.client.HTTPException("a chunk longer than its size line said")
    return bytes(out[:limit])
