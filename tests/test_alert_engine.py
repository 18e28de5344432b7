"""The alert engine, table-driven: soft/hard, recovery, flapping, parents, maintenance,
reminders, the monitor-side guard (pure logic: no I/O)."""

from __future__ import annotations

import pytest

from wanmon.alerts.engine import evaluate, flap_pct
from wanmon.config import AlertSettings
from wanmon.model import Event

R = AlertSettings(noc=("noc@x.example",), guard_min_sites=5, guard_fraction=0.5)
PARENTS = {"core": None, "d1": "core", "c1": "d1", "c2": "d1", "p1": "core", "p2": "core", "p3": "core", "p4": "core"}
ALL_UP = {k: "up" for k in PARENTS}


def run(seq, rules=R, maintenance=(), start=0.0, step=60.0, states=None, guard=False):
    """Feed a sequence of {site: status} overrides (others up); return notifications per cycle."""
    states = states or {}
    out = []
    for i, over in enumerate(seq):
        statuses = {**ALL_UP, **over}
        states, notes, guard = evaluate(states, statuses, start + i * step, rules, PARENTS, maintenance, (), guard)
        out.append([(n.kind, n.site_id) for n in notes])
    return out, states


D, U = {"p1": "down"}, {}


@pytest.mark.parametrize("seq,expected", [
    ([D, D, U, U, U], [[], [], [], [], []]),  # 2 bad cycles: soft only, nothing sent
    ([D, D, D, U, U], [[], [], [("down", "p1")], [], [("recovery", "p1")]]),
    ([D, D, D, U, D, U, U], [[], [], [("down", "p1")], [], [], [], [("recovery", "p1")]]),  # 1 good is not recovery
    ([{"p1": "degraded"}] * 3 + [D] * 3, [[], [], [("degraded", "p1")], [], [], [("down", "p1")]]),
])
def test_soft_hard_recover(seq, expected):
    assert run(seq)[0] == expected


def test_district_down_lists_communes_and_no_down_per_commune():
    cyc = {"d1": "down", "c1": "unreachable", "c2": "unreachable"}
    notes, _ = run([cyc] * 3)
    assert notes[:2] == [[], []]
    kinds = sorted(notes[2])
    assert kinds == [("down", "d1"), ("unreachable", "c1"), ("unreachable", "c2")]
    # the DOWN carries the children
    statuses = {**ALL_UP, **cyc}
    states = {}
    for i in range(3):
        states, n, _ = evaluate(states, statuses, i * 60.0, R, PARENTS)
    down = next(x for x in n if x.kind == "down")
    assert down.children == ("c1", "c2")
    # told once: no repeat of UNREACHABLE (nor reminders for it) while it lasts
    for i in range(3, 300):
        states, n, _ = evaluate(states, statuses, i * 60.0, R, PARENTS)
        assert all(x.kind != "unreachable" for x in n)


def test_unreachable_notices_can_be_off():
    rules = R.model_copy(update={"notify_unreachable": False})
    notes, _ = run([{"d1": "down", "c1": "unreachable", "c2": "unreachable"}] * 3, rules)
    assert notes[2] == [("down", "d1")]


def test_reminders_every_4h_while_down():
    notes, _ = run([D] * (5 * 60 + 5))  # one cycle a minute, 5 h
    flat = [n for cyc in notes for n in cyc]
    assert flat == [("down", "p1"), ("reminder", "p1")]
    off = R.model_copy(update={"reminder_h": 0})
    assert [n for cyc in run([D] * 300, off)[0] for n in cyc] == [("down", "p1")]


def test_maintenance_silences_but_state_moves():
    notes, states = run([D] * 4, maintenance=["p1"])
    assert notes == [[], [], [], []] and states["p1"].hard == "down"
    notes2, _ = run([U, U], states=states)
    assert notes2 == [[], []]  # nothing was announced, so no recovery either


def test_flap_pct_known_histories():
    assert flap_pct("0" * 21) == 0.0
    assert flap_pct("01" * 10 + "0") == pytest.approx(100.0)
    # one change at the newest end weighs 1.2, at the oldest end 0.8 (out of 20 possible)
    assert flap_pct("0" * 20 + "1") == pytest.approx(100 * 1.2 / 20)
    assert flap_pct("1" + "0" * 20) == pytest.approx(100 * 0.8 / 20)


def test_flapping_one_notice_at_start_and_end():
    flappy = [D if i % 2 else U for i in range(30)] + [U] * 30
    notes, states = run(flappy)
    flat = [n for cyc in notes for n in cyc]
    assert flat == [("flap_start", "p1"), ("flap_end", "p1")]
    assert not states["p1"].flapping


def test_guard_when_most_sites_fail_one_mail_and_no_flood():
    everything = {k: "down" for k in PARENTS}
    notes, states = run([everything] * 10 + [U] * 3)
    flat = [n for cyc in notes for n in cyc]
    assert flat == [("guard", None), ("guard_end", None)]
    assert all(s.hard == "up" for s in states.values())


