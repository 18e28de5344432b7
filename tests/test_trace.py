"""The pure parts of finding the break: [[hops]] validation, naming hops, where a path stops,
parents read off paths and LLDP neighbours, topology's patch, the store's good paths, and
which ICMP answers a trace accepts. The network parts run in tests/test_trace_lab.py."""

from __future__ import annotations

import socket
import struct
import textwrap
from pathlib import Path

import pytest
from conftest import MINIMAL

from wanmon.config import ConfigError, TraceSettings, load
from wanmon.model import Hop, OutagePath, SiteState, Trace
from wanmon.store import Store
from wanmon.topology import TRACEROUTE, by_lldp, by_traceroute, patch, suggest
from wanmon.trace import Names, Pacer, _Answer, _Tracer, outage_json, parent_on_path, plan, stops

# MINIMAL: dc-core 127.0.0.1 (province) <- tien-du 127.10.2.1 (district) <- tien-du-phat-tich ::1
HOPS = textwrap.dedent(
    """\
    [[hops]]
    address = "127.107.0.1"
    name = "Router VNPT Tiên Du"

    [[hops]]
    address = "127.107.1.254"
    name = "UBND huyện Tiên Du (cổng WAN)"
    site = "tien-du"
    """
)


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load(path)
    return ei.value.problems


def test_hops_are_read_with_their_sites(write_config):
    cfg = load(write_config(MINIMAL + HOPS))
    assert [(h.address, h.name, h.site) for h in cfg.hops] == [
        ("127.107.0.1", "Router VNPT Tiên Du", None),
        ("127.107.1.254", "UBND huyện Tiên Du (cổng WAN)", "tien-du"),
    ]
    assert cfg.trace == TraceSettings() and load(write_config()).hops == ()


@pytest.mark.parametrize(
    "edit,words,line",
    [
        (lambda h: h.replace('"127.107.0.1"', '"vnpt-router.example"'), ["[[hops]] #1", "must be an IP address"], 37),
        (lambda h: h.replace('"127.107.1.254"', '"127.107.0.1"'), ["[[hops]] #2", "duplicate address", "line 36"], 41),
        (lambda h: h.replace('"127.107.0.1"', '"127.10.2.1"'), ["[[hops]] #1", "address of site 'tien-du'"], 37),
        (
            lambda h: h.replace('site = "tien-du"', 'site = "tien-duu"'),
            ["unknown site 'tien-duu'", "did you mean 'tien-du'"],
            43,
        ),
        (lambda h: h.replace('name = "Router VNPT Tiên Du"\n', ""), ["[[hops]] #1", "missing required key 'name'"], 36),
        (lambda h: h.replace("site = ", "sitee = "), ["[[hops]] #2", "unknown key 'sitee'", "did you mean 'site'"], 43),
    ],
)
def test_every_hops_problem_names_its_line(write_config, edit, words, line):
    path = write_config(MINIMAL + edit(HOPS))
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{line}: "), problem
    for w in words:
        assert w in problem, problem


def _trace(*hops: tuple[str | None, bool], reached: bool) -> Trace:
    return Trace(
        "x", "x", 0.0, tuple(Hop(d, a, None if a is None else 1.0, u) for d, (a, u) in enumerate(hops, 1)), reached
    )


@pytest.fixture
def names(write_config) -> Names:
    return Names.of(load(write_config(MINIMAL + HOPS)))


def test_a_hop_is_named_by_its_site_or_its_hops_entry(names):
    assert names.hop("127.10.2.1") == "127.10.2.1 (UBND huyện Tiên Du)"
    assert (names.site("127.10.2.1"), names.site("127.107.1.254"), names.site("127.107.0.1")) == ("tien-du", "tien-du", None)
    assert names.hop("127.107.0.1") == "127.107.0.1 (Router VNPT Tiên Du)"
    assert names.hop("127.109.9.9") == "127.109.9.9" and names.site("127.109.9.9") is None


GOOD = _trace(("127.107.0.1", False), ("127.107.1.254", False), ("127.0.0.1", False), ("::1", False), reached=True)


