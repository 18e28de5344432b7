"""The heartbeat URL (wanmon.heartbeat.beat) against real HTTP servers on 127.0.0.1: one
that answers as an Uptime Kuma push endpoint does, a dead port, and the misbehaving peers
of tests/fault_servers.py (silent, dripping, TLS dripping, closing). Every call returns,
within its budget and a small margin, a plain result; none raises."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from fault_servers import ClosingServer, DripServer, SilentServer, TLSDripServer, tls_context
from wanmon.heartbeat import HeartbeatResult, beat

TOKEN = "Xk29sEcReTpUsHtOkEn"
MARGIN_S = 0.5  # a loaded 2-core machine: thread wake-ups, not a second read


class Kuma:
    """An Uptime Kuma push endpoint: GET /api/push/<token>?status=&msg=&ping= answers 200
    {"ok":true}, an unknown token 404; every request is kept (path, query)."""

    def __init__(self, tls=None):
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        kuma = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlsplit(self.path)
                kuma.requests.append((u.path, parse_qs(u.query, keep_blank_values=True)))
                ok = u.path == f"/api/push/{TOKEN}"
                body = json.dumps({"ok": ok} if ok else {"ok": False, "msg": "Monitor not found or not active."})
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def timed(url: str, budget_s: float, **kw) -> tuple[HeartbeatResult, float]:
    t0 = time.monotonic()
    r = beat(url, budget_s, **kw)
    return r, time.monotonic() - t0


def test_one_get_per_beat_with_the_push_fields(caplog):
    with Kuma() as kuma:
        # the URL as Uptime Kuma shows it for copying: its own status/msg/ping are replaced
        url = f"http://127.0.0.1:{kuma.port}/api/push/{TOKEN}?status=up&msg=OK&ping="
        r = beat(url, 5.0, fields={"status": "up", "msg": "177 điểm, 3 mất kết nối", "ping": 1234})
        assert r.ok and r.status == 200 and r.reason is None and 0 < r.elapsed_ms < 5000
        assert kuma.requests == [(f"/api/push/{TOKEN}", {"status": ["up"], "msg": ["177 điểm, 3 mất kết nối"],
                                                          "ping": ["1234"]})]
        r = beat(f"http://127.0.0.1:{kuma.port}/api/push/{TOKEN}", 5.0)  # no fields: the URL as it is
        assert r.ok and len(kuma.requests) == 2 and kuma.requests[1] == (f"/api/push/{TOKEN}", {})


def test_an_unknown_token_is_not_ok_and_the_token_is_never_told(caplog):
    caplog.set_level(logging.DEBUG, logger="wanmon.heartbeat")
    with Kuma() as kuma:
        r = beat(f"http://127.0.0.1:{kuma.port}/api/push/wrong{TOKEN}", 5.0)
    assert not r.ok and r.status == 404
    assert r.reason == f"http://127.0.0.1:{kuma.port} answered HTTP 404"
    assert TOKEN not in caplog.text and f"heartbeat failed to=http://127.0.0.1:{kuma.port}" in caplog.text


def test_a_dead_port_is_not_ok_at_once():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r, took = timed(f"http://127.0.0.1:{port}/api/push/{TOKEN}", 5.0)
    assert not r.ok and r.status is None and "connection refused" in r.reason and TOKEN not in r.reason
    assert took < 1.0


@pytest.mark.parametrize("server", [SilentServer, lambda: DripServer(drip_s=0.1)], ids=["silent", "drip"])
def test_a_server_that_never_finishes_its_answer_costs_the_budget_and_no_more(server):
    with server() as srv:
        r, took = timed(f"{srv.url}/api/push/{TOKEN}", 1.5)
        assert srv.connections == 1  # it did get the request
    assert not r.ok and r.status is None
    assert r.reason == "heartbeat to " + srv.url + ": no complete answer within 1.5 s (deadline)"
    assert 1.4 <= took <= 1.5 + MARGIN_S, took
    if isinstance(srv, DripServer):
        assert srv.bytes_sent > 10  # every read got a byte: only an overall deadline stops it


def test_a_tls_handshake_dripped_costs_the_budget_and_no_more():
    with TLSDripServer(drip_s=0.1) as srv:
        r, took = timed(f"https://127.0.0.1:{srv.port}/api/push/{TOKEN}", 1.0)
    assert not r.ok and "deadline" in r.reason and 0.9 <= took <= 1.0 + MARGIN_S, (r, took)


def test_https_with_a_trusted_certificate_and_with_an_untrusted_one(tmp_path, monkeypatch):
    ctx, cert = tls_context(tmp_path)
    with Kuma(tls=ctx) as kuma:
        url = f"https://127.0.0.1:{kuma.port}/api/push/{TOKEN}"
        r = beat(url, 5.0)
        assert not r.ok and r.reason.startswith(f"https://127.0.0.1:{kuma.port}: TLS certificate not trusted")
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        r = beat(url, 5.0, fields={"status": "up"})
        assert r.ok and r.status == 200 and kuma.requests == [(f"/api/push/{TOKEN}", {"status": ["up"]})]


def test_a_broken_answer_or_a_bad_url_is_a_result_not_an_exception():
    with ClosingServer() as srv:  # "HTTP/1.1 2", then closed
        r = beat(f"{srv.url}/x", 2.0)
    assert not r.ok and r.status is None and "not a valid HTTP answer" in r.reason
    with ClosingServer(partial=b"HTTP/1.1 200 OK\r\n") as srv:  # a status line, then closed: not a whole answer
        r = beat(f"{srv.url}/x", 2.0)
    assert not r.ok and "IncompleteAnswer" in r.reason
    for url in ("ftp://127.0.0.1/x", "http:///nohost"):
        r = beat(url, 1.0)
        assert not r.ok and r.reason


# ---------------------------------------------------------------------------
# wired: `wanmon check` beats once per recorded cycle, an output of its own


class _SilentTimed(SilentServer):
    """Silent, and says when the heartbeat's connection arrived."""

    accepted_at: float | None = None

    def handle(self, conn):
        if self.accepted_at is None:
            self.accepted_at = time.time()
        super().handle(conn)


