"""proxy.deadline.within: asyncio.timeout_at's behaviour, on one timer per event loop."""

import asyncio

import pytest
import uvloop

from proxy.deadline import RESOLUTION, within

LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@LOOPS
def test_a_block_still_waiting_at_its_deadline_raises_timeout_error_soon_after_it(run):
    async def main():
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.1
        with pytest.raises(TimeoutError):
            async with within(deadline):
                await asyncio.sleep(5)
        return loop.time() - deadline

    late = run(main())
    assert 0 <= late < RESOLUTION + 0.05


@LOOPS
def test_a_block_that_ends_in_time_is_never_cancelled_later(run):
    async def main():
        loop = asyncio.get_running_loop()
        async with within(loop.time() + 0.05):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # past the deadline: the task is not cancelled out of the block
        return "done"

    assert run(main()) == "done"


@LOOPS
def test_a_deadline_already_past_cancels_a_block_that_waits(run):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with within(loop.time() - 1):
                await asyncio.sleep(1)

    run(main())


@LOOPS
def test_a_deadline_already_past_leaves_nothing_behind_a_block_that_does_not_wait(run):
    async def main():
        loop = asyncio.get_running_loop()
        async with within(loop.time() - 1):
            value = 1 + 1
        await asyncio.sleep(0.1)  # no stray cancellation reaches the code after the block
        return value

    assert run(main()) == 2


@LOOPS
def test_a_cancellation_from_elsewhere_passes_through_as_cancelled_error(run):
    async def main():
        loop = asyncio.get_running_loop()

        async def call():
            async with within(loop.time() + 5):
                await asyncio.sleep(5)

        task = asyncio.ensure_future(call())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


@LOOPS
def test_the_outer_of_two_blocks_expiring_first_is_the_one_that_times_out(run):
    async def main():
        loop = asyncio.get_running_loop()
        inner_saw = None
        with pytest.raises(TimeoutError):
            async with within(loop.time() + 0.05):
                try:
                    async with within(loop.time() + 5):
                        await asyncio.sleep(5)
                except BaseException as exc:
                    inner_saw = type(exc)
                    raise
        return inner_saw

    assert run(main()) is asyncio.CancelledError


@LOOPS
def test_many_calls_time_out_each_at_its_own_deadline_and_the_rest_finish(run):
    limits = (0.1, 0.2, 0.4, 0.5)  # the first two are past by the time the work (0.25 s) is done

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def call(limit):
            try:
                async with within(start + limit):
                    await asyncio.sleep(0.25 if limit > 0.25 else 5)
            except TimeoutError:
                return "timeout", loop.time() - start
            return "done", loop.time() - start

        return await asyncio.gather(*(call(limits[i % 4]) for i in range(200)))

    for i, (outcome, at) in enumerate(run(main())):
        limit = limits[i % 4]
        if limit < 0.25:
            assert outcome == "timeout" and limit <= at < limit + RESOLUTION + 0.1, (i, outcome, at)
        else:
            assert outcome == "done" and 0.25 <= at < limit, (i, outcome, at)
