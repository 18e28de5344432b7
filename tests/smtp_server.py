"""A real SMTP server for the tests (aiosmtpd), on 127.0.0.1 only.

It listens on 127.0.0.1:<free port> in a background thread and captures every
message it accepts, in arrival order, with its envelope (MAIL FROM, RCPT TO),
the raw bytes as received after DATA, and the message parsed by the standard
library (headers, text/plain and text/html parts)::

    from smtp_server import SMTPServer

    with SMTPServer() as smtp:                 # or SMTPServer(auth=("u", "p"))
        ...  # point wanmon at 127.0.0.1:smtp.port (smtp.toml() gives a [smtp] table)
        got = smtp.wait_for(1, timeout=10)
        got[0].rcpt_tos, got[0].subject, got[0].text, got[0].html

    smtp.stop()     # the port is closed: connecting is refused
    smtp.start()    # listening again on the same port; captured mail is kept

No STARTTLS is offered (no TLS context) and no TLS is spoken at all. With
``auth=(user, password)`` the server requires AUTH (PLAIN or LOGIN, over the
plain connection) before MAIL FROM; every attempt is recorded in
``auth_attempts``. ``fail_data = "451 4.3.0 try later"`` makes DATA answer that
reply (the message is recorded in ``rejected``, not in ``messages``) until it
is set back to None.

``tls=<ssl server context>`` offers STARTTLS (fault_servers.tls_context makes one);
``auth_require_tls=True`` then offers AUTH only after it. Every chunk the server
reads is kept in ``wire`` as (after_starttls, bytes): before STARTTLS that is
what crossed the network; ``commands()`` gives the command words in order with
that flag. ``auth_seen`` records each AUTH's mechanism, login, password and
whether it came over TLS.

``netns="NAME"`` (a namespace from ``ip netns``, e.g. a tests/netns.py lab's
client namespace) puts the listener on 127.0.0.1 *inside that namespace*: the
server's thread joins it (setns) before it binds, so a wanmon run with
``ip netns exec NAME`` reaches it at 127.0.0.1:port, and nothing listens in
the test's own namespace. With a namespace the server may listen on an address
of that namespace (e.g. the lab's 198.18.1.2: a relay that is not on loopback).
``port_open(..., netns=NAME)`` and
``in_netns(NAME, fn)`` look from inside.

No pytest dependency: usable from a shell (`python tests/smtp_server.py`).
"""
from __future__ import annotations

import contextlib
import email.message
import email.policy
import logging
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"

# aiosmtpd warns at every connection when AUTH is allowed without TLS: that is
# exactly what the tests want, so keep the log quiet.
logging.getLogger("mail.log").setLevel(logging.ERROR)


CLONE_NEWNET = 0x40000000