@pytest.mark.parametrize(
    "lang,path,good,text",
    [
        (
            "vi",
            _trace(("127.107.0.1", False), ("127.107.1.254", True), reached=False),
            GOOD,
            "đường truyền dừng sau 127.107.1.254 (UBND huyện Tiên Du (cổng WAN)), hop 2 của 4",
        ),
        (
            "en",
            _trace(("127.107.0.1", False), ("127.107.1.254", True), reached=False),
            GOOD,
            "the path stops after 127.107.1.254 (UBND huyện Tiên Du (cổng WAN)), hop 2 of 4",
        ),
        (
            "vi",
            _trace(("127.107.0.1", False), (None, False), reached=False),
            None,
            "đường truyền dừng sau 127.107.0.1 (Router VNPT Tiên Du), hop 1",
        ),
        ("en", _trace(("127.109.9.9", False), reached=False), GOOD, "the path stops after 127.109.9.9, hop 1 of 4"),
        ("vi", _trace(reached=False), GOOD, "đường truyền không có hop nào trả lời"),
        ("en", _trace((None, False), reached=False), GOOD, "no hop on the path answers"),
        ("vi", GOOD, GOOD, None),
    ],
)
def test_where_a_path_stops(names, lang, path, good, text):
    assert stops(lang, path, good, names) == text


def test_the_last_answer_is_never_the_target():
    assert GOOD.last_answer == GOOD.hops[2]
    assert _trace((None, False), ("::1", False), reached=True).last_answer is None
    assert _trace(("a", False), (None, False), reached=False).last_answer == Hop(1, "a", 1.0)


def test_the_parent_on_a_path_is_the_last_known_site_before_it(names):
    assert parent_on_path("tien-du-phat-tich", GOOD, names) == "dc-core"  # 127.0.0.1 just before it
    skip = _trace(("127.107.1.254", False), ("127.109.9.9", False), ("::1", False), reached=True)
    assert parent_on_path("tien-du-phat-tich", skip, names) == "tien-du"  # its router's other interface
    assert parent_on_path("x", _trace(("127.107.0.1", False), ("::1", False), reached=True), names) is None
    assert parent_on_path("tien-du-phat-tich", _trace(("127.107.1.254", False), reached=False), names) is None


# -- topology -------------------------------------------------------------------------------


def test_suggestions_only_where_the_evidence_names_another_parent(write_config, names):
    cfg = load(write_config(MINIMAL + HOPS))
    paths = {
        "tien-du": _trace(("127.107.0.1", False), ("127.10.2.1", False), reached=True),  # no site before it
        "tien-du-phat-tich": GOOD,  # ... -> tien-du's WAN port -> dc-core -> it: dc-core, not tien-du
    }
    traced = by_traceroute(cfg, paths, names)
    assert traced == {"tien-du-phat-tich": "dc-core"}
    got = suggest(cfg, traced, {}, {("tien-du-phat-tich", TRACEROUTE): "traceroute: the path"})
    assert [s.as_json() for s in got] == [
        {
            "site": "tien-du-phat-tich",
            "configured_parent": "tien-du",
            "discovered_parent": "dc-core",
            "evidence": ["traceroute"],
        }
    ]
    assert got[0].details == ("traceroute: the path",)
    both = suggest(cfg, traced, {"tien-du-phat-tich": "dc-core"}, {})
    assert both[0].evidence == ("traceroute", "lldp")
    assert suggest(cfg, {"tien-du-phat-tich": "tien-du"}, {"tien-du-phat-tich": "tien-du"}, {}) == []


def test_the_lldp_parent_is_the_neighbour_a_hop_nearer(write_config):
    cfg = load(write_config(MINIMAL))
    paths = {
        "dc-core": _trace(("127.0.0.1", False), reached=True),
        "tien-du": _trace(("127.0.0.1", False), ("127.10.2.1", False), reached=True),
        "tien-du-phat-tich": _trace(("127.0.0.1", False), ("127.10.2.1", False), ("::1", False), reached=True),
    }
    neighbours = {"tien-du": {"dc-core", "tien-du-phat-tich"}, "tien-du-phat-tich": {"tien-du"}, "dc-core": {"tien-du"}}
    assert by_lldp(cfg, neighbours, paths) == {"tien-du": "dc-core", "tien-du-phat-tich": "tien-du"}
    # without paths, the neighbour of the higher level; two alike name none
    assert by_lldp(cfg, neighbours, {}) == {"tien-du": "dc-core", "tien-du-phat-tich": "tien-du"}
    assert by_lldp(cfg, {"tien-du-phat-tich": {"tien-du", "dc-core"}}, {}) == {}


