"""wanmon/deadline.py against real sockets on 127.0.0.1: a deadline bounds a whole blocking
operation (connect, reads, a TLS handshake), not each read."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from fault_servers import SilentServer
from wanmon.deadline import Deadline, DeadlineExceeded, abort_all


@pytest.fixture
def silent():
    with SilentServer() as srv:
        yield srv


def test_a_blocked_read_returns_at_the_deadline_not_at_the_read_timeout(silent):
    t = time.monotonic()
    with Deadline(0.5, "read") as d:
        sock = d.connect(silent.host, silent.port, per_op=30)
        assert sock.gettimeout() <= 0.5  # never more than the time left
        sock.settimeout(30)  # a library that sets its own, long per-read timeout
        with sock:
            data = sock.recv(100)  # shut down by the watchdog: EOF
    took = time.monotonic() - t
    assert data == b"" and d.expired
    assert 0.45 < took < 0.9, took


def test_a_tls_handshake_with_a_silent_peer_ends_at_the_deadline(silent):
    """Wrapping detaches the watched plain socket: wrap_tls watches the TLS one before the
    handshake, so a peer that never sends its ServerHello is cut off too."""
    t = time.monotonic()
    with Deadline(0.5, "TLS") as d:
        sock = d.connect(silent.host, silent.port, per_op=30)
        with pytest.raises(DeadlineExceeded, match=r"TLS: no complete answer within 0.5 s \(deadline\)"):
            d.wrap_tls(ssl.create_default_context(), sock, "localhost", per_op=30)
    assert time.monotonic() - t < 0.9


def test_a_connect_that_gets_no_answer_ends_at_the_deadline():
    """A listener whose accept queue is full drops SYNs: connect() would wait for the kernel's
    SYN retries (minutes); the deadline ends it."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (nobody accepts)
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.2)
        t = time.monotonic()
        with Deadline(0.6, "connect") as d, pytest.raises(DeadlineExceeded):
            d.connect("127.0.0.1", port, per_op=30)
        assert 0.5 < time.monotonic() - t < 1.2
    finally:
        for c in fillers:
            c.close()
        ls.close()


def test_timeout_never_exceeds_the_time_left_and_raises_once_spent():
    with Deadline(0.3, "op") as d:
        assert d.timeout(10) <= 0.3
        assert d.timeout(0.05) == 0.05
        time.sleep(0.35)
        with pytest.raises(DeadlineExceeded):
            d.timeout(10)
    assert d.expired


def test_message_is_rounded_and_says_deadline():
    assert Deadline(3.27913, "InfluxDB write").message() == \
        "InfluxDB write: no complete answer within 3.3 s (deadline)"
    assert Deadline(5, "x").message() == "x: no complete answer within 5 s (deadline)"


def test_a_finished_operation_leaves_its_socket_alone(silent):
    """After __exit__ the watchdog must not shut a socket that lives on (a kept-alive connection)."""
    with Deadline(0.2, "short") as d:
        sock = d.connect(silent.host, silent.port)
    time.sleep(0.4)  # past the deadline
    with sock:
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # still connected: a read times out, no EOF
            sock.recv(1)
    assert not d.expired


def test_abort_all_fires_live_deadlines_at_once(silent):
    box = {}

    def blocked():
        with Deadline(30, "long") as d:
            sock = d.connect(silent.host, silent.port, per_op=30)
            box["d"] = d
            t = time.monotonic()
            box["data"] = sock.recv(1)
            box["took"] = time.monotonic() - t
            sock.close()

    th = threading.Thread(target=blocked)
    th.start()
    while "d" not in box:
        time.sleep(0.01)
    time.sleep(0.2)
    assert abort_all() >= 1
    th.join(5)
    assert not th.is_alive() and box["data"] == b"" and box["took"] < 1
