"""Misbehaving servers for the tests: real TCP peers on 127.0.0.1 that do what bad peers do.

Every server binds 127.0.0.1 on a port chosen by the kernel (port 0), serves
each connection in its own daemon thread, and is stopped by the test
(`stop()`, or the `with` block): the listener and every open connection are
closed and every thread is told to end. No pytest dependency.

HTTP (an InfluxDB that misbehaves), each reading whole requests:

* :class:`SilentServer`   accepts, reads, never answers a byte;
* :class:`SlowServer`     answers (204 by default) after ``delay_s``;
* :class:`DripServer`     answers one byte every ``drip_s`` forever: a status
  line, then a header that never ends (every read returns within any
  per-read timeout, the answer is never complete);
* :class:`ClosingServer`  sends the start of an answer, then closes;
* :class:`TLSDripServer`  (https://) drips its TLS handshake, a byte at a time.

SMTP: :class:`FaultSMTPServer`, a raw-socket SMTP speaker that can misbehave at
every stage of a session (greeting, EHLO, MAIL, RCPT, DATA, after the final
dot, QUIT) in every way (never answer, drip, answer late, close, a given
reply), for every message or only for one recipient, always or N times::

    with FaultSMTPServer(faults={"dot": Fault("late", delay_s=3, rcpt="slow@")}) as srv:
        ...  # [smtp] host = "127.0.0.1", port = srv.port
        srv.received   # every message whose final dot arrived (acknowledged or not)
"""
from __future__ import annotations

import email
import email.policy
import datetime
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