def test_the_patch_sets_or_adds_the_parent_and_the_result_validates(write_config):
    path = write_config(MINIMAL.replace('parent = "dc-core"\n', ""))  # tien-du without a parent
    cfg = load(path)
    sg = suggest(cfg, {"tien-du": "dc-core", "tien-du-phat-tich": "dc-core"}, {}, {})
    diff, skipped = patch(cfg, path.read_text(encoding="utf-8"), sg)
    assert skipped == []
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ['+parent = "dc-core"', '-parent = "tien-du"', '+parent = "dc-core"']
    import subprocess

    assert subprocess.run(["patch", "-p0", str(path)], input=diff, text=True, capture_output=True).returncode == 0
    after = load(path)
    assert {s.id: s.parent for s in after.sites} == {
        "dc-core": None,
        "tien-du": "dc-core",
        "tien-du-phat-tich": "dc-core",
    }


def test_a_dated_parent_is_left_to_the_operator(write_config):
    dated = MINIMAL.replace(
        'address = "::1"\n',
        'address = "::1"\n[[sites.changes]]\nat = 2025-07-01T00:00:00+07:00\nparent = "dc-core"\n',
    )
    path = write_config(dated)
    cfg = load(path)
    sg = suggest(cfg, {"tien-du-phat-tich": "dc-core"}, {}, {})
    diff, skipped = patch(cfg, path.read_text(encoding="utf-8"), sg)
    assert (diff, skipped) == ("", ["tien-du-phat-tich"])


# -- the store ------------------------------------------------------------------------------


def test_good_paths_keep_the_last_path_that_reached(tmp_path):
    s = Store.open(tmp_path / "w.db")
    try:
        first = Trace("a", "127.0.0.2", 100.0, (Hop(1, "127.0.0.1", 0.5), Hop(2, "127.0.0.2", 0.7)), True)
        broken = Trace("a", "127.0.0.2", 200.0, (Hop(1, "127.0.0.1", 0.5, True),), False)
        silent = Trace("b", "127.0.0.3", 100.0, (Hop(1, None, None), Hop(2, "127.0.0.3", 1.0)), True)
        s.record_good_paths({"a": first, "b": silent})
        s.record_good_paths({"a": broken})  # not a good path: the first one stays
        got = s.good_paths()
        assert got["a"].hops == first.hops and got["a"].ts == 100.0 and got["a"].reached
        assert got["b"].hops == silent.hops
        later = Trace("a", "127.0.0.2", 300.0, (Hop(1, "127.0.0.9", 0.4), Hop(2, "127.0.0.2", 0.6)), True)
        s.record_good_paths({"a": later})
        assert s.good_paths()["a"].hops == later.hops
    finally:
        s.close()


# -- which answers a trace takes -------------------------------------------------------------


class _RawV4:
    """What _Tracer reads of its socket: a raw IPv4 ICMP socket (no I/O in these tests)."""

    family, raw, request_type, kernel_id, sock = socket.AF_INET, True, 8, None, None


def _ip(src: str, dst: str, payload: bytes, proto: int = 1) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + payload
    )