def _check_config(tmp_path, url: str, budget_s: float = 5) -> str:
    from conftest import MINIMAL

    text = f'[agent]\nheartbeat_url = "{url}"\nheartbeat_budget_s = {budget_s}\n\n' + MINIMAL
    (tmp_path / "sites.toml").write_text(text, encoding="utf-8")
    return str(tmp_path / "sites.toml")


def test_check_beats_once_per_recorded_cycle(tmp_path):
    from conftest import wanmon

    with Kuma() as kuma:
        cfg = _check_config(tmp_path, f"http://127.0.0.1:{kuma.port}/api/push/{TOKEN}?status=up&msg=OK&ping=")
        for n in (1, 2, 3):
            r = wanmon("--config", cfg, "check", cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert len(kuma.requests) == n
        r = wanmon("--config", cfg, "check", "--dry-run", cwd=tmp_path)  # records nothing: no beat
        assert r.returncode == 0, r.stderr
        assert len(kuma.requests) == 3
    path, query = kuma.requests[-1]
    assert path == f"/api/push/{TOKEN}"
    assert query["status"] == ["up"] and query["msg"][0].startswith("cycle 3: 3 sites")
    assert int(query["ping"][0]) >= 0
    st = json.loads(wanmon("--config", cfg, "status", "--json", cwd=tmp_path).stdout)
    assert st["outputs"]["heartbeat"]["failing_since"] is None and st["outputs"]["heartbeat"]["ok_ts"]


def test_a_silent_watcher_never_delays_the_page_and_is_reported(tmp_path):
    from conftest import wanmon

    with _SilentTimed() as silent:
        cfg = _check_config(tmp_path, f"{silent.url}/ping/{TOKEN}", budget_s=2)
        t0 = time.monotonic()
        r = wanmon("--config", cfg, "check", cwd=tmp_path)
        took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr  # the cycle and its page are fine; the beat failed alone
    page = tmp_path / "public" / "index.html"
    assert silent.accepted_at is not None
    assert page.stat().st_mtime <= silent.accepted_at  # the page was written before the beat began
    assert took < 2 + 10  # the beat's budget bounds the check's tail (python start-up aside)
    assert TOKEN not in r.stderr
    st = json.loads(wanmon("--config", cfg, "status", "--json", cwd=tmp_path).stdout)
    hb = st["outputs"]["heartbeat"]
    assert hb["failing_since"] is not None and "deadline" in hb["error"] and TOKEN not in hb["error"]