class FaultServer:
    """A TCP listener on 127.0.0.1:<free port>; `handle(conn)` runs in a thread per connection."""

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self.tls: ssl.SSLContext | None = None  # set (see tls_context) to speak TLS on every connection
        self.stopping = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, 0))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._thread = threading.Thread(target=self._accept, name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        ls, self._listener = self._listener, None
        if ls is not None:
            _close(ls)
        with self._lock:
            conns, self._open = list(self._open), set()
        for c in conns:
            _close(c)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                self._open.add(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(10)
                tls = self.tls.wrap_socket(conn, server_side=True)  # the handshake, here
                tls.settimeout(None)
                with self._lock:
                    self._open.discard(conn)
                    self._open.add(tls)
                conn = tls
            self.handle(conn)
        except OSError:
            pass  # the client went away, or stop() closed it
        finally:
            with self._lock:
                self._open.discard(conn)
            _close(conn)

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def pause(self, seconds: float) -> bool:
        """Sleep unless the server stops meanwhile; True when it is stopping."""
        return self.stopping.wait(seconds)


def tls_context(folder, ips: tuple[str, ...] = ()) -> tuple[ssl.SSLContext, str]:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (IP SAN), the
    addresses in `ips` and localhost, written to folder; returns (context, path of the
    certificate) - a client trusts it with SSL_CERT_FILE=<that path>."""
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        *(x509.IPAddress(ipaddress.ip_address(a)) for a in (HOST, *ips))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = Path(folder)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, str(cert_path)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def read_http_request(conn: socket.socket) -> bytes | None:
    """Read one HTTP request (headers + Content-Length body); None when the client closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class SilentServer(FaultServer):
    """Accepts and reads everything, never answers."""

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue


class SlowServer(FaultServer):
    """Answers each request after delay_s (HTTP 204 unless told otherwise); counts the requests."""

    def __init__(self, delay_s: float, status: str = "204 No Content") -> None:
        super().__init__()
        self.delay_s = delay_s
        self.status = status
        self.requests: list[bytes] = []

    def handle(self, conn: socket.socket) -> None:
        while True:
            req = read_http_request(conn)
            if req is None:
                return
            self.requests.append(req)
            if self.pause(self.delay_s):
                return
            conn.sendall(f"HTTP/1.1 {self.status}\r\nContent-Length: 0\r\nX-Influxdb-Version: slow\r\n\r\n".encode())


class DripServer(FaultServer):
    """After the request: one byte every drip_s, forever (a status line, then an endless header).
    The first `answer_first` requests (over all connections) get a normal 204 instead."""

    def __init__(self, drip_s: float = 1.0, answer_first: int = 0) -> None:
        super().__init__()
        self.drip_s = drip_s
        self.answer_first = answer_first
        self.requests: list[bytes] = []
        self.bytes_sent = 0

    def handle(self, conn: socket.socket) -> None:
        while True:
            req = read_http_request(conn)
            if req is None:
                return
            with self._lock:
                self.requests.append(req)
                normal = len(self.requests) <= self.answer_first
            if not normal:
                break
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        prefix = b"HTTP/1.1 204 No Content\r\nX-Drip: "
        i = 0
        while not self.pause(self.drip_s if i else 0):
            conn.sendall(prefix[i:i + 1] if i < len(prefix) else b"a")
            self.bytes_sent += 1
            i += 1


class TLSDripServer(FaultServer):
    """For https:// clients: after their ClientHello, the header of a 16 KB TLS handshake record,
    then one byte of it every drip_s. The handshake never completes; every read gets a byte."""

    def __init__(self, drip_s: float = 0.2) -> None:
        super().__init__()
        self.drip_s = drip_s
        self.bytes_sent = 0

    def handle(self, conn: socket.socket) -> None:
        if not conn.recv(65536):  # the ClientHello
            return
        conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, TLS 1.2, 16384 bytes follow
        while not self.pause(self.drip_s):
            conn.sendall(b"\x02")
            self.bytes_sent += 1


class ClosingServer(FaultServer):
    """Reads the request, sends the start of an answer, closes the connection.

    The default cut is inside the status code: "HTTP/1.1 204 No Con" then a close
    is, to any HTTP client, a complete 204 (the status line ends at EOF, a 204
    has no body): the server did acknowledge."""

    def __init__(self, partial: bytes = b"HTTP/1.1 2") -> None:
        super().__init__()
        self.partial = partial

    def handle(self, conn: socket.socket) -> None:
        if read_http_request(conn) is None:
            return
        conn.sendall(self.partial)


# ---------------------------------------------------------------------------
# SMTP

STAGES = ("greeting", "ehlo", "mail", "rcpt", "data", "dot", "quit")


@dataclass
class Fault:
    """How to misbehave at one stage.

    kind: "silent" (never answer; keep reading), "drip" (the right answer's first
    bytes, then one byte every drip_s, never a line end), "late" (the right
    answer after delay_s), "close" (close the connection instead of answering),
    "reply" (answer `reply`, e.g. "451 4.3.0 try later").
    rcpt: at RCPT, DATA and the final dot, only for a message with a recipient
    containing this text (ignored at the other stages). times: only the first N
    times (None: always); skip: not the first N times."""

    kind: str
    delay_s: float = 0.0
    drip_s: float = 0.5
    reply: str = ""
    rcpt: str | None = None
    times: int | None = None
    skip: int = 0  # let the first N occurrences pass (e.g. the EHLO before STARTTLS)
    hits: int = 0
    seen: int = 0


@dataclass
class Received:
    """A message whose final dot reached the server (whether it was acknowledged or not)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    acked: bool = False
    message: email.message.EmailMessage | None = None
    at: float = field(default_factory=time.time)

    @property
    def message_id(self) -> str | None:
        v = self.message.get("Message-ID") if self.message is not None else None
        return None if v is None else str(v).strip()

    @property
    def subject(self) -> str | None:
        v = self.message.get("Subject") if self.message is not None else None
        return None if v is None else str(v)


class _Closed(Exception):
    pass


class FaultSMTPServer(FaultServer):
    """A small SMTP server (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no AUTH) with
    per-stage faults. `received`: every message whose final dot arrived; `acked` says
    whether its 250 was sent. `stages`: every (stage, fault kind or 'ok') seen.
    TLS: `starttls=<server SSLContext>` offers STARTTLS; `.tls = <context>` speaks TLS
    from the first byte (port 465 style). See tls_context()."""

    def __init__(self, faults: dict[str, Fault] | None = None, starttls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.starttls = starttls
        for st in faults or {}:
            if st not in STAGES:
                raise ValueError(f"unknown SMTP stage {st!r} (one of {STAGES})")
        self.faults = dict(faults or {})
        self.received: list[Received] = []
        self.stages: list[tuple[str, str]] = []

    def _fault(self, stage: str, rcpts: list[str]) -> Fault | None:
        f = self.faults.get(stage)
        if f is None:
            return None
        if f.rcpt is not None and stage in ("rcpt", "data", "dot") and not any(f.rcpt in r for r in rcpts):
            return None
        f.seen += 1
        if f.seen <= f.skip or (f.times is not None and f.hits >= f.times):
            return None
        f.hits += 1
        return f

    def _answer(self, conn: socket.socket, stage: str, text: str, rcpts: list[str]) -> None:
        """Send `text` (CRLF-terminated lines), or misbehave as configured for `stage`."""
        f = self._fault(stage, rcpts)
        with self._lock:
            self.stages.append((stage, f.kind if f else "ok"))
        data = text.encode()
        if f is None:
            conn.sendall(data)
            return
        if f.kind == "silent":
            while not self.pause(0.2):
                pass
            raise _Closed
        if f.kind == "close":
            raise _Closed
        if f.kind == "late":
            if self.pause(f.delay_s):
                raise _Closed
            conn.sendall(data)
            return
        if f.kind == "reply":
            conn.sendall(f.reply.encode() + b"\r\n")
            return
        if f.kind == "drip":
            conn.sendall(data[:3])  # "250", then a line that never ends
            while not self.pause(f.drip_s):
                conn.sendall(b"-")
            raise _Closed
        raise ValueError(f"unknown fault kind {f.kind!r}")

    def handle(self, conn: socket.socket) -> None:
        io = {"conn": conn, "f": conn.makefile("rb")}  # STARTTLS swaps both
        try:
            self._session(io)
        except _Closed:
            pass
        finally:
            io["f"].close()
            if io["conn"] is not conn:
                with self._lock:
                    self._open.discard(io["conn"])
                _close(io["conn"])

    def _start_tls(self, io: dict) -> None:
        io["conn"].sendall(b"220 2.0.0 ready to start TLS\r\n")
        io["f"].close()
        tls = self.starttls.wrap_socket(io["conn"], server_side=True)
        with self._lock:
            self._open.add(tls)
        io["conn"], io["f"] = tls, tls.makefile("rb")

    def _session(self, io: dict) -> None:
        conn, f = io["conn"], io["f"]
        self._answer(conn, "greeting", "220 fault.example ESMTP test\r\n", [])
        mail_from: str | None = None
        rcpts: list[str] = []
        while not self.stopping.is_set():
            line = f.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd.split(" ", 1)[0].upper()
            arg = cmd[len(verb):].strip()
            if verb in ("EHLO", "HELO"):
                tls = "250-STARTTLS\r\n" if self.starttls is not None and not isinstance(conn, ssl.SSLSocket) else ""
                self._answer(conn, "ehlo", f"250-fault.example\r\n{tls}250-8BITMIME\r\n250-SMTPUTF8\r\n"
                             "250 PIPELINING\r\n" if verb == "EHLO" else "250 fault.example\r\n", [])
            elif verb == "STARTTLS" and self.starttls is not None:
                self._start_tls(io)
                conn, f = io["conn"], io["f"]
                mail_from, rcpts = None, []
            elif verb == "MAIL":
                mail_from, rcpts = _addr(arg), []
                self._answer(conn, "mail", "250 2.1.0 ok\r\n", rcpts)
            elif verb == "RCPT":
                rcpts.append(_addr(arg))
                self._answer(conn, "rcpt", "250 2.1.5 ok\r\n", rcpts)
            elif verb == "DATA":
                self._answer(conn, "data", "354 end with <CRLF>.<CRLF>\r\n", rcpts)
                msg = Received(mail_from or "", list(rcpts), _read_data(f))
                msg.message = email.message_from_bytes(msg.data, policy=email.policy.default)
                with self._lock:
                    self.received.append(msg)
                self._answer(conn, "dot", "250 2.0.0 queued\r\n", rcpts)
                msg.acked = True
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                conn.sendall(b"250 2.0.0 ok\r\n")
            elif verb == "NOOP":
                conn.sendall(b"250 2.0.0 ok\r\n")
            elif verb == "QUIT":
                self._answer(conn, "quit", "221 2.0.0 bye\r\n", [])
                return
            else:
                conn.sendall(b"502 5.5.2 command not implemented\r\n")

    def acked(self) -> list[Received]:
        with self._lock:
            return [m for m in self.received if m.acked]


def _addr(arg: str) -> str:
    """The address in 'FROM:<a@b> SIZE=1' / 'TO:<a@b>'."""
    inner = arg.split(":", 1)[1] if ":" in arg else arg
    return inner.strip().split(" ", 1)[0].strip("<>")


def _read_data(f) -> bytes:
    """DATA content up to the lone dot, dot-unstuffed."""
    lines: list[bytes] = []
    while True:
        line = f.readline(1 << 20)
        if not line:
            raise _Closed
        if line in (b".\r\n", b".\n"):
            return b"".join(lines)
        lines.append(line[1:] if line.startswith(b"..") else line)
