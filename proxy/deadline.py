"""Call deadlines on the event loop without a timer per call: `async with within(deadline):` behaves as
`asyncio.timeout_at(deadline)` (the block is cancelled at the deadline and raises TimeoutError), but
arming and leaving it is two dictionary writes.

asyncio.timeout_at arms one loop timer per block and cancels it on the way out: measured here with
callgrind, the relay's two such blocks were about a tenth of a call's instructions. A deadline here goes
into the bucket of its RESOLUTION-long slice of time; one timer per event loop, armed only while some
block is waiting, cancels the blocks of every slice that has passed. So a block is cancelled between its
deadline and RESOLUTION later: the proxy's deadlines are an upstream's timeout (seconds), where that
slack does not matter.

The cancellation follows asyncio.Timeout's rules (Python 3.11): only a cancellation this block caused
becomes TimeoutError, and a cancellation from elsewhere (the server abandoning the call) passes through.
"""

import asyncio
import heapq
import math
import weakref
from types import TracebackType

RESOLUTION = 0.05  # seconds: how late past its deadline a block may be cancelled, at most


class _Buckets:
    """One event loop's waiting blocks, by the slice of time their deadline falls in."""

    __slots__ = ("loop", "by_slice", "due", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.by_slice: dict[int, dict["_Within", None]] = {}
        self.due: list[int] = []  # the slices in by_slice, a heap: the earliest first
        self.timer: asyncio.TimerHandle | None = None

    def add(self, block: "_Within", deadline: float) -> dict["_Within", None]:
        number = math.ceil(deadline / RESOLUTION)
        bucket = self.by_slice.get(number)
        if bucket is None:
            bucket = self.by_slice[number] = {}
            heapq.heappush(self.due, number)
            if self.timer is None or self.due[0] == number:  # none armed, or armed for a later slice
                self._arm()
        bucket[block] = None
        return bucket

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(self.due[0] * RESOLUTION, self._expire)

    def _expire(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.due and self.due[0] * RESOLUTION <= now:
            for block in list(self.by_slice.pop(heapq.heappop(self.due))):
                block.expire()
        # Slices whose blocks all left early stay in the heap until their time: one empty dict each.
        if self.due:
            self._arm()


_buckets: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Buckets]" = weakref.WeakKeyDictionary()


class _Within:
    __slots__ = ("_deadline", "_task", "_bucket", "_cancelling", "_expired", "__weakref__")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._task: asyncio.Task[object] | None = None
        self._bucket: dict[_Within, None] | None = None
        self._cancelling = 0
        self._expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self._task, self._cancelling = task, task.cancelling()
        loop = task.get_loop()
        # A deadline already past is armed as any other: the timer fires on the loop's next turn, so a
        # block that ends without waiting leaves no cancellation behind (asyncio.timeout_at's rule too).
        buckets = _buckets.get(loop)
        if buckets is None:
            buckets = _buckets[loop] = _Buckets(loop)
        self._bucket = buckets.add(self, self._deadline)

    def expire(self) -> None:
        if self._task is not None and not self._expired:
            self._expired = True
            self._task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        if self._bucket is not None:
            self._bucket.pop(self, None)
        task, self._task = self._task, None
        if self._expired and task is not None:
            if task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from error


def within(deadline: float) -> _Within:
    """An async context manager: its block is cancelled, raising TimeoutError, once the running loop's
    clock (loop.time()) passes `deadline` (at most RESOLUTION later)."""
    return _Within(deadline)