def test_an_answer_counts_only_if_it_quotes_our_probe_to_our_target():
    t = _Tracer("198.19.2.2", TraceSettings(), _RawV4())  # type: ignore[arg-type]
    t.sent = [(1, 0), (2, 0), (3, 0)]
    probe = struct.pack("!BBHHH", 8, 0, 0, t.ident, (t.base + 1) & 0xFFFF) + t.token + (1).to_bytes(4, "big")
    quoted = _ip("198.19.0.1", "198.19.2.2", probe[:8])  # RFC 792: the header and 8 bytes
    te = struct.pack("!BBHI", 11, 0, 0, 0) + quoted
    assert t._parse(_ip("198.19.1.2", "198.19.0.1", te), "198.19.1.2") == (1, "time", "198.19.1.2")
    unreach = struct.pack("!BBHI", 3, 0, 0, 0) + quoted
    assert t._parse(_ip("198.19.1.2", "198.19.0.1", unreach), "198.19.1.2") == (1, "unreachable", "198.19.1.2")
    other_target = struct.pack("!BBHI", 11, 0, 0, 0) + _ip("198.19.0.1", "198.19.5.2", probe[:8])
    assert t._parse(_ip("198.19.1.2", "198.19.0.1", other_target), "198.19.1.2") is None
    other_id = bytearray(probe)
    other_id[4:6] = struct.pack("!H", (t.ident + 1) & 0xFFFF)
    foreign = struct.pack("!BBHI", 11, 0, 0, 0) + _ip("198.19.0.1", "198.19.2.2", bytes(other_id[:8]))
    assert t._parse(_ip("198.19.1.2", "198.19.0.1", foreign), "198.19.1.2") is None
    echo = struct.pack("!BBHHH", 0, 0, 0, t.ident, (t.base + 2) & 0xFFFF) + t.token + (2).to_bytes(4, "big")
    assert t._parse(_ip("198.19.2.2", "198.19.0.1", echo), "198.19.2.2") == (2, "echo", "198.19.2.2")
    assert t._parse(_ip("198.19.9.9", "198.19.0.1", echo), "198.19.9.9") is None  # an echo from another host
    wrong_token = echo[:8] + bytes(8) + echo[16:]
    assert t._parse(_ip("198.19.2.2", "198.19.0.1", wrong_token), "198.19.2.2") is None


def test_a_late_answer_stays_at_its_own_distance():
    """icmplib.traceroute numbers each distance's probes 0..count-1, so a late answer to distance
    2 is taken for distance 3; here the probe number says the distance."""
    t = _Tracer("198.19.2.2", TraceSettings(), _RawV4())  # type: ignore[arg-type]
    t.sent = [(2, 0), (3, 0)]  # probe 0 went to distance 2, probe 1 to distance 3
    probe0 = struct.pack("!BBHHH", 8, 0, 0, t.ident, t.base) + bytes(4)
    late = struct.pack("!BBHI", 11, 0, 0, 0) + _ip("198.19.0.1", "198.19.2.2", probe0)
    t._handle(_ip("198.19.1.2", "198.19.0.1", late), [], "198.19.1.2", False)
    assert set(t.answers) == {2} and t.answers[2].address == "198.19.1.2"


class _Limited:
    """A router with no route on, at distance `at`: it answers "unreachable" to every probe that
    reaches it (distance >= at), through a token bucket like Linux's per-peer ICMP limit (one
    answer every `period_s`, a burst of 5), starting with `tokens_s` of credit; nearer routers
    answer "time exceeded" every time. Answers take no time."""

    def __init__(self, at: int, period_s: float, tokens_s: float, silent: bool = False):
        self.at, self.period, self.tokens, self.last, self.silent = at, period_s, tokens_s, 0.0, silent

    def answer(self, d: int, now: float) -> tuple[str, str] | None:
        if self.silent and d >= self.at:
            return None  # a router that never answers, and nothing beyond it
        if d < self.at:
            return f"127.108.{d - 1}.2", "time"
        self.tokens = min(self.tokens + now - self.last, 5 * self.period)
        self.last = now
        if self.tokens < self.period:
            return None  # dropped by the limiter
        self.tokens -= self.period
        return f"127.108.{self.at - 1}.2", "unreachable"


def _run_on(t: _Tracer, net: _Limited, budget_s: float = 10.0) -> float:
    """_Tracer's schedule (its run(), without the socket), the clock injected: the trace's end."""
    now = next_send = 0.0
    while now < budget_s:
        d, wake = t._due(now)
        if d is not None and now >= next_send:
            t.tries[d] += 1
            t.last_tx[d] = now
            t.sent.append((d, 0))
            next_send = now + t.spec.gap_ms / 1000.0
            got = net.answer(d, now)
            if got is not None and d not in t.answers:
                t.answers[d] = _Answer(got[0], 0.1, got[1])
            continue
        if d is None and wake is None:
            return now
        now = min(x for x in (wake, next_send if d is not None else None) if x is not None)
    return budget_s


