"""SMTP credentials never travel in clear (issue 21, part 2).

A real aiosmtpd relay that offers AUTH without TLS, on a relay address that is not
loopback: inside a tests/netns.py lab, on the lab's 198.18.1.2 (its "alive" namespace,
reached over a veth pair), with wanmon running in the lab's client namespace. The relay
keeps every byte it reads and every AUTH it sees. Loopback relays keep the old rule (a
password may go in clear to this machine) and are tested without a lab; `validate`'s
warnings need no network at all.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from conftest import REPO, wanmon  # noqa: E402
from fault_servers import tls_context  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402

from wanmon.alerts.mail import Mail, new_message_id  # noqa: E402
from wanmon.config import Secret, SmtpSettings, SmtpSpec  # noqa: E402
from wanmon.model import AlertUpdate  # noqa: E402
import prereq  # noqa: E402
from wanmon.mailer import send_test  # noqa: E402
from wanmon.store import Store  # noqa: E402

USER, PASSWORD = "wanmon", "s3cret pa55"
ENV = {"SMTP_USER": USER, "SMTP_PASS": PASSWORD}
FROM = "wanmon@x.example"

_ok, _why = netns.available()
needs_lab = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)


def secret_forms() -> list[bytes]:
    """The password as it would cross the wire: itself, and inside AUTH PLAIN / LOGIN's base64."""
    return [PASSWORD.encode(), base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()),
            base64.b64encode(PASSWORD.encode())]


def plain_bytes(srv: SMTPServer) -> bytes:
    """Everything the relay read before any STARTTLS: what anyone on the path could read."""
    return b"".join(data for tls, data in srv.wire if not tls)


def assert_no_credentials(srv: SMTPServer) -> None:
    clear = plain_bytes(srv)
    assert clear, "the relay read nothing: the test proves nothing"
    assert b"AUTH" not in clear.upper(), clear
    for form in secret_forms():
        assert form not in clear, clear
    assert srv.auth_seen == []


