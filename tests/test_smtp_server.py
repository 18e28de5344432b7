"""The test SMTP server (tests/smtp_server.py) does what the alert tests rely on:
it captures what smtplib sends (envelope, headers, text + HTML parts, raw
bytes, order), closes its port on stop() and listens again on the same port
on start(), and can require AUTH without offering STARTTLS."""
from __future__ import annotations

import smtplib
import socket
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_server import SMTPServer, port_open  # noqa: E402


def _mail(subject: str, to: list[str], *, html: bool = True, msgid: str | None = None) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "wanmon@x.example"
    m["To"] = ", ".join(to)
    m["Subject"] = subject
    if msgid:
        m["Message-ID"] = msgid
    m.set_content("Điểm mất kết nối: UBND xã Phật Tích\n")
    if html:
        m.add_alternative("<p>Điểm mất kết nối: <b>UBND xã Phật Tích</b></p>", subtype="html")
    return m


@pytest.fixture
def smtp():
    srv = SMTPServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def test_listens_on_loopback_only(smtp):
    assert smtp.host == "127.0.0.1"
    assert port_open("127.0.0.1", smtp.port)
    with pytest.raises(ValueError):
        SMTPServer(host="0.0.0.0")


def test_captures_envelope_headers_parts_and_raw(smtp):
    msg = _mail("[wanmon] 1 điểm mất kết nối: UBND xã Phật Tích", ["a@x.example"],
                msgid="<abc.1@wanmon.x.example>")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
        c.ehlo()
        assert not c.has_extn("starttls"), "STARTTLS must not be offered"
        refused = c.send_message(msg, from_addr="bounce@x.example",
                                 to_addrs=["a@x.example", "noc@x.example"])
        assert refused == {}
    [got] = smtp.wait_for(1)
    assert got.seq == 0
    assert got.mail_from == "bounce@x.example"
    assert got.rcpt_tos == ["a@x.example", "noc@x.example"]     # envelope, not the To: header
    assert got.subject == "[wanmon] 1 điểm mất kết nối: UBND xã Phật Tích"
    assert got.message_id == "<abc.1@wanmon.x.example>"
    assert got.header("To") == "a@x.example"
    assert got.text.strip() == "Điểm mất kết nối: UBND xã Phật Tích"
    assert "<b>UBND xã Phật Tích</b>" in got.html
    assert got.content_types() == ["multipart/alternative", "text/plain", "text/html"]
    assert got.raw.startswith(b"From: wanmon@x.example")
    assert b"=?utf-8?" in got.raw_headers()    # the Subject is encoded on the wire
    assert got.peer[0] == "127.0.0.1"
    assert got.auth_login is None


def test_text_only_message_has_no_html(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
        c.send_message(_mail("plain", ["a@x.example"], html=False))
    [got] = smtp.wait_for(1)
    assert got.text.startswith("Điểm")
    assert got.html is None


def test_arrival_order_over_connections_and_threads(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
        for i in range(5):
            c.send_message(_mail(f"m{i}", ["a@x.example"]))
    assert [m.subject for m in smtp.wait_for(5)] == [f"m{i}" for i in range(5)]

    def send(i):
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
            c.send_message(_mail(f"t{i}", [f"r{i}@x.example"]))

    ths = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(20)
    got = smtp.wait_for(9)
    assert [m.seq for m in got] == list(range(9))
    assert sorted(m.subject for m in got[5:]) == [f"t{i}" for i in range(4)]
    assert [m.subject for m in smtp.to("r2@x.example")] == ["t2"]
    smtp.clear()
    assert smtp.snapshot() == []


def test_stop_refuses_then_start_on_same_port(smtp):
    port = smtp.port
    with smtplib.SMTP(smtp.host, port, timeout=10) as c:
        c.send_message(_mail("before", ["a@x.example"]))
    smtp.stop()
    assert not smtp.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises((ConnectionRefusedError, smtplib.SMTPConnectError, OSError)):
        smtplib.SMTP("127.0.0.1", port, timeout=5)
    smtp.stop()        # idempotent

    smtp.start()
    assert smtp.port == port and smtp.running
    with smtplib.SMTP(smtp.host, port, timeout=10) as c:
        c.send_message(_mail("after", ["a@x.example"]))
    got = smtp.wait_for(2)
    assert [m.subject for m in got] == ["before", "after"]   # kept across the restart
    assert [m.seq for m in got] == [0, 1]

    # several cycles in a row
    for _ in range(3):
        smtp.stop()
        assert not port_open("127.0.0.1", port)
        smtp.start()
        assert port_open("127.0.0.1", port)


def test_stop_closes_an_open_session(smtp):
    c = smtplib.SMTP(smtp.host, smtp.port, timeout=5)
    c.ehlo()
    smtp.stop()
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError, OSError)):
        c.send_message(_mail("lost", ["a@x.example"]))
    c.close()
    assert smtp.snapshot() == []