@pytest.mark.parametrize("period_s", [0.5, 1.0, 1.5, 2.0])
def test_a_rate_limited_router_is_placed_at_its_own_distance_whatever_credit_it_had(period_s):
    """The sweep's pings to a cut site spend the router's ICMP credit just before the trace; which
    of the trace's probes the limiter lets through then depends on the instant. The router that
    said "unreachable" must stand at its own distance (2), not at the farther one whose answer
    got through first: the silent distance below it is asked until it answers (retries spaced
    so they do not keep in step with the limiter). Every start from no credit to a full token."""
    spec = TraceSettings(timeout_ms=1000)
    wrong = []
    for ms in range(0, int(period_s * 1000) + 100, 5):
        t = _Tracer("127.108.2.2", spec, _RawV4())  # type: ignore[arg-type]
        ends = _run_on(t, _Limited(2, period_s, ms / 1000))
        hops, reached = t.hops()
        if reached or [h.address for h in hops] != ["127.108.0.2", "127.108.1.2"] or not hops[-1].unreachable:
            wrong.append((ms, [(h.distance, h.address) for h in hops]))
        assert ends < spec.budget_s
    assert wrong == []


def test_a_silent_distance_is_asked_attempts_times_spaced_out_and_no_more():
    """A path silent after distance 1 (no router answers): each silent distance gets `attempts`
    probes, the retries 1 and 1.5 timeouts apart, and the trace ends a timeout after the last."""
    spec = TraceSettings(timeout_ms=1000, attempts=3)
    t = _Tracer("127.108.2.2", spec, _RawV4())  # type: ignore[arg-type]
    ends = _run_on(t, _Limited(2, 1.0, 0.0, silent=True))
    assert [t.tries[d] for d in range(1, 8)] == [1, 3, 3, 3, 3, 3, 0]  # distances 2-6: five past the farthest
    assert 3.5 <= ends <= 3.5 + 6 * spec.gap_ms / 1000.0
    assert [(h.distance, h.address) for h in t.hops()[0]] == [(1, "127.108.0.2")]


# -- LLDP / CDP neighbours -------------------------------------------------------------------


def test_neighbours_from_the_lldp_and_cdp_tables(names):
    from wanmon.probes.lldp import Neighbour, Neighbours, neighbours_of
    from wanmon.topology import neighbour_sites

    rows = {
        (100, 2, 1): {"lldp_name": b"tien-du-router"},
        (100, 2, 1, 1, 4, 127, 107, 1, 254): {"lldp_addr": 2},  # its management address, in the index
        (100, 3, 7): {"lldp_name": b"unknown-box"},
        (100, 3, 7, 2, 16, *([0] * 15), 1): {"lldp_addr": 2},  # ::1
        (100, 4, 9, 1, 3, 127, 107, 1): {"lldp_addr": 2},  # a length that does not fit: no address
        (5, 1): {"cdp_addr": bytes([127, 0, 0, 1]), "cdp_name": b"core.example"},
    }
    got = neighbours_of(rows)
    assert got == (
        Neighbour("lldp", "tien-du-router", "127.107.1.254"),
        Neighbour("lldp", "unknown-box", "::1"),
        Neighbour("lldp", None, None),
        Neighbour("cdp", "core.example", "127.0.0.1"),
    )
    read = {"tien-du-phat-tich": Neighbours("ok", None, got), "tien-du": Neighbours("timeout", "no answer"), "x": None}
    sites, how = neighbour_sites(read, names, {"unknown-box": "tien-du"})
    # by address: 127.107.1.254 is tien-du's ([[hops]] site), ::1 the site itself (left out), 127.0.0.1 dc-core
    assert sites == {"tien-du-phat-tich": {"tien-du", "dc-core"}}
    assert how["tien-du-phat-tich"] == {"tien-du": "127.107.1.254, tien-du-router", "dc-core": "127.0.0.1, core.example"}


# -- the agent's own traces: which ones a cycle asks for (wanmon.trace.plan) ------------------


def _state(sid: str, status: str, since: float = 1000.0) -> SiteState:
    return SiteState(sid, sid, "commune", None, sid, status, since, 5000.0, 0, None, None, None, None, None)


