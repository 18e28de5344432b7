"""The poll's receive-buffer budget (wanmon.probes.snmp._ByteBudget): never more
bytes of replies expected at once than the socket buffer holds, first come first
served, nothing lost when waiting requests are cancelled."""

from __future__ import annotations

import asyncio
import random

from wanmon.probes.snmp import _ByteBudget, reply_estimate


def test_budget_bounds_bytes_in_flight_and_survives_cancellation():
    async def main():
        b = _ByteBudget(10_000)
        rnd = random.Random(3)
        peak = finished = 0

        async def user():
            nonlocal peak, finished
            held = await b.acquire(rnd.randint(500, 6000))
            try:  # as in _Net.exchange
                peak = max(peak, b.used)
                assert b.used <= b.limit
                await asyncio.sleep(rnd.random() / 1000)
                finished += 1
            finally:
                b.release(held)

        tasks = [asyncio.create_task(user()) for _ in range(400)]
        await asyncio.sleep(0)
        for t in rnd.sample(tasks, 60):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return b, peak, finished

    b, peak, finished = asyncio.run(main())
    assert b.used == 0 and not b._waiters  # every byte given back
    assert 6000 < peak <= 10_000
    assert 340 <= finished < 400


def test_budget_is_first_come_first_served_and_oversized_requests_still_run():
    async def main():
        b = _ByteBudget(1000)
        order = []
        first = await b.acquire(900)

        async def user(name, n):
            held = await b.acquire(n)
            order.append(name)
            b.release(held)

        big = asyncio.create_task(user("big", 5000))  # larger than the whole budget: runs alone
        small = asyncio.create_task(user("small", 10))  # fits now, but must not overtake "big"
        await asyncio.sleep(0.01)
        assert order == []
        b.release(first)
        await asyncio.gather(big, small)
        return order, b.used

    order, used = asyncio.run(main())
    assert order == ["big", "small"] and used == 0


def test_reply_estimate_covers_a_real_getbulk_answer():
    # a 208-value GETBULK reply of an interface table measured 5,402 bytes on the wire
    assert reply_estimate(208) >= 5402 + 768
