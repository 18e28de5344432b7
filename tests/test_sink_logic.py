"""Line protocol encoding and the spool's drain rules, with a scripted writer (logic only;
the real-server tests are in test_influx_integration.py)."""

from __future__ import annotations

import pytest

from wanmon.config import InfluxSettings, InfluxSpec
from wanmon.lineproto import cycle_points, line
from wanmon.sink import WriteResult, drain
from wanmon.model import Observation
from wanmon.store import Store


def test_line_escaping_round_trip_rules():
    ln = line("wanmon_icmp", {"site_name": 'UBND huyện Tiên Du, "x"=y', "district": None, "level": "commune"},
              {"loss_pct": 33.3, "sent": 3, "status": 'say "hi"\\now', "rtt_avg_ms": None}, 1.5)
    assert ln == ('wanmon_icmp,level=commune,site_name=UBND\\ huyện\\ Tiên\\ Du\\,\\ "x"\\=y '
                  'loss_pct=33.3,sent=3i,status="say \\"hi\\"\\\\now" 1500000000')
    assert line("m", {"a": "b"}, {"x": None}, 1) is None  # no field: no point
    assert "\n" not in line("m", {"a": "two\nlines"}, {"d": "x\ny"}, 1)


def _obs(site="a", ts=100.0):
    return Observation(site_id=site, name="A", level="province", district=None, address="127.0.0.1", ts=ts,
                       status="down", reason="no reply", sent=3, received=0, loss_pct=100.0, rtt_min_ms=None,
                       rtt_avg_ms=None, rtt_max_ms=None, jitter_ms=None)


def test_cycle_points_omit_unknown_fields_and_use_sample_time():
    pts = cycle_points([_obs()], [], {"cycle_ms": 12.5, "sites": 1}, "host1", 100.0)
    icmp = next(p for p in pts if p.startswith("wanmon_icmp"))
    assert "rtt_avg_ms" not in icmp and "up=0i" in icmp and 'status="down"' in icmp
    assert icmp.endswith(" 100000000000")
    assert any(p.startswith("wanmon_agent,host=host1 ") for p in pts)


class Scripted:
    """A writer that answers from a script (status per call) and records what it got."""

    def __init__(self, script):
        self.script = list(script)
        self.bodies: list[list[str]] = []

    def write(self, body: bytes) -> WriteResult:
        lines = body.decode().strip().split("\n")
        self.bodies.append(lines)
        step = self.script.pop(0) if self.script else 204
        if callable(step):
            step = step(lines)
        if step == 204:
            return WriteResult(True, 204)
        if step is None:
            return WriteResult(False, None, "cannot reach server")
        status, retry = (step, None) if isinstance(step, int) else step
        return WriteResult(False, status, f"HTTP {status}", retry)

    def close(self):
        pass


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "w.db")
    yield s
    s.close()


def spec(**kw):
    return InfluxSpec(InfluxSettings(url="http://127.0.0.1:1", batch_size=kw.pop("batch_size", 4), **kw), None)


def fill(store, n, start=0):
    store.record_cycle(1, 2, [], points=[f"m v={i}i {i}" for i in range(start, start + n)])


def test_drain_in_order_and_ack(store):
    fill(store, 10)
    w = Scripted([204, 204, 204])
    rep = drain(store, spec(), 5, w)
    assert [ln for b in w.bodies for ln in b] == [f"m v={i}i {i}" for i in range(10)]
    assert (rep.sent, rep.remaining, store.spool_stats()["points"]) == (10, 0, 0)


def test_connection_failure_keeps_everything(store):
    fill(store, 10)
    rep = drain(store, spec(), 5, Scripted([None]))
    assert rep.sent == 0 and rep.remaining == 10 and "cannot reach" in rep.error
    assert store.spool_stats()["last_error"] == "cannot reach server"


def test_503_then_ok_is_retried_in_order(store):
    fill(store, 4)
    w = Scripted([503, 204])
    rep = drain(store, spec(), 10, w)
    assert rep.sent == 4 and w.bodies[0] == w.bodies[1]


def test_retry_after_past_budget_defers_next_runs(store):
    fill(store, 4)
    rep = drain(store, spec(), 1, Scripted([(429, 3600)]))
    assert rep.deferred and rep.remaining == 4
    w = Scripted([])
    rep2 = drain(store, spec(), 1, w)
    assert rep2.deferred and w.bodies == []  # respected across runs (cron)


def test_400_isolates_and_quarantines_the_bad_line(store):
    fill(store, 8)
    bad = "m v=5i 5"
    w = Scripted([lambda lines: 400 if bad in lines else 204] * 20)
    rep = drain(store, spec(batch_size=8), 10, w)
    assert rep.sent == 7 and rep.quarantined == 1 and rep.remaining == 0
    assert store.spool_stats()["quarantined"] == 1
    delivered = [ln for b in w.bodies if bad not in b for ln in b]  # the batches the server accepted
    assert delivered == [f"m v={i}i {i}" for i in range(8) if i != 5]  # in order, each once


def test_413_splits_the_batch(store):
    fill(store, 8)
    w = Scripted([lambda lines: 413 if len(lines) > 2 else 204] * 20)
    rep = drain(store, spec(batch_size=8), 10, w)
    accepted = [b for b in w.bodies if len(b) <= 2]
    assert rep.sent == 8 and [ln for b in accepted for ln in b] == [f"m v={i}i {i}" for i in range(8)]


def test_spool_bound_drops_oldest_and_counts(store):
    store.record_cycle(1000, 1001, [], points=[f"m v={i}i {i}" for i in range(10)], spool_limits=(6, 3600))
    st = store.spool_stats()
    assert st["points"] == 6 and st["dropped"] == 4
    assert [r[1] for r in store.spool_head(100)] == [f"m v={i}i {i}" for i in range(4, 10)]
    # age bound: everything older than max age goes
    store.record_cycle(1000 + 7200, 1000 + 7201, [], points=["m v=99i 99"], spool_limits=(6, 3600))
    assert store.spool_stats()["points"] == 1 and store.spool_stats()["dropped"] == 10


def test_the_influx_http_stack_names_no_private_part_of_another_library():
    """Issue 21: a security release of urllib3 or Python must not be able to break the writes
    silently. The writes, `influx check` and InfluxQL run on wanmon/httpclient.py (sockets, ssl,
    http.client.parse_headers: documented APIs only)."""
    import re
    from pathlib import Path

    private = re.compile(r"\._create_connection|sslsocket_class|\._get_socket|urllib3\.(connection|connectionpool)"
                         r"|\._sslobj|import urllib3|influxdb_client")
    wanmon = Path(__file__).resolve().parent.parent / "wanmon"
    for name in ("sink.py", "influxql.py", "httpclient.py"):
        hits = [ln for ln in (wanmon / name).read_text(encoding="utf-8").splitlines() if private.search(ln)]
        assert hits == [], (name, hits)
