"""Deliver the outbox over SMTP, oldest first; an outage keeps mail queued, in order.

A mail is marked sent as soon as the server accepted it; its Message-ID was
fixed when it was queued, so even the rare resend after a crash between
"accepted" and "marked" carries the same Message-ID.
"""

from __future__ import annotations

import email.utils
import logging
import smtplib
import socket
import ssl as ssl_mod
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from wanmon.config import SmtpSpec
from wanmon.errors import WanmonError
from wanmon.store import Store

logger = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    queued: int = 0
    error: str | None = None


def build(row: dict, spec: SmtpSpec) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = spec.settings.from_
    msg["To"] = row["recipient"]
    msg["Subject"] = row["subject"]  # already one safe line (alerts.mail.header_safe)
    msg["Date"] = email.utils.formatdate(row["created_ts"], localtime=True)
    msg["Message-ID"] = row["message_id"]
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(row["body_text"])
    msg.add_alternative(row["body_html"], subtype="html")
    return msg


def _connect(spec: SmtpSpec) -> smtplib.SMTP:
    st = spec.settings
    if st.ssl:
        conn: smtplib.SMTP = smtplib.SMTP_SSL(st.host, st.port, timeout=st.timeout_s,
                                              context=ssl_mod.create_default_context())
    else:
        conn = smtplib.SMTP(st.host, st.port, timeout=st.timeout_s)
        if st.starttls:
            conn.starttls(context=ssl_mod.create_default_context())
    if spec.user:
        conn.login(spec.user, spec.password.reveal() if spec.password else "")
    return conn


def deliver(store: Store, spec: SmtpSpec, budget_s: float = 30.0) -> DeliveryReport:
    """Send queued mail in order until done, the server fails, or the budget is spent."""
    rep = DeliveryReport()
    queued = store.outbox(["queued"])
    if not queued:
        return rep
    deadline = time.monotonic() + budget_s
    try:
        conn = _connect(spec)
    except (OSError, smtplib.SMTPException) as exc:
        rep.error = f"cannot reach SMTP server {spec.settings.host}:{spec.settings.port}: {exc}"
        rep.queued = len(queued)
        logger.warning("mail not sent: %s (%d queued)", rep.error, rep.queued)
        return rep
    try:
        for row in queued:
            if time.monotonic() > deadline:
                break
            try:
                conn.send_message(build(row, spec), from_addr=spec.settings.from_, to_addrs=[row["recipient"]])
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
                store.outbox_mark(row["id"], "failed", str(exc)[:300])  # permanent: do not block the queue
                rep.failed += 1
                logger.warning("mail to=%s refused by the server: %s", row["recipient"], exc)
                continue
            except smtplib.SMTPResponseException as exc:
                if 500 <= exc.smtp_code < 600:
                    store.outbox_mark(row["id"], "failed", f"{exc.smtp_code} {exc.smtp_error!r}"[:300])
                    rep.failed += 1
                    continue
                rep.error = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
                break
            except (OSError, smtplib.SMTPException) as exc:
                rep.error = f"SMTP failed: {exc}"
                break
            store.outbox_mark(row["id"], "sent", None, time.time())
            rep.sent += 1
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
    rep.queued = len(store.outbox(["queued"]))
    if rep.error:
        logger.warning("mail delivery stopped: %s (sent=%d queued=%d)", rep.error, rep.sent, rep.queued)
    elif rep.sent:
        logger.info("mail sent=%d queued=%d", rep.sent, rep.queued)
    return rep


class MailError(WanmonError):
    pass


def send_test(spec: SmtpSpec, address: str, lang: str) -> str:
    """`wanmon test-email`: send one message now; raise MailError with the reason."""
    from wanmon.alerts.mail import WORDS, new_message_id

    row = {"recipient": address, "subject": WORDS[lang]["test_subject"], "created_ts": time.time(),
           "message_id": new_message_id(), "body_text": WORDS[lang]["test_body"] + "\n",
           "body_html": f"<p>{WORDS[lang]['test_body']}</p>"}
    try:
        conn = _connect(spec)
        try:
            conn.send_message(build(row, spec), from_addr=spec.settings.from_, to_addrs=[address])
        finally:
            conn.quit()
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP login refused ({exc.smtp_code}): check [smtp] user_env and password_env") from None
    except (OSError, socket.timeout, smtplib.SMTPException) as exc:
        raise MailError(f"cannot send through {spec.settings.host}:{spec.settings.port}: {exc}") from None
    return row["message_id"]