def _plan(states, good=None, traced=(), refresh_h=24.0, per_cycle=8, on_outage=True, interval_s=60.0, ips=None):
    spec = TraceSettings(refresh_h=refresh_h, per_cycle=per_cycle, on_outage=on_outage)
    ips = {s.site_id: f"ip-{s.site_id}" for s in states} if ips is None else ips
    jobs = plan(spec, states, ips, good or {}, set(traced), 100_000.0, interval_s)  # now: 100,000 s
    return [(j.why, j.site_id, j.start_ts) for j in jobs]


def test_300_communes_behind_3_down_districts_are_3_outage_traces():
    """One trace per root cause: the communes behind a down district are unreachable, never traced;
    a cycle with outages refreshes no good path."""
    states = [_state(f"d{k}", "down", 4000.0) for k in range(3)]
    states += [_state(f"d{k}-c{j}", "unreachable", 4000.0) for k in range(3) for j in range(100)]
    states += [_state(f"up{k}", "up") for k in range(50)]  # no good path: due, but not in this cycle
    assert _plan(states) == [("outage", f"d{k}", 4000.0) for k in range(3)]


def test_an_incident_is_traced_once_and_a_new_one_again():
    states = [_state("a", "down", 4000.0), _state("b", "down", 4000.0)]
    assert _plan(states, traced={("a", 4000.0)}) == [("outage", "b", 4000.0)]
    # a's next outage (down since a later cycle) is another incident: traced again
    assert _plan([_state("a", "down", 9000.0)], traced={("a", 4000.0)}) == [("outage", "a", 9000.0)]
    assert _plan(states, traced={("a", 4000.0)}, on_outage=False) == []  # [trace] on_outage = false


def test_outages_beyond_per_cycle_wait_for_the_next_cycles_the_newest_first():
    states = [_state(f"s{k:02}", "down", 1000.0 + k) for k in range(20)]
    assert [sid for _w, sid, _t in _plan(states, per_cycle=8)] == [f"s{k:02}" for k in range(19, 11, -1)]
    traced = {(f"s{k:02}", 1000.0 + k) for k in range(12, 20)}  # the next cycle: those 8 have their path
    assert [sid for _w, sid, _t in _plan(states, traced=traced, per_cycle=8)] == [f"s{k:02}" for k in range(11, 3, -1)]


def test_a_site_without_an_address_is_not_traced():
    states = [_state("a", "down"), _state("b", "up")]
    assert _plan(states, ips={"a": None, "b": None}) == []


@pytest.mark.parametrize(
    "n,interval_s,refresh_h,per_cycle,want",
    [
        (10_000, 60.0, 24.0, 8, 8),  # 14 would go round in 12 h: per_cycle caps it
        (10_000, 60.0, 24.0, 20, 14),
        (177, 60.0, 24.0, 8, 1),  # at least one a cycle
        (177, 60.0, 0.5, 8, 8),
        (40, 60.0, 0.5, 8, 3),  # ceil(2 x 40 x 60 / 1800)
    ],
)
def test_good_paths_are_refreshed_a_few_a_cycle_never_all_at_once(n, interval_s, refresh_h, per_cycle, want):
    states = [_state(f"s{k:05}", "up") for k in range(n)]
    jobs = _plan(states, refresh_h=refresh_h, per_cycle=per_cycle, interval_s=interval_s)
    assert len(jobs) == want and {w for w, _s, _t in jobs} == {"refresh"}


def test_refresh_order_the_recovered_then_the_missing_then_the_oldest():
    now, day = 100_000.0, 86400.0
    states = [
        _state("fresh", "up", since=now - 10 * day),  # traced an hour ago: not due
        _state("old", "up", since=now - 10 * day),  # traced 2 days ago
        _state("older", "up", since=now - 10 * day),  # traced 3 days ago
        _state("missing", "up", since=now - 10 * day),
        _state("back", "up", since=now - 120),  # up again for 2 min; its path is from before
        _state("slow", "degraded", since=now - 10 * day),  # answers: refreshed like an up site
        _state("cut", "unreachable", since=now - 10 * day),  # never refreshed
    ]
    good = {"fresh": now - 3600, "old": now - 2 * day, "older": now - 3 * day, "back": now - 3600}
    # a cycle a day: room for all that are due (14 a cycle), per_cycle = 8
    assert [s for _w, s, _t in _plan(states, good=good, interval_s=day)] == [
        "back",
        "missing",
        "slow",
        "older",
        "old",
    ]
    assert _plan(states, good=good, interval_s=day, per_cycle=1) == [("refresh", "back", None)]
    assert _plan(states, good=good, interval_s=day, refresh_h=0) == []  # refresh_h = 0: never