def test_restart_keeps_state_no_duplicate_down():
    notes, states = run([D] * 3)
    assert notes[2] == [("down", "p1")]
    # a new process gets the stored states back: no second DOWN, recovery still comes
    notes2, _ = run([D, D, U, U], states=states, start=1000)
    assert [n for cyc in notes2 for n in cyc] == [("recovery", "p1")]


def test_reboot_events_notify_with_their_figures():
    ev = Event(0.0, "p2", "reboot", "device restarted (…)", {"uptime_was_s": 86_400.0, "uptime_s": 120.0})
    old = Event(0.0, "p3", "reboot", "device restarted (…)", None)  # recorded before events had figures
    states, notes, _ = evaluate({}, ALL_UP, 0.0, R, PARENTS, (), [ev, old])
    assert [(n.kind, n.site_id, n.uptimes) for n in notes] == [("reboot", "p2", (86_400.0, 120.0)),
                                                               ("reboot", "p3", ())]


def test_maintenance_windows():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from wanmon.alerts.maintenance import active
    from wanmon.config import Maintenance

    tz = ZoneInfo("Asia/Ho_Chi_Minh")

    def at(s):
        return datetime.fromisoformat(s).replace(tzinfo=tz).timestamp()

    weekly = Maintenance(sites=("a",), days=("sun",), **{"from": "22:00"}, to="02:00")
    assert active(weekly, at("2026-11-29T23:00"), tz)  # Sunday night
    assert active(weekly, at("2026-11-30T01:59"), tz)  # past midnight, Monday
    assert not active(weekly, at("2026-11-30T02:00"), tz)
    assert not active(weekly, at("2026-11-28T23:00"), tz)  # Saturday
    once = Maintenance(districts=("D1",), start="2026-12-01T22:00", end="2026-12-02T02:00")
    assert active(once, at("2026-12-01T22:00"), tz) and not active(once, at("2026-12-02T02:00"), tz)


# -- the guard looks at root causes and at the agent's own upstream (issue 11) --------------

def _shipped_parents() -> dict[str, str | None]:
    import tomllib
    from pathlib import Path

    raw = tomllib.loads((Path(__file__).resolve().parents[1] / "sites.toml").read_text(encoding="utf-8"))
    return {s["id"]: s.get("parent") for s in raw["sites"]}


def _district_down(parents: dict[str, str | None], district: str) -> dict[str, str]:
    """The district's router down: it is down, every site below it unreachable, the rest up."""
    below = {district}
    while True:
        more = {s for s, p in parents.items() if p in below} - below
        if not more:
            break
        below |= more
    return {s: ("down" if s == district else "unreachable" if s in below else "up") for s in parents}


def _cycles(parents, statuses_seq, rules=R):
    states, guard, out = {}, False, []
    for i, statuses in enumerate(statuses_seq):
        states, notes, guard = evaluate(states, statuses, i * 60.0, rules, parents, (), (), guard)
        out.append(notes)
    return out, guard


SIX = {"core": None, "d": "core", "c1": "d", "c2": "d", "c3": "d", "c4": "d"}


@pytest.mark.parametrize("parents,district", [
    (SIX, "d"),                                       # 5 of 6 sites fail: one root cause
    (_shipped_parents(), "gia-binh"),                 # the shipped 177-site network
], ids=["6-sites", "177-sites"])
def test_a_district_down_with_all_its_communes_is_one_down_not_the_guard(parents, district):
    if district not in parents:  # the shipped ids: pick the district with the most communes
        counts = {p: sum(1 for q in parents.values() if q == p) for p in set(parents.values()) if p}
        district = max((d for d in counts if parents.get(d) == "dc-core"), key=lambda d: counts[d])
    out_s = _district_down(parents, district)
    below = sorted(s for s, st in out_s.items() if st == "unreachable")
    assert len(below) >= 4
    notes, guard = _cycles(parents, [{s: "up" for s in parents}] + [out_s] * 3 + [{s: "up" for s in parents}] * 2)
    flat = [n for cyc in notes for n in cyc]
    assert not guard and not [n for n in flat if n.kind.startswith("guard")]
    downs = [n for n in flat if n.kind == "down"]
    assert [(n.site_id, n.children) for n in downs] == [(district, tuple(below))]
    recoveries = [n.site_id for n in flat if n.kind == "recovery"]
    assert recoveries.count(district) == 1
    # the communes' admins were told "unreachable" once each, and get their own recovery
    assert sorted(n.site_id for n in flat if n.kind == "unreachable") == below == sorted(set(recoveries) - {district})


