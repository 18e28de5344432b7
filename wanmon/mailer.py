"""Deliver the outbox over SMTP: a mail queue with deadlines, retries and back-off.

Deadlines, not just timeouts (wanmon/deadline.py): the whole session has one
(the delivery budget, 30 s by default); connect + greeting + EHLO + STARTTLS +
AUTH must finish within `[smtp] timeout_s`, and so must each message's
exchange (MAIL, RCPT, DATA, the final dot). The sockets are watched: a relay
that drips its answer or never acknowledges is cut off at the deadline,
whatever aiosmtplib is waiting for.

The queue, oldest first:

* before a message is sent its attempt is counted in the store, with the time
  of its next try, and committed: a crash or kill in mid-send still counts;
* accepted (2xx): 'sent';
* refused for good (5xx): 'failed' with the server's answer;
* a timeout, a deadline, a lost connection or a temporary refusal (4xx): the
  message stays 'queued' until its next try (`retry_s`, 60 s, doubling after
  each failed attempt, at most an hour); after a lost connection or a
  deadline a new connection is opened for the rest of the queue, so one
  message a relay chokes on never holds back those behind it;
* after `max_attempts` (8: about two hours of retries) it is 'failed' with
  its last error;
* a server that cannot be reached (connect, greeting, EHLO, TLS, AUTH) or the
  end of the session's budget stops the run: that is no message's fault and
  counts as no attempt.

A message's Message-ID is fixed when it is queued: every attempt of it, and
a resend after a relay accepted it too late for us to know, carries the same.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import logging
import re
import socket
import ssl as ssl_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib

from wanmon.config import SmtpSpec, is_loopback
from wanmon.deadline import Deadline, call_within
from wanmon.errors import WanmonError
from wanmon.store import Store

logger = logging.getLogger(__name__)

RETRY_MAX_S = 3600.0  # the back-off stops doubling at an hour
QUIT_S = 2.0  # QUIT is a courtesy: the mail is out already, never wait long for its answer
TEST_BUDGET_S = 30.0  # `wanmon test-email`: the whole session


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    queued: int = 0  # still queued after this run (waiting for a retry, or not reached)
    deferred: int = 0  # attempts that failed for now this run (queued again, with a retry time)
    error: str | None = None  # why the run stopped early
    refused: str | None = None  # the last message's refusal (failed for good, or for now)

    @property
    def idle(self) -> bool:
        """Nothing was due: the run proves nothing about the relay (wanmon.outputs keeps the last health)."""
        return not (self.sent or self.failed or self.deferred or self.error)


class MailError(WanmonError):
    pass


class EncodedSubject(str):
    """A Subject header wanmon encodes itself (RFC 2047), for the email package's policy.

    CPython's folding (3.11, 3.12) splits a non-ASCII subject into encoded words whose
    boundaries fall next to a space, and the space between two encoded words is dropped
    when decoding: "Sở Kế hoạch vàĐầu tư", in every mail client, for about 1 subject in 10
    (and some of its encoded words had 76 characters; RFC 2047 allows 75). Here:
    base64 UTF-8 encoded words of whole words, each word's leading space inside its
    encoded word, one encoded word per line, each at most 75 characters and each line at
    most 76 (RFC 2047, section 2). A word too long for one encoded word is cut between
    characters (adjacent encoded words decode as one text). ASCII subjects stay plain.
    The str value is the subject itself."""

    name = "Subject"

    def fold(self, *, policy) -> str:
        return "Subject: " + policy.linesep.join(subject_lines(str(self))) + policy.linesep


_EW_OVERHEAD = len("=?utf-8?b??=")


def _ew(chunk: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(chunk.encode("utf-8")).decode("ascii") + "?="


def subject_lines(text: str) -> list[str]:
    """The Subject's header lines after "Subject: " (continuation lines start with their
    folding space): encoded words, one per line (see EncodedSubject); an ASCII subject as
    text, folded at its spaces before 78 characters."""
    tokens = re.findall(r" *\S+", text)  # each word with the spaces before it
    if text.isascii():
        out = [""]
        for tok in tokens:
            if out[-1] and len(out[-1]) + len(tok) > 78 - (len("Subject: ") if len(out) == 1 else 0):
                out.append(tok if tok.startswith(" ") else " " + tok)
            else:
                out[-1] += tok
        return out

    def fits(chunk: str, first: bool) -> bool:
        room = 76 - len("Subject: ") if first else 75
        return len(_ew(chunk)) <= room

    lines: list[str] = []
    cur = ""
    for tok in tokens:
        if fits(cur + tok, not lines):
            cur += tok
            continue
        if cur:
            lines.append(_ew(cur))
            cur = ""
        while not fits(tok, not lines):  # one word longer than an encoded word: cut between characters
            k = len(tok)
            while k > 1 and not fits(tok[:k], not lines):
                k -= 1
            lines.append(_ew(tok[:k]))
            tok = tok[k:]
        cur = tok
    if cur:
        lines.append(_ew(cur))
    return [lines[0], *(" " + ln for ln in lines[1:])]


def build(row: dict, spec: SmtpSpec) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = spec.settings.from_
    msg["To"] = row["recipient"]
    msg["Subject"] = EncodedSubject(row["subject"])  # already one safe line (alerts.mail.header_safe)
    msg["Date"] = email.utils.formatdate(row["created_ts"], localtime=True)
    msg["Message-ID"] = row["message_id"]
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(row["body_text"])
    msg.add_alternative(row["body_html"], subtype="html")
    for filename, maintype, subtype, data in row.get("attachments") or ():
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def retry_delay_s(attempt: int, first_s: float = 60.0) -> float:
    """How long to wait after failed attempt number `attempt` (1, 2, ...): first_s, doubling,
    at most an hour (or first_s if that is longer)."""
    return min(first_s * 2 ** (attempt - 1), max(first_s, RETRY_MAX_S))


# -- connections under deadlines ---------------------------------------------
#
# aiosmtplib speaks SMTP over a socket we connect ourselves (its documented `sock`): the
# deadlines watch that socket, and asyncio's transport, also after STARTTLS (TLS runs on top
# of the same transport), reads and writes nothing else. When a deadline passes, the watchdog
# shuts the socket down and the read aiosmtplib is waiting in ends at once. No private name of
# smtplib or aiosmtplib is used: smtplib documents no way to reach or hand over its socket.


@dataclass
class _Conn:
    smtp: aiosmtplib.SMTP
    sock: socket.socket  # ours, watched by the deadlines; the transport uses this very object


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {_text(exc.message)}"
    return str(exc) or type(exc).__name__


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:300]


@functools.cache
def _ehlo_name() -> str:
    """Our name in EHLO (as smtplib: the FQDN), looked up once and within 2 s (a reverse lookup
    that hangs must not hold a delivery)."""
    try:
        return call_within(2.0, "ehlo-name", socket.getfqdn) or "localhost"
    except (OSError, TimeoutError):
        return socket.gethostname() or "localhost"


class PlaintextAuthRefused(MailError):
    """Credentials are set but the session has no TLS: none were sent."""


async def _open(spec: SmtpSpec, session: Deadline) -> _Conn:
    """Connect, greeting, EHLO, STARTTLS and AUTH within timeout_s (and the session's deadline).
    Raises OSError / SMTPException / MailError; a deadline hit says so (DeadlineExceeded is an OSError)."""
    st = spec.settings
    where = f"SMTP server {st.host}:{st.port}"
    ctx = ssl_mod.create_default_context()
    name = _ehlo_name()
    with Deadline(min(st.timeout_s, session.remaining()), f"{where} (connect, greeting, EHLO, TLS, AUTH)") as phase:
        conn = sock = None
        try:
            sock = phase.connect(st.host, st.port, st.timeout_s)  # DNS + connect bounded; watched from now on
            session.watch(sock)
            peer = sock.getpeername()[0]
            conn = _Conn(
                aiosmtplib.SMTP(
                    hostname=st.host,
                    sock=sock,
                    local_hostname=name,
                    timeout=st.timeout_s,
                    use_tls=st.ssl,
                    start_tls=False,
                    tls_context=ctx,
                ),
                sock,
            )
            await conn.smtp.connect()  # the greeting (over TLS with ssl = true: the handshake first)
            await conn.smtp.ehlo()
            tls = st.ssl
            if st.starttls or (st.starttls is None and spec.user and conn.smtp.supports_extension("starttls")):
                await conn.smtp.starttls()  # certificate and host name verified (ctx); fails if not offered
                await conn.smtp.ehlo()  # again, over TLS (RFC 3207)
                tls = True
            if spec.user:
                if not tls and not is_loopback(peer) and not st.allow_plaintext_auth:
                    raise PlaintextAuthRefused(
                        f"{where} offers no STARTTLS: wanmon does not send the SMTP password in clear; enable "
                        "STARTTLS on the relay (wanmon uses it), or set [smtp] ssl = true (port 465)"
                    )
                await conn.smtp.login(spec.user, spec.password.reveal() if spec.password else "")
            return conn
        except BaseException as exc:
            if conn is not None:
                conn.smtp.close()
            elif sock is not None:
                sock.close()
            if isinstance(exc, (OSError, aiosmtplib.SMTPException)) and phase.expired:
                raise TimeoutError(phase.message()) from exc
            raise


def _open_error(spec: SmtpSpec, exc: BaseException) -> str:
    st = spec.settings
    if isinstance(exc, MailError):
        return str(exc)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"SMTP login refused by {st.host}:{st.port} ({exc.code}): check [smtp] user_env and password_env"
    if isinstance(exc, TimeoutError) and "(deadline)" in str(exc):
        return str(exc)
    return f"cannot reach SMTP server {st.host}:{st.port}: {_why(exc)}"


async def _send_one(conn: _Conn, row: dict, spec: SmtpSpec, session: Deadline) -> tuple[str, str | None]:
    """One message's exchange (MAIL, RCPT, DATA, the final dot) within timeout_s.
    Returns (outcome, error): 'sent' | 'failed' (refused for good) | 'retry' (refused for now,
    the connection is fine) | 'drop' (timeout, deadline, connection lost: open a new one)."""
    st = spec.settings
    if not conn.smtp.is_connected:
        return "drop", "the SMTP server closed the connection"
    with Deadline(min(st.timeout_s, session.remaining()), f"SMTP message to {row['recipient']}") as md:
        try:
            md.watch(conn.sock)
            await conn.smtp.send_message(
                build(row, spec), sender=st.from_, recipients=[row["recipient"]], timeout=md.timeout(st.timeout_s)
            )
            return "sent", None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return _by_code(conn, refused.code, f"{refused.code} {_text(refused.message)}")
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. an address this server cannot take
            return "failed", _why(exc)
        except aiosmtplib.SMTPResponseException as exc:  # sender refused, DATA refused, ...
            return _by_code(conn, exc.code, _why(exc))
        except (OSError, aiosmtplib.SMTPException) as exc:
            if session.expired:
                return "drop", session.message()
            if md.expired:
                return "drop", md.message()
            return "drop", f"SMTP connection lost: {_why(exc)}"


def _by_code(conn: _Conn, code: int, error: str) -> tuple[str, str]:
    if 500 <= code < 600:
        return "failed", error  # permanent: never blocks the queue
    if 400 <= code < 500 and code != 421 and conn.smtp.is_connected:
        return "retry", error  # the transaction was reset (RSET): the connection goes on
    return "drop", error  # 421 (the server closes), or a reply that makes no sense


async def _quit(conn: _Conn, spec: SmtpSpec, session: Deadline) -> None:
    """QUIT, waiting at most QUIT_S for the answer; the connection is closed in any case."""
    try:
        if conn.smtp.is_connected:
            with Deadline(min(QUIT_S, spec.settings.timeout_s, session.remaining()), "SMTP QUIT") as d:
                d.watch(conn.sock)
                await conn.smtp.quit(timeout=d.timeout())
    except (OSError, aiosmtplib.SMTPException):
        pass
    finally:
        conn.smtp.close()


# -- the queue ---------------------------------------------------------------


def deliver(
    store: Store, spec: SmtpSpec, budget_s: float = 30.0, now: Callable[[], float] = time.time
) -> DeliveryReport:
    """Send the queued mail that is due, oldest first, within budget_s (enforced while it runs).
    `now` is the wall clock of the retry times (injectable: tests move it instead of sleeping)."""
    rep = DeliveryReport()
    due = store.outbox_due(now())
    if due:
        with Deadline(budget_s, f"SMTP delivery ({budget_s:g} s budget)") as session:
            asyncio.run(_run_queue(store, spec, due, session, now, rep))
    rep.queued = store.outbox_summary(now())["queued"]
    if rep.error:
        logger.warning(
            "mail delivery stopped error=%r sent=%d failed=%d deferred=%d queued=%d",
            rep.error,
            rep.sent,
            rep.failed,
            rep.deferred,
            rep.queued,
        )
    elif rep.sent or rep.failed or rep.deferred:
        logger.info("mail sent=%d failed=%d deferred=%d queued=%d", rep.sent, rep.failed, rep.deferred, rep.queued)
    return rep


async def _run_queue(
    store: Store, spec: SmtpSpec, due: list[dict], session: Deadline, now: Callable[[], float], rep: DeliveryReport
) -> None:
    st = spec.settings
    conn: _Conn | None = None
    try:
        for i, row in enumerate(due):
            if row["attempts"] >= st.max_attempts:  # its last attempts were cut short (crash, kill)
                _give_up(store, row, row["attempts"], row["last_error"] or "interrupted in mid-send", rep)
                continue
            if session.remaining() <= 0:
                rep.error = session.message()
                return
            if conn is None:
                try:
                    conn = await _open(spec, session)
                except (OSError, aiosmtplib.SMTPException, MailError) as exc:
                    # the server, not a message: no attempt counted; the reason is shown with the mail
                    rep.error = _open_error(spec, exc)
                    for waiting in due[i:]:
                        store.outbox_mark(waiting["id"], "queued", rep.error[:500])
                    return
            attempt = store.outbox_attempt(row["id"], now() + retry_delay_s(row["attempts"] + 1, st.retry_s))
            outcome, error = await _send_one(conn, row, spec, session)
            _record(store, spec, row, attempt, outcome, error, now, rep)
            if outcome == "drop":
                conn.smtp.close()
                conn = None
            if session.expired:
                rep.error = session.message()
                return
    finally:
        if conn is not None:
            await _quit(conn, spec, session)


def _record(
    store: Store,
    spec: SmtpSpec,
    row: dict,
    attempt: int,
    outcome: str,
    error: str | None,
    now: Callable[[], float],
    rep: DeliveryReport,
) -> None:
    """Store one attempt's outcome (the attempt itself is counted already)."""
    if outcome == "sent":
        store.outbox_mark(row["id"], "sent", None, now())
        rep.sent += 1
        logger.info("mail sent id=%d to=%s attempt=%d", row["id"], row["recipient"], attempt)
    elif outcome == "failed":
        store.outbox_mark(row["id"], "failed", error)
        rep.failed += 1
        rep.refused = error
        logger.warning("mail refused id=%d to=%s attempt=%d error=%r", row["id"], row["recipient"], attempt, error)
    elif attempt >= spec.settings.max_attempts:
        _give_up(store, row, attempt, error or "", rep)
    else:
        store.outbox_mark(row["id"], "queued", error)
        rep.deferred += 1
        rep.refused = error
        logger.warning(
            "mail retry later id=%d to=%s attempt=%d/%d retry_in_s=%.0f error=%r",
            row["id"],
            row["recipient"],
            attempt,
            spec.settings.max_attempts,
            retry_delay_s(attempt, spec.settings.retry_s),
            error,
        )


def _give_up(store: Store, row: dict, attempts: int, error: str, rep: DeliveryReport) -> None:
    store.outbox_mark(row["id"], "failed", f"{error} (gave up after {attempts} attempts)"[:500])
    rep.failed += 1
    logger.error("mail failed id=%d to=%s attempts=%d error=%r", row["id"], row["recipient"], attempts, error)


def send_now(spec: SmtpSpec, rows: Sequence[dict], budget_s: float, what: str) -> None:
    """Send these messages now, outside the outbox, on one connection within budget_s
    (enforced while it runs): `wanmon test-email`, and the NOC's notice of a damaged store
    (whose outbox is in that store). Raises MailError with the first reason one was not sent."""
    with Deadline(budget_s, f"{what} ({budget_s:g} s budget)") as session:
        asyncio.run(_send_now(spec, rows, session))


async def _send_now(spec: SmtpSpec, rows: Sequence[dict], session: Deadline) -> None:
    st = spec.settings
    try:
        conn = await _open(spec, session)
    except (OSError, aiosmtplib.SMTPException, MailError) as exc:
        raise MailError(_open_error(spec, exc)) from None
    try:
        for row in rows:
            outcome, error = await _send_one(conn, row, spec, session)
            if outcome != "sent":
                raise MailError(f"cannot send to {row['recipient']} through {st.host}:{st.port}: {error}")
    finally:
        await _quit(conn, spec, session)


def send_test(spec: SmtpSpec, address: str, lang: str) -> str:
    """`wanmon test-email`: send one message now (within TEST_BUDGET_S); raise MailError with the reason."""
    from wanmon.alerts.mail import WORDS, new_message_id

    message_id = new_message_id()
    row = {
        "recipient": address,
        "subject": WORDS[lang]["test_subject"],
        "created_ts": time.time(),
        "message_id": message_id,
        "body_text": WORDS[lang]["test_body"] + "\n",
        "body_html": f"<p>{WORDS[lang]['test_body']}</p>",
    }
    send_now(spec, [row], TEST_BUDGET_S, "SMTP test")
    return message_id
