"""Deliver the outbox over SMTP: a mail queue with deadlines, retries and back-off.

Deadlines, not just timeouts (wanmon/deadline.py): the whole session has one
(the delivery budget, 30 s by default); connect + greeting + EHLO + STARTTLS +
AUTH must finish within `[smtp] timeout_s`, and so must each message's
exchange (MAIL, RCPT, DATA, the final dot). The sockets are watched: a relay
that drips its answer or never acknowledges is cut off at the deadline,
whatever smtplib is reading.

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

import base64
import email.utils
import logging
import re
import smtplib
import ssl as ssl_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from wanmon.config import SmtpSpec
from wanmon.deadline import Deadline
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


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP whose socket is opened through the first of `deadlines` (DNS and connect
    bounded) and watched by all of them: a blocked read returns when one passes."""

    def __init__(self, deadlines: Sequence[Deadline], per_op_s: float, host: str, port: int, **kw):
        self.deadlines = tuple(deadlines)
        self.per_op_s = per_op_s
        super().__init__(host, port, timeout=per_op_s, **kw)

    def _get_socket(self, host, port, timeout):
        first, *rest = self.deadlines
        sock = first.connect(host, port, first.timeout(self.per_op_s), self.source_address)
        for d in rest:
            d.watch(sock)
        return sock


