"""The account's one-pass figures over consecutive windows (wanmon.account.figures_over) against
a second-by-second oracle: each second belongs to the run that starts first among those covering
it (the account's rule where runs overlap), and an outage is a stretch of own down seconds
without a break inside one window. Pure logic: random runs, no I/O."""

from __future__ import annotations

import random

import pytest

from wanmon import account
from wanmon.account import Figures

STATUSES = ("up", "degraded", "down", "down", "unreachable", "unknown")


def oracle(runs, start: int, end: int, history_from: int | None = None) -> Figures:
    order = sorted(range(len(runs)), key=lambda i: runs[i][2])  # stable, as the account's sort
    f = Figures(sites=1)
    lengths: list[int] = []
    cur = 0
    for t in range(start, end):
        owner = next((runs[i] for i in order if runs[i][2] <= t < runs[i][3]), None)
        status, maint = (owner[0], owner[1]) if owner else ("none", 0)
        is_down = not maint and status == "down"
        if maint and owner:
            f.maintenance_s += 1
        elif status in ("up", "degraded"):
            f.available_s += 1
        elif status == "down":
            f.down_s += 1
        elif status == "unreachable":
            f.unreachable_s += 1
        if is_down:
            cur += 1
        elif cur:
            lengths.append(cur)
            cur = 0
    if cur:
        lengths.append(cur)
    known = end - min(max(start, history_from if history_from is not None else start), end)
    f.unobserved_s = max(0, known - f.available_s - f.down_s - f.unreachable_s - f.maintenance_s)
    f.outages = len(lengths)
    f.longest_outage_s = max(lengths, default=0)
    return f


def random_runs(rnd: random.Random, span: int, n: int, overlap: bool):
    runs, t = [], rnd.randint(-20, 20)
    for _ in range(n):
        a = t + (rnd.randint(-15, 10) if overlap else rnd.choice((0, 0, 0, rnd.randint(1, 8))))
        b = a + rnd.randint(1, 40)
        runs.append((rnd.choice(STATUSES), int(rnd.random() < 0.1), float(a), float(b)))
        t = max(t, b)
        if t > span + 30:
            break
    rnd.shuffle(runs)  # the account sorts them
    return runs


@pytest.mark.parametrize("seed", range(300))
def test_each_window_of_one_pass_is_what_that_window_alone_gives(seed):
    rnd = random.Random(seed)
    span = 200
    runs = random_runs(rnd, span, rnd.randint(0, 25), overlap=seed % 3 == 0)
    cuts = sorted(rnd.sample(range(1, span), rnd.randint(0, 4)))
    bounds = [0, *cuts, span]
    if seed % 7 == 0:
        bounds.insert(2, bounds[1])  # an empty window
    history_from = rnd.choice((None, None, rnd.randint(-10, span + 10)))
    got = account.figures_over(runs, [float(b) for b in bounds], history_from)
    assert len(got) == len(bounds) - 1
    for (a, b), f in zip(zip(bounds, bounds[1:]), got):
        want = oracle(runs, a, b, history_from)
        assert f == want, (seed, a, b)
        assert account.site_figures(runs, float(a), float(b), history_from) == want


def test_an_outage_across_an_edge_counts_in_both_windows_cut_there():
    runs = [("up", 0, 0.0, 50.0), ("down", 0, 50.0, 80.0), ("down", 0, 80.0, 130.0), ("up", 0, 130.0, 200.0)]
    first, second = account.figures_over(runs, (0.0, 100.0, 200.0))
    assert (first.outages, first.longest_outage_s, first.down_s) == (1, 50.0, 50.0)
    assert (second.outages, second.longest_outage_s, second.down_s) == (1, 30.0, 30.0)
    assert first.observed_s == second.observed_s == 100.0