def config(folder: Path, srv: SMTPServer, *, starttls: bool | None = None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "sites.toml"
    cfg.write_text(textwrap.dedent("""\
        [store]
        path = "var/wanmon.db"
        [snmp]
        enabled = false
        [alerts]
        noc = ["noc@x.example"]
        [[sites]]
        id = "a"
        name = "A"
        level = "province"
        address = "127.0.0.1"
        """) + srv.toml(from_addr=FROM, user_env="SMTP_USER", password_env="SMTP_PASS", starttls=starttls,
                         extra=extra), encoding="utf-8")
    return cfg


def lab_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WANMON_CONFIG", "SSL_CERT_FILE")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(ENV)
    env.update(extra or {})
    return env


def in_lab(lab, cfg: Path, *args: str, env: dict | None = None):
    """`python -m wanmon --config cfg ARGS` in the lab's client namespace (the relay is 198.18.1.2)."""
    return lab.run([sys.executable, "-m", "wanmon", "--config", str(cfg), *args], cwd=cfg.parent,
                   env=lab_env(env), timeout=60)


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


def relay(lab, **kw) -> SMTPServer:
    """aiosmtpd in the lab's alive namespace on 198.18.1.2, AUTH offered (PLAIN, LOGIN) without TLS."""
    return SMTPServer(host=lab.alive4, netns=lab.alive_ns, auth=(USER, PASSWORD), **kw).start()


# ---------------------------------------------------------------------------
# a relay that is not on loopback and offers no STARTTLS: no credentials, one line why


@needs_lab
@pytest.mark.parametrize("starttls", [None, False])
def test_test_email_sends_no_credentials_to_a_relay_without_tls(lab, tmp_path, starttls):
    srv = relay(lab)
    try:
        cfg = config(tmp_path, srv, starttls=starttls)
        cp = in_lab(lab, cfg, "test-email", "someone@x.example")
        assert cp.returncode == 1, cp.stdout + cp.stderr
        assert_no_credentials(srv)
        assert srv.snapshot() == []
        assert [c for _, c in srv.commands()][:1] == ["EHLO"]   # it did talk to the relay
    finally:
        srv.stop()
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    line = lines[0]
    assert f"{lab.alive4}:{srv.port}" in line and "STARTTLS" in line and "ssl = true" in line, line
    assert PASSWORD not in cp.stderr + cp.stdout


@needs_lab
def test_an_alert_mail_stays_queued_with_the_reason_in_wanmon_alerts(lab, tmp_path):
    """The cycle's mail output (`wanmon check`) against the same relay: no AUTH, the alert stays
    queued (no attempt counted: the relay's setup, not the message) and `wanmon alerts` says why."""
    srv = relay(lab)
    try:
        cfg = config(tmp_path, srv)
        store = Store.open(tmp_path / "var" / "wanmon.db")
        mid = new_message_id()
        store.record_cycle(1.0, 2.0, [], alerts=AlertUpdate(states={}, guard=False, mails=[
            Mail("noc@x.example", "[wanmon] A down", "A is down\n", "<p>A is down</p>", mid, ("down",),
                 1.0)]))
        store.close()
        cp = in_lab(lab, cfg, "check")
        assert cp.returncode == 0, cp.stderr
        assert_no_credentials(srv)
        assert srv.snapshot() == []
    finally:
        srv.stop()
    js = wanmon("--config", str(cfg), "alerts", "--json", cwd=tmp_path, env=ENV)
    assert js.returncode == 0, js.stderr
    [row] = [o for o in json.loads(js.stdout)["outbox"] if o["message_id"] == mid]
    assert (row["status"], row["attempts"]) == ("queued", 0), row
    assert "offers no STARTTLS" in row["last_error"] and "ssl = true" in row["last_error"], row
    text = wanmon("--config", str(cfg), "alerts", cwd=tmp_path, env=ENV)
    assert "offers no STARTTLS" in text.stdout, text.stdout


@needs_lab
def test_allow_plaintext_auth_is_the_named_opt_out(lab, tmp_path):
    srv = relay(lab)
    try:
        cfg = config(tmp_path, srv, extra="allow_plaintext_auth = true")
        v = wanmon("--config", str(cfg), "validate", cwd=tmp_path, env=ENV)
        assert v.returncode == 0 and "allow_plaintext_auth" in v.stderr and "warning" in v.stderr, v.stderr
        cp = in_lab(lab, cfg, "test-email", "someone@x.example")
        assert cp.returncode == 0, cp.stderr
        [m] = srv.wait_for(1, timeout=5)
        assert m.auth_login == USER
        assert [(a["login"], a["ok"], a["tls"]) for a in srv.auth_seen] == [(USER, True, False)]
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# STARTTLS offered: it comes first, the certificate is verified, then AUTH


@needs_lab
@pytest.mark.parametrize("starttls", [None, True])
def test_with_starttls_offered_auth_happens_only_after_it(lab, tmp_path, starttls):
    ctx, cert = tls_context(tmp_path, ips=(lab.alive4,))
    srv = relay(lab, tls=ctx)  # AUTH is offered in clear too: wanmon must not take it
    try:
        cfg = config(tmp_path, srv, starttls=starttls)
        cp = in_lab(lab, cfg, "test-email", "someone@x.example", env={"SSL_CERT_FILE": cert})
        assert cp.returncode == 0, cp.stderr
        [m] = srv.wait_for(1, timeout=5)
        assert m.auth_login == USER
        cmds = srv.commands()
    finally:
        srv.stop()
    words = [c for _, c in cmds]
    assert words.index("STARTTLS") < words.index("AUTH") < words.index("MAIL"), words
    assert [c for tls, c in cmds if not tls] == ["EHLO", "STARTTLS"], cmds  # nothing else in clear
    assert [(a["login"], a["tls"]) for a in srv.auth_seen] == [(USER, True)]
    for form in secret_forms():
        assert form not in plain_bytes(srv)


@needs_lab
def test_a_certificate_the_config_does_not_trust_sends_nothing(lab, tmp_path):
    """STARTTLS with a certificate nobody told wanmon to trust: the handshake fails, no AUTH."""
    ctx, _cert = tls_context(tmp_path, ips=(lab.alive4,))
    srv = relay(lab, tls=ctx)
    try:
        cfg = config(tmp_path, srv)
        cp = in_lab(lab, cfg, "test-email", "someone@x.example")  # no SSL_CERT_FILE
        assert cp.returncode == 1
        assert "certificate" in cp.stderr.lower(), cp.stderr
        assert srv.auth_seen == [] and srv.snapshot() == []
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# loopback: the old rule stands (a password may go in clear to this machine)


def spec(srv: SMTPServer, **kw) -> SmtpSpec:
    return SmtpSpec(SmtpSettings(host=srv.host, port=srv.port, **{"from": FROM}, timeout_s=5, **kw), USER,
                    Secret(PASSWORD))


def test_on_loopback_auth_without_tls_still_works():
    with SMTPServer(auth=(USER, PASSWORD)) as srv:
        send_test(spec(srv), "someone@x.example", "en")
        [m] = srv.wait_for(1, timeout=5)
        assert m.auth_login == USER and [a["tls"] for a in srv.auth_seen] == [False]


def test_on_loopback_starttls_is_used_when_offered_and_credentials_are_set(tmp_path, monkeypatch):
    ctx, cert = tls_context(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    with SMTPServer(auth=(USER, PASSWORD), tls=ctx) as srv:
        send_test(spec(srv), "someone@x.example", "en")
        srv.wait_for(1, timeout=5)
        assert [(a["login"], a["tls"]) for a in srv.auth_seen] == [(USER, True)]
        assert [c for tls, c in srv.commands() if not tls] == ["EHLO", "STARTTLS"]


def test_without_credentials_an_unset_starttls_stays_plain(tmp_path):
    """No password to protect: a relay's STARTTLS is not taken unless asked (an internal relay's
    self-signed certificate must not stop alerts that went out before)."""
    ctx, _cert = tls_context(tmp_path)
    with SMTPServer(tls=ctx) as srv:
        send_test(SmtpSpec(SmtpSettings(host=srv.host, port=srv.port, **{"from": FROM}, timeout_s=5), None, None),
                  "someone@x.example", "en")
        srv.wait_for(1, timeout=5)
        assert "STARTTLS" not in [c for _, c in srv.commands()]


# ---------------------------------------------------------------------------
# validate: warnings, exit 0


def validate(tmp_path: Path, tables: str, env: dict | None = None):
    cfg = tmp_path / "sites.toml"
    cfg.write_text(textwrap.dedent("""\
        [store]
        path = "var/wanmon.db"
        [[sites]]
        id = "a"
        name = "A"
        level = "province"
        address = "127.0.0.1"
        """) + textwrap.dedent(tables), encoding="utf-8")
    return wanmon("--config", str(cfg), "validate", cwd=tmp_path, env={**ENV, "INFLUX_TOKEN": "Zq9-influx-secret", **(env or {})})


SMTP_CREDS = """\
    [smtp]
    host = "{host}"
    port = 587
    from = "wanmon@x.example"
    user_env = "SMTP_USER"
    password_env = "SMTP_PASS"
    {more}
    """


@pytest.mark.parametrize("host,more,warned", [
    ("mail.x.example", "", True),                    # starttls unset: TLS only if offered
    ("mail.x.example", "starttls = false", True),    # no TLS: no mail will go out
    ("mail.x.example", "allow_plaintext_auth = true", True),
    ("mail.x.example", "starttls = true", False),
    ("mail.x.example", "ssl = true", False),
    ("127.0.0.1", "starttls = false", False),
    ("localhost", "", False),
    ("::1", "", False),
])
def test_validate_warns_about_smtp_credentials_that_may_lack_tls(tmp_path, host, more, warned):
    cp = validate(tmp_path, SMTP_CREDS.format(host=host, more=more))
    assert cp.returncode == 0, cp.stderr
    assert ": OK:" in cp.stdout
    warnings = [ln for ln in cp.stderr.splitlines() if "warning" in ln]
    assert bool(warnings) == warned, cp.stderr
    if warned:
        assert len(warnings) == 1 and "[smtp]" in warnings[0] and host in warnings[0], warnings
        assert PASSWORD not in cp.stderr


@pytest.mark.parametrize("url,warned", [
    ("http://influx.x.example:8086", True),
    ("https://influx.x.example:8086", False),
    ("http://127.0.0.1:8086", False),
    ("http://localhost:8086", False),
])
def test_validate_warns_about_an_influxdb_token_over_http(tmp_path, url, warned):
    cp = validate(tmp_path, f"""\
        [influxdb]
        url = "{url}"
        token_env = "INFLUX_TOKEN"
        """)
    assert cp.returncode == 0, cp.stderr
    warnings = [ln for ln in cp.stderr.splitlines() if "warning" in ln]
    assert bool(warnings) == warned, cp.stderr
    if warned:
        assert "[influxdb]" in warnings[0] and "https://" in warnings[0] and "Zq9" not in warnings[0]