def test_an_outage_path_as_json_tells_where_it_stops(names):
    broken = _trace(("127.107.0.1", False), ("127.107.1.254", True), reached=False)
    o = OutagePath("tien-du-phat-tich", 4000.0, broken, 4, 3000.0)
    got = outage_json(o, names, "vi")
    assert {k: got[k] for k in ("hop", "of", "address", "name", "site", "text", "reached", "good_ts")} == {
        "hop": 2,
        "of": 4,
        "address": "127.107.1.254",
        "name": "UBND huyện Tiên Du (cổng WAN)",
        "site": "tien-du",
        "text": "đường truyền dừng sau 127.107.1.254 (UBND huyện Tiên Du (cổng WAN)), hop 2 của 4",
        "reached": False,
        "good_ts": 3000.0,
    }
    assert [h["unreachable"] for h in got["hops"]] == [False, True]
    back = outage_json(OutagePath("x", 1.0, GOOD, None, None), names, "en")
    assert (back["reached"], back["hop"], back["text"]) == (True, None, None)


def test_outage_paths_one_per_incident_the_current_one_by_the_sites_state(tmp_path):
    s = Store.open(tmp_path / "w.db")
    try:
        broken = _trace(("127.107.0.1", False), ("127.107.1.254", True), reached=False)
        later = _trace(("127.107.0.1", True), reached=False)
        s.record_traces([OutagePath("a", 100.0, broken, 3, 50.0)], {})
        s.record_traces([OutagePath("a", 100.0, later, 3, 50.0)], {"b": GOOD})  # the same incident: kept once
        s.record_traces([OutagePath("a", 900.0, later, 3, 50.0)], {})
        got = s.outage_paths(0.0)
        assert [(o.site_id, o.start_ts, o.trace.hops) for o in got] == [
            ("a", 100.0, broken.hops),
            ("a", 900.0, later.hops),
        ]
        assert got[0].good_hops == 3 and got[0].good_ts == 50.0 and not got[0].trace.reached
        assert s.outage_paths(500.0)[0].start_ts == 900.0
        assert s.good_paths()["b"].hops == tuple(Hop(h.distance, h.address, h.rtt_ms) for h in GOOD.hops)
        assert s.outage_traced(["a", "b"]) == {("a", 100.0), ("a", 900.0)}
        # the current incident: the one that began when the site's recorded state went down
        for sid, status, since in (("a", "down", 900.0), ("b", "down", 100.0)):
            s.conn.execute(
                "INSERT INTO site_state (site_id, name, level, address, status, since, last_ts, last_cycle_id,"
                " consecutive_failures) VALUES (?, ?, 'commune', ?, ?, ?, 1000.0, 1, 3)",
                (sid, sid, sid, status, since),
            )
        assert {k: o.start_ts for k, o in s.current_outage_paths().items()} == {"a": 900.0}
        assert s.current_outage_paths(["b"]) == {}
        s.conn.execute("UPDATE site_state SET status = 'unreachable' WHERE site_id = 'a'")
        assert s.current_outage_paths() == {}  # behind a down parent now: not its own outage
        s.apply_retention(900.0 + 400 * 86400 + 1, 35, 400)
        assert s.outage_paths(0.0) == []  # kept as long as the incident log (events)
    finally:
        s.close()


def test_the_traces_in_flight_share_one_send_rate():
    """Pacer: each probe takes the next free slot of [icmp] rate_pps, whichever trace sends it."""
    p = Pacer(1000.0)  # a slot every millisecond
    assert [round(p.take(10.0), 6) for _ in range(4)] == [10.0, 10.001, 10.002, 10.003]  # 4 traces at once
    assert p.take(10.5) == 10.5  # later than the next free slot: at once
    assert round(p.take(10.5), 6) == 10.501