def test_the_core_down_raises_the_guard_when_it_is_the_agents_only_upstream():
    parents = _shipped_parents()
    root = [s for s, p in parents.items() if not p]
    assert root == ["dc-core"]
    core_down = _district_down(parents, "dc-core")
    notes, guard = _cycles(parents, [core_down] * 4)
    flat = [(n.kind, n.site_id) for cyc in notes for n in cyc]
    assert flat == [("guard", None)] and guard
    assert "dc-core" in notes[0][0].detail and "1 root cause" in notes[0][0].detail


def test_with_the_agents_gateway_as_guard_site_a_core_outage_is_a_down():
    parents = {"gw": None, **{s: (p or "gw") for s, p in _shipped_parents().items()}}  # the agent -> gw -> dc-core
    rules = AlertSettings(noc=("noc@x.example",), guard_sites=("gw",))
    core_down = _district_down(parents, "dc-core")
    notes, guard = _cycles(parents, [core_down] * 3, rules)
    flat = [n for cyc in notes for n in cyc]
    assert not guard
    assert [(n.kind, n.site_id, len(n.children)) for n in flat if n.kind == "down"] == [("down", "dc-core", 176)]


def test_the_agent_really_isolated_is_one_guard_then_its_end():
    parents = {"gw": None, **{s: (p or "gw") for s, p in _shipped_parents().items()}}
    rules = AlertSettings(noc=("noc@x.example",), guard_sites=("gw",))
    isolated = _district_down(parents, "gw")
    up = {s: "up" for s in parents}
    notes, guard = _cycles(parents, [up] + [isolated] * 10 + [up] * 3, rules)
    flat = [(n.kind, n.site_id) for cyc in notes for n in cyc]
    assert flat == [("guard", None), ("guard_end", None)] and not guard


def test_a_flat_network_raises_the_guard_only_when_no_site_answers():
    parents = {f"s{i}": None for i in range(8)}
    most = {s: ("down" if s != "s0" else "up") for s in parents}  # 7 of 8 down, but one answers
    rules = AlertSettings(noc=("noc@x.example",))  # the defaults: guard_fraction 1.0
    notes, guard = _cycles(parents, [most] * 3, rules)
    assert not guard and len([n for cyc in notes for n in cyc if n.kind == "down"]) == 7
    notes, guard = _cycles(parents, [{s: "down" for s in parents}] * 3, rules)
    assert guard and [(n.kind) for cyc in notes for n in cyc] == ["guard"]


def test_a_site_that_stays_up_is_left_as_it_was_exactly_as_a_full_step_would():
    """evaluate() skips _step for a calm, steady up site (its speed at 10,000 sites): the
    state it keeps is the one _step returns, and _step has nothing to say."""
    from wanmon.alerts.engine import _step

    notes, states = run([{}] * (R.flap_window + 3))
    steady = states["p1"]
    assert steady.history == "0" * R.flap_window and steady.streak >= max(R.confirm_cycles, R.recover_cycles)
    assert _step(steady, "up", 9_999.0, R, False) == (steady, [])
    later, new, _ = evaluate(states, ALL_UP, 9_999.0, R, PARENTS)
    assert later["p1"] is steady and new == []
    # one problem later it moves again, as before
    later, _, _ = evaluate(states, {**ALL_UP, "p1": "down"}, 10_059.0, R, PARENTS)
    assert later["p1"].streak_status == "down" and later["p1"].history.endswith("1")


def test_a_district_outage_is_tied_to_its_root_cause_down_and_recovery_alike():
    """Issue 22: an UNREACHABLE names the site down above it and since when; the district's RECOVERY
    lists the communes back with it (each naming it as the cause) and says when it answered again;
    a commune still silent when the district is back is not listed, and becomes a DOWN of its own."""
    cut = {"d1": "down", "c1": "unreachable", "c2": "unreachable"}
    seq = [{}] + [cut] * 4 + [{"c2": "down"}, {"c2": "down"}, {"c2": "down"}]
    states, per_cycle = {}, []
    for i, over in enumerate(seq):
        states, notes, _ = evaluate(states, {**ALL_UP, **over}, i * 60.0, R, PARENTS)
        per_cycle.append({(n.kind, n.site_id): n for n in notes})
    unreachable = per_cycle[3][("unreachable", "c1")]
    assert (unreachable.cause, unreachable.cause_since, unreachable.since) == ("d1", 60.0, 60.0)
    # cycle 5: d1 and c1 answer (c2 does not, now down on its own); cycle 6: recover_cycles = 2
    rec = per_cycle[6][("recovery", "d1")]
    assert (rec.was, rec.since, rec.back_ts, rec.children) == ("down", 60.0, 300.0, ("c1",))
    c1 = per_cycle[6][("recovery", "c1")]
    assert (c1.was, c1.cause, c1.cause_since, c1.back_ts) == ("unreachable", "d1", 60.0, 300.0)
    assert ("recovery", "c2") not in per_cycle[6]
    assert ("down", "c2") in per_cycle[7]   # its own outage now: confirm_cycles = 3 from cycle 5
