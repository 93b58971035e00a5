"""One stop per granian worker, however many stop signals it gets.

A granian 2.8 worker stops when its loop's SIGINT/SIGTERM handler sets the worker's stop signal. A
second signal while it stops blocks that handler inside granian's native code, so the worker never
finishes stopping: granian kills it at --workers-kill-timeout, and what it had counted but not yet
flushed is lost. A second signal is the rule, not the exception: a stop that signals every process of
the server (systemd's default KillMode, `kill -- -PGID`, Ctrl-C in a terminal) reaches each worker
once directly and once more from granian's main process as it stops its workers.

`install()` (config/asgi.py, which granian imports in each worker before it sets the worker's signal
handlers) makes every signal after a worker's first one do nothing. Measured with granian 2.8.7 and
2.8.9: without it, 1 run in 5 of a double signal left both workers stuck for the kill timeout.
"""

import signal
from typing import Any

from granian import _signals


def _set_loop_signals_once(loop: Any) -> Any:
    """granian._signals.set_loop_signals, whose handler stops the worker on the first signal only."""
    stop = _signals.WorkerSignal()
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for number in signals:
            loop.add_signal_handler(number, on_signal, number, None)
    except NotImplementedError:  # a loop without signal support: as granian does it
        for number in signals:
            signal.signal(number, on_signal)
    return stop


def install() -> None:
    """From now on, the workers this process starts stop once (granian reads the function when it
    starts each worker's loop)."""
    _signals.set_loop_signals = _set_loop_signals_once