def test_wait_for_times_out(smtp):
    with pytest.raises(TimeoutError):
        smtp.wait_for(1, timeout=0.3)


def test_fail_data_rejects_temporarily(smtp):
    smtp.fail_data = "451 4.3.0 try again later"
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            c.send_message(_mail("x", ["a@x.example"]))
        assert ei.value.smtp_code == 451
    assert smtp.snapshot() == [] and len(smtp.rejected) == 1
    smtp.fail_data = None
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as c:
        c.send_message(_mail("y", ["a@x.example"]))
    assert [m.subject for m in smtp.wait_for(1)] == ["y"]


def test_auth_required():
    with SMTPServer(auth=("wanmon", "s3cr3t p@ss")) as srv:
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as c:
            c.ehlo()
            assert c.has_extn("auth") and not c.has_extn("starttls")
            with pytest.raises(smtplib.SMTPSenderRefused) as ei:   # no AUTH yet
                c.send_message(_mail("noauth", ["a@x.example"]))
            assert ei.value.smtp_code == 530
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as c:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login("wanmon", "wrong")
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as c:
            c.login("wanmon", "s3cr3t p@ss")
            c.send_message(_mail("authed", ["a@x.example"]))
        [got] = srv.wait_for(1)
        assert got.subject == "authed" and got.auth_login == "wanmon"
        assert ("wanmon", False) in srv.auth_attempts and ("wanmon", True) in srv.auth_attempts


def test_toml_block(smtp):
    t = smtp.toml(user_env="SMTP_USER", password_env="SMTP_PASS")
    assert f"port = {smtp.port}" in t and 'host = "127.0.0.1"' in t
    assert "starttls = false" in t and 'user_env = "SMTP_USER"' in t


# -- inside a network namespace (the alert tests run wanmon in a lab's client namespace) --

import netns  # noqa: E402

_ns_ok, _ns_why = netns.available()


@prereq.needs(_ns_ok, "network namespaces", prereq.NETNS, _ns_why)
def test_listener_inside_a_lab_namespace():
    from smtp_server import in_netns

    send = (
        "import smtplib, sys\n"
        "from email.message import EmailMessage\n"
        "m = EmailMessage(); m['From'] = 'wanmon@x.example'; m['To'] = 'a@x.example'\n"
        "m['Subject'] = sys.argv[2]; m.set_content('x')\n"
        "with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10) as c: c.send_message(m)\n"
    )
    with netns.lab() as lab:
        srv = SMTPServer(netns=lab.client).start()
        try:
            # nothing listens on that port here, in the test's own namespace
            assert not port_open("127.0.0.1", srv.port)
            assert srv.accepts()
            cp = lab.run([sys.executable, "-c", send, str(srv.port), "from-ns"])
            assert cp.returncode == 0, cp.stderr
            [got] = srv.wait_for(1)
            assert got.subject == "from-ns" and got.peer[0] == "127.0.0.1"

            srv.stop()
            assert not srv.accepts()
            cp = lab.run([sys.executable, "-c", send, str(srv.port), "refused"])
            assert cp.returncode != 0 and "ConnectionRefusedError" in cp.stderr
            srv.start()
            cp = lab.run([sys.executable, "-c", send, str(srv.port), "again"])
            assert cp.returncode == 0, cp.stderr
            assert [m.subject for m in srv.wait_for(2)] == ["from-ns", "again"]
            # in_netns hands back results and exceptions
            assert in_netns(lab.client, lambda: 42) == 42
            with pytest.raises(ZeroDivisionError):
                in_netns(lab.client, lambda: 1 / 0)
        finally:
            srv.stop()