class _SMTP_SSL(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL (port 465) the same way; the TLS handshake is watched too."""

    def __init__(self, deadlines: Sequence[Deadline], per_op_s: float, host: str, port: int, **kw):
        self.deadlines = tuple(deadlines)
        self.per_op_s = per_op_s
        super().__init__(host, port, timeout=per_op_s, **kw)

    def _get_socket(self, host, port, timeout):
        sock = _SMTP._get_socket(self, host, port, timeout)
        return _TLSVia(self.context, self.deadlines, self.per_op_s).wrap_socket(sock, server_hostname=self._host)


class _TLSVia:
    """What smtplib needs of an SSLContext (wrap_socket): TLS whose handshake runs on a socket
    the deadlines already watch (wrapping detaches the plain socket they watched)."""

    def __init__(self, context: ssl_mod.SSLContext, deadlines: Sequence[Deadline], per_op_s: float):
        self.context = context
        self.deadlines = tuple(deadlines)
        self.per_op_s = per_op_s

    def wrap_socket(self, sock, server_hostname=None, **_kw):
        first, *rest = self.deadlines
        tls = first.wrap_tls(self.context, sock, server_hostname, self.per_op_s)
        for d in rest:
            d.watch(tls)
        return tls


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return str(exc) or type(exc).__name__


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:300]


def _open(spec: SmtpSpec, session: Deadline) -> smtplib.SMTP:
    """Connect, greeting, EHLO, STARTTLS and AUTH within timeout_s (and the session's deadline).
    Raises OSError / SMTPException; a deadline hit says so (DeadlineExceeded is an OSError)."""
    st = spec.settings
    where = f"SMTP server {st.host}:{st.port}"
    ctx = ssl_mod.create_default_context()
    with Deadline(min(st.timeout_s, session.remaining()), f"{where} (connect, greeting, EHLO, TLS, AUTH)") as phase:
        deadlines = (phase, session)
        try:
            if st.ssl:
                conn: smtplib.SMTP = _SMTP_SSL(deadlines, st.timeout_s, st.host, st.port, context=ctx)
            else:
                conn = _SMTP(deadlines, st.timeout_s, st.host, st.port)
            try:
                conn.ehlo_or_helo_if_needed()
                if st.starttls:
                    conn.starttls(context=_TLSVia(ctx, deadlines, st.timeout_s))
                    conn.ehlo()  # again, over TLS (RFC 3207), still within this phase
                if spec.user:
                    conn.login(spec.user, spec.password.reveal() if spec.password else "")
            except BaseException:
                conn.close()
                raise
        except (OSError, smtplib.SMTPException) as exc:
            if phase.expired:
                raise TimeoutError(phase.message()) from exc
            raise
    return conn


def _open_error(spec: SmtpSpec, exc: BaseException) -> str:
    st = spec.settings
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"SMTP login refused by {st.host}:{st.port} ({exc.smtp_code}): check [smtp] user_env and "
                "password_env")
    if isinstance(exc, TimeoutError) and "(deadline)" in str(exc):
        return str(exc)
    return f"cannot reach SMTP server {st.host}:{st.port}: {_why(exc)}"


def _send_one(conn: smtplib.SMTP, row: dict, spec: SmtpSpec, session: Deadline) -> tuple[str, str | None]:
    """One message's exchange (MAIL, RCPT, DATA, the final dot) within timeout_s.
    Returns (outcome, error): 'sent' | 'failed' (refused for good) | 'retry' (refused for now,
    the connection is fine) | 'drop' (timeout, deadline, connection lost: open a new one)."""
    st = spec.settings
    if conn.sock is None:
        return "drop", "the SMTP server closed the connection"
    with Deadline(min(st.timeout_s, session.remaining()), f"SMTP message to {row['recipient']}") as md:
        try:
            md.watch(conn.sock)
            conn.sock.settimeout(md.timeout(st.timeout_s))
            conn.send_message(build(row, spec), from_addr=st.from_, to_addrs=[row["recipient"]])
            return "sent", None
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return _by_code(conn, code, f"{code} {_text(reply)}")
        except smtplib.SMTPNotSupportedError as exc:  # e.g. an address this server cannot take
            return "failed", _why(exc)
        except smtplib.SMTPResponseException as exc:  # sender refused, DATA refused, ...
            return _by_code(conn, exc.smtp_code, _why(exc))
        except (OSError, smtplib.SMTPException) as exc:
            if session.expired:
                return "drop", session.message()
            if md.expired:
                return "drop", md.message()
            return "drop", f"SMTP connection lost: {_why(exc)}"


def _by_code(conn: smtplib.SMTP, code: int, error: str) -> tuple[str, str]:
    if 500 <= code < 600:
        return "failed", error  # permanent: never blocks the queue
    if 400 <= code < 500 and conn.sock is not None:
        return "retry", error  # smtplib reset the transaction: the connection goes on
    return "drop", error  # 421 (smtplib closed it), or a reply that makes no sense


def _quit(conn: smtplib.SMTP, spec: SmtpSpec, session: Deadline) -> None:
    """QUIT, waiting at most QUIT_S for the answer; the connection is closed in any case."""
    try:
        if conn.sock is not None:
            with Deadline(min(QUIT_S, spec.settings.timeout_s, session.remaining()), "SMTP QUIT") as d:
                d.watch(conn.sock)
                conn.sock.settimeout(d.timeout())
                conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        conn.close()


# -- the queue ---------------------------------------------------------------


def deliver(store: Store, spec: SmtpSpec, budget_s: float = 30.0,
            now: Callable[[], float] = time.time) -> DeliveryReport:
    """Send the queued mail that is due, oldest first, within budget_s (enforced while it runs).
    `now` is the wall clock of the retry times (injectable: tests move it instead of sleeping)."""
    rep = DeliveryReport()
    due = store.outbox_due(now())
    if due:
        with Deadline(budget_s, f"SMTP delivery ({budget_s:g} s budget)") as session:
            _run_queue(store, spec, due, session, now, rep)
    rep.queued = store.outbox_summary(now())["queued"]
    if rep.error:
        logger.warning("mail delivery stopped error=%r sent=%d failed=%d deferred=%d queued=%d",
                       rep.error, rep.sent, rep.failed, rep.deferred, rep.queued)
    elif rep.sent or rep.failed or rep.deferred:
        logger.info("mail sent=%d failed=%d deferred=%d queued=%d", rep.sent, rep.failed, rep.deferred, rep.queued)
    return rep


def _run_queue(store: Store, spec: SmtpSpec, due: list[dict], session: Deadline, now: Callable[[], float],
               rep: DeliveryReport) -> None:
    st = spec.settings
    conn: smtplib.SMTP | None = None
    try:
        for row in due:
            if row["attempts"] >= st.max_attempts:  # its last attempts were cut short (crash, kill)
                _give_up(store, row, row["attempts"], row["last_error"] or "interrupted in mid-send", rep)
                continue
            if session.remaining() <= 0:
                rep.error = session.message()
                return
            if conn is None:
                try:
                    conn = _open(spec, session)
                except (OSError, smtplib.SMTPException) as exc:
                    rep.error = _open_error(spec, exc)  # the server, not a message: no attempt counted
                    return
            attempt = store.outbox_attempt(row["id"], now() + retry_delay_s(row["attempts"] + 1, st.retry_s))
            outcome, error = _send_one(conn, row, spec, session)
            _record(store, spec, row, attempt, outcome, error, now, rep)
            if outcome == "drop":
                conn.close()
                conn = None
            if session.expired:
                rep.error = session.message()
                return
    finally:
        if conn is not None:
            _quit(conn, spec, session)


def _record(store: Store, spec: SmtpSpec, row: dict, attempt: int, outcome: str, error: str | None,
            now: Callable[[], float], rep: DeliveryReport) -> None:
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
        logger.warning("mail retry later id=%d to=%s attempt=%d/%d retry_in_s=%.0f error=%r", row["id"],
                       row["recipient"], attempt, spec.settings.max_attempts,
                       retry_delay_s(attempt, spec.settings.retry_s), error)


def _give_up(store: Store, row: dict, attempts: int, error: str, rep: DeliveryReport) -> None:
    store.outbox_mark(row["id"], "failed", f"{error} (gave up after {attempts} attempts)"[:500])
    rep.failed += 1
    logger.error("mail failed id=%d to=%s attempts=%d error=%r", row["id"], row["recipient"], attempts, error)


def send_now(spec: SmtpSpec, rows: Sequence[dict], budget_s: float, what: str) -> None:
    """Send these messages now, outside the outbox, on one connection within budget_s
    (enforced while it runs): `wanmon test-email`, and the NOC's notice of a damaged store
    (whose outbox is in that store). Raises MailError with the first reason one was not sent."""
    st = spec.settings
    with Deadline(budget_s, f"{what} ({budget_s:g} s budget)") as session:
        try:
            conn = _open(spec, session)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(_open_error(spec, exc)) from None
        try:
            for row in rows:
                outcome, error = _send_one(conn, row, spec, session)
                if outcome != "sent":
                    raise MailError(f"cannot send to {row['recipient']} through {st.host}:{st.port}: {error}")
        finally:
            _quit(conn, spec, session)


def send_test(spec: SmtpSpec, address: str, lang: str) -> str:
    """`wanmon test-email`: send one message now (within TEST_BUDGET_S); raise MailError with the reason."""
    from wanmon.alerts.mail import WORDS, new_message_id

    row = {"recipient": address, "subject": WORDS[lang]["test_subject"], "created_ts": time.time(),
           "message_id": new_message_id(), "body_text": WORDS[lang]["test_body"] + "\n",
           "body_html": f"<p>{WORDS[lang]['test_body']}</p>"}
    send_now(spec, [row], TEST_BUDGET_S, "SMTP test")
    return row["message_id"]