def _enter_netns(name: str) -> None:
    """Move the *calling thread* into network namespace `name` (ip netns)."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(name: str | None, fn, *args, **kw):
    """Run fn(*args, **kw) in a short-lived thread inside network namespace `name`
    (None: here); return its result or raise its exception. Sockets it creates
    stay in that namespace."""
    if name is None:
        return fn(*args, **kw)
    box: dict = {}

    def work():
        try:
            _enter_netns(name)
            box["result"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    th = threading.Thread(target=work, name=f"netns-{name}", daemon=True)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port(host: str = HOST, netns: str | None = None) -> int:
    """A TCP port that is free on host right now (inside netns when given)."""
    return in_netns(netns, _free_port, host)


def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_open(host: str, port: int, timeout: float = 1.0, netns: str | None = None) -> bool:
    """True when a TCP connection to host:port is accepted (from inside netns when given)."""
    return in_netns(netns, _connects, host, port, timeout)


@dataclass
class Captured:
    """One accepted message."""

    seq: int                       # 0, 1, 2... in arrival order (across restarts)
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes                     # the DATA content as received (dot-unstuffed)
    message: email.message.EmailMessage
    peer: tuple | None = None
    auth_login: str | None = None  # the AUTH user of the session, if any
    received_at: float = 0.0       # time.time()
    mail_options: list[str] = field(default_factory=list)

    # -- convenience ----------------------------------------------------
    @property
    def subject(self) -> str | None:
        v = self.message.get("Subject")
        return None if v is None else str(v)

    @property
    def message_id(self) -> str | None:
        v = self.message.get("Message-ID")
        return None if v is None else str(v).strip()

    def header(self, name: str) -> str | None:
        v = self.message.get(name)
        return None if v is None else str(v)

    def header_names(self) -> list[str]:
        """Top-level header names, in order, as written (case kept)."""
        return list(self.message.keys())

    def raw_headers(self) -> bytes:
        """The raw header block (up to the first empty line)."""
        raw = self.raw.replace(b"\r\n", b"\n")
        return raw.split(b"\n\n", 1)[0]

    def _part(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_type() != f"text/{subtype}":
            return None
        return part.get_content()

    @property
    def text(self) -> str | None:
        """The text/plain body (decoded), or None."""
        return self._part("plain")

    @property
    def html(self) -> str | None:
        """The text/html body (decoded), or None."""
        return self._part("html")

    def content_types(self) -> list[str]:
        return [p.get_content_type() for p in self.message.walk()]


class _Handler:
    def __init__(self, owner: "SMTPServer"):
        self.owner = owner

    async def handle_DATA(self, server, session, envelope):
        return self.owner._on_data(session, envelope)


class _Controller(Controller):
    netns: str | None = None

    def _run(self, ready_event):
        # The server thread joins the namespace first: the listener and every
        # accepted connection live there.
        if self.netns is not None:
            try:
                _enter_netns(self.netns)
            except Exception as exc:  # noqa: BLE001 - start() raises it
                self._thread_exception = exc
                return
        super()._run(ready_event)

    def _trigger_server(self):
        in_netns(self.netns, Controller._trigger_server, self)

    def factory(self):
        # AUTH without TLS is exactly what these tests want: no warning per session.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            smtp = _RecordingSMTP(self.handler, **self.SMTP_kwargs)
        smtp.owner = self.handler.owner
        return smtp


class _RecordingSMTP(SMTP):
    """Keeps what it reads (asyncio's Protocol.data_received): plain bytes before STARTTLS,
    the decrypted stream after it (session.ssl is set once the handshake is done)."""

    owner: "SMTPServer"

    def data_received(self, data: bytes) -> None:
        tls = self.session is not None and self.session.ssl is not None
        with self.owner._cond:
            self.owner.wire.append((tls, bytes(data)))
        super().data_received(data)


class SMTPServer:
    """aiosmtpd Controller on 127.0.0.1, restartable on the same port."""

    def __init__(self, host: str = HOST, port: int | None = None,
                 auth: tuple[str, str] | None = None, ready_timeout: float = 10.0,
                 netns: str | None = None, tls=None, auth_require_tls: bool = False):
        if netns is None and host not in ("127.0.0.1", "localhost") and not host.startswith("127."):
            raise ValueError("test SMTP server listens on loopback (or inside a test's namespace) only")
        self.tls = tls
        self.auth_require_tls = auth_require_tls
        self.wire: list[tuple[bool, bytes]] = []
        self.auth_seen: list[dict] = []
        self.host = host
        self.netns = netns
        self.port = port or free_port(host, netns)
        self.auth = auth
        self.ready_timeout = ready_timeout
        self.messages: list[Captured] = []
        self.rejected: list[dict] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.fail_data: str | None = None
        self._controller: _Controller | None = None
        self._cond = threading.Condition()
        self._seq = 0
        self.starts = 0

    # -- life cycle -----------------------------------------------------
    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> "SMTPServer":
        if self._controller is not None:
            return self
        kw = dict(hostname=self.host, port=self.port, decode_data=False,
                  enable_SMTPUTF8=True, ready_timeout=self.ready_timeout)
        if self.auth is not None:
            kw.update(auth_required=True, auth_require_tls=self.auth_require_tls,
                      authenticator=self._authenticate)
        if self.tls is not None:
            kw.update(tls_context=self.tls, require_starttls=False)
        def make():
            c = _Controller(_Handler(self), **kw)
            c.netns = self.netns
            return c

        ctl = make()
        # The previous listener may have left the port in TIME_WAIT; asyncio
        # sets SO_REUSEADDR, but retry briefly in case the kernel lags.
        deadline = time.monotonic() + 10
        while True:
            try:
                ctl.start()
                break
            except OSError:
                with contextlib.suppress(Exception):
                    ctl.stop(no_assert=True)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                ctl = make()
        self._controller = ctl
        self.starts += 1
        return self

    def stop(self) -> None:
        """Close the listener and every open session: connections are refused."""
        ctl, self._controller = self._controller, None
        if ctl is not None:
            ctl.stop()

    def accepts(self, timeout: float = 1.0) -> bool:
        """True when a connection to the server's address is accepted right now
        (looked at from inside its namespace)."""
        return port_open(self.host, self.port, timeout, self.netns)

    def __enter__(self) -> "SMTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- captured data --------------------------------------------------
    def wait_for(self, n: int, timeout: float = 10.0) -> list[Captured]:
        """Wait until at least n messages were captured; return them all (a copy)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.messages)} message(s) captured, wanted {n}")
                self._cond.wait(left)
            return list(self.messages)

    def snapshot(self) -> list[Captured]:
        with self._cond:
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.rejected.clear()
            self.auth_attempts.clear()
            self.auth_seen.clear()
            self.wire.clear()

    def commands(self) -> list[tuple[bool, str]]:
        """The command lines' first words (upper case), in order, each with whether it came after
        STARTTLS; DATA content lines are included (they are what the client sent too)."""
        with self._cond:
            chunks = list(self.wire)
        out = []
        for tls, data in chunks:
            for line in data.split(b"\r\n"):
                if line.strip():
                    out.append((tls, line.split()[0].decode("ascii", "replace").upper()))
        return out

    def to(self, address: str) -> list[Captured]:
        """Captured messages whose envelope recipients include address."""
        a = address.lower()
        return [m for m in self.snapshot() if a in (r.lower() for r in m.rcpt_tos)]

    def toml(self, *, from_addr: str = "wanmon@x.example", timeout_s: int = 5,
             user_env: str | None = None, password_env: str | None = None,
             starttls: bool | None = False, extra: str = "") -> str:
        """A [smtp] table for wanmon pointing at this server (starttls=None: the key left out)."""
        lines = ["[smtp]", f'host = "{self.host}"', f"port = {self.port}",
                 f'from = "{from_addr}"', "ssl = false", f"timeout_s = {timeout_s}"]
        if starttls is not None:
            lines.append(f"starttls = {str(starttls).lower()}")
        if extra:
            lines.append(extra)
        if user_env:
            lines.append(f'user_env = "{user_env}"')
        if password_env:
            lines.append(f'password_env = "{password_env}"')
        return "\n".join(lines) + "\n"

    # -- server side ------------------------------------------------------
    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = False
        login = ""
        if isinstance(auth_data, LoginPassword) and self.auth is not None:
            login = auth_data.login.decode("utf-8", "replace")
            ok = (auth_data.login == self.auth[0].encode()
                  and auth_data.password == self.auth[1].encode())
        with self._cond:
            self.auth_attempts.append((login, ok))
            self.auth_seen.append({"mechanism": mechanism, "login": login, "ok": ok,
                                   "password": getattr(auth_data, "password", None),
                                   "tls": session.ssl is not None})
        # handled=False: aiosmtpd itself answers 535 on failure.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _on_data(self, session, envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        login = None
        if getattr(session, "authenticated", False) and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        with self._cond:
            if self.fail_data:
                self.rejected.append({"mail_from": envelope.mail_from,
                                      "rcpt_tos": list(envelope.rcpt_tos), "raw": raw,
                                      "reply": self.fail_data})
                return self.fail_data
            msg = BytesParser(policy=email.policy.default).parsebytes(raw)
            cap = Captured(seq=self._seq, mail_from=envelope.mail_from,
                           rcpt_tos=list(envelope.rcpt_tos), raw=raw, message=msg,
                           peer=session.peer, auth_login=login, received_at=time.time(),
                           mail_options=list(envelope.mail_options))
            self._seq += 1
            self.messages.append(cap)
            self._cond.notify_all()
        return "250 2.0.0 Message accepted for delivery"


if __name__ == "__main__":  # manual use: python tests/smtp_server.py [PORT]
    import sys

    srv = SMTPServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else None).start()
    print(f"listening on {srv.host}:{srv.port}; Ctrl-C to stop", flush=True)
    seen = 0
    try:
        while True:
            msgs = srv.snapshot()
            for m in msgs[seen:]:
                print(f"#{m.seq} from={m.mail_from} to={m.rcpt_tos} subject={m.subject!r}",
                      flush=True)
            seen = len(msgs)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
