"""The poll's receive-buffer budget (wanmon.probes.snmp._ByteBudget): never more
bytes of replies expected at once than the socket buffer holds, first come first
served, nothing lost when waiting requests are cancelled."""

from __future__ import annotations

import asyncio
import random

from wanmon.probes.snmp import _ByteBudget, reply_estimate


def test_budget_bounds_bytes_in_flight_and_survives_cancellation():
    """400 requests of random sizes; each holds its bytes until the test lets it go (one at a
    time, in random order, as replies come in any order); 60 are cancelled first, waiting or
    holding. No timer: the interleaving is the test's."""

    async def main():
        b = _ByteBudget(10_000)
        rnd = random.Random(3)
        sizes = [rnd.randint(500, 6000) for _ in range(400)]
        holding: dict[int, asyncio.Event] = {}  # request -> its "reply came" event
        someone_holds = asyncio.Event()
        peak = finished = 0

        async def user(i):
            nonlocal peak, finished
            held = await b.acquire(sizes[i])
            try:  # as in _Net.exchange
                peak = max(peak, b.used)
                assert b.used <= b.limit
                holding[i] = reply = asyncio.Event()
                someone_holds.set()
                await reply.wait()
                finished += 1
            finally:
                holding.pop(i, None)
                b.release(held)

        tasks = [asyncio.create_task(user(i)) for i in range(400)]
        await someone_holds.wait()  # every task has run up to its first wait
        assert holding and len(b._waiters) == 400 - len(holding)
        for t in rnd.sample(tasks, 60):
            t.cancel()
        async with asyncio.timeout(30):  # a lost wake-up would hang here
            while not all(t.done() for t in tasks):
                if not holding:
                    someone_holds.clear()
                    await someone_holds.wait()  # the ones just granted run up to their wait
                    continue
                i = rnd.choice(sorted(holding))
                holding[i].set()
                await asyncio.gather(tasks[i], return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        return b, peak, finished, tasks

    b, peak, finished, tasks = asyncio.run(main())
    assert b.used == 0 and not b._waiters  # every byte given back
    assert 6000 < peak <= 10_000
    assert 340 <= finished < 400
    assert finished == sum(not t.cancelled() for t in tasks) == 340


def test_budget_is_first_come_first_served_and_oversized_requests_still_run():
    async def main():
        b = _ByteBudget(1000)
        order = []
        first = await b.acquire(900)
        both_asked = asyncio.Event()

        async def user(name, n):
            if name == "small":  # tasks start in creation order: "big" is waiting already
                both_asked.set()
            held = await b.acquire(n)  # (queues itself before this task yields)
            order.append(name)
            b.release(held)

        big = asyncio.create_task(user("big", 5000))  # larger than the whole budget: runs alone
        small = asyncio.create_task(user("small", 10))  # fits now, but must not overtake "big"
        await both_asked.wait()
        assert order == [] and [n for n, _ in b._waiters] == [1000, 10]
        b.release(first)
        await asyncio.gather(big, small)
        return order, b.used

    order, used = asyncio.run(main())
    assert order == ["big", "small"] and used == 0


def test_reply_estimate_covers_a_real_getbulk_answer():
    # a 208-value GETBULK reply of an interface table measured 5,402 bytes on the wire
    assert reply_estimate(208) >= 5402 + 768
