"""The slow clients of bench/concurrency.py, in a process of their own (so that they cost the process
measuring everyone else's latency nothing): BODIES clients that send a request body one byte a
second, and READERS clients that read a large answer 64 KiB a second (100 MiB would take them 26
minutes), all at once. Prints one JSON
line: for each kind, how each client ended (its answer's status, or the connection cut) and when.

    python bench/slow_clients.py PORT BODY_PATH BODIES READ_PATH READERS ORIGIN
"""

import asyncio
import json
import os
import socket
import sys
import time

import uvloop

LIMIT = float(
    os.environ.get("SLOW_CLIENTS_LIMIT", "600")
)  # s: a client still going then gives up ("unbounded")


async def slow_body(port: int, path: str, origin: str) -> tuple[str, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".encode()
    )
    status_line = asyncio.ensure_future(reader.readline())
    try:
        while not status_line.done() and time.monotonic() - started < LIMIT:
            writer.write(b"x")  # one byte a second
            await asyncio.wait([status_line], timeout=1.0)
        if not status_line.done():
            status_line.cancel()
            return "unbounded", time.monotonic() - started
        line = status_line.result()
        outcome = line.split(b" ")[1].decode() if line.count(b" ") >= 1 else "cut"
        return outcome, time.monotonic() - started
    except (ConnectionError, OSError):
        return "cut", time.monotonic() - started
    finally:
        writer.close()


READ_PER_SECOND = 64 * 1024


async def slow_reader(port: int, path: str, origin: str) -> tuple[str, float]:
    started = time.monotonic()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server's sends block soon
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_PER_SECOND)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n\r\n".encode())
    try:
        status = (await reader.readline()).split(b" ")
        if len(status) < 2 or status[1] != b"200":
            return (status[1].decode() if len(status) > 1 else "cut"), time.monotonic() - started
        while time.monotonic() - started < LIMIT:
            second = time.monotonic() + 1.0
            taken = 0
            while taken < READ_PER_SECOND:
                if not (data := await reader.read(READ_PER_SECOND - taken)):
                    return "cut", time.monotonic() - started  # the server ended it: the deadline
                taken += len(data)
            await asyncio.sleep(max(0.0, second - time.monotonic()))
        return "unbounded", time.monotonic() - started
    except (ConnectionError, OSError):
        return "cut", time.monotonic() - started
    finally:
        writer.close()


async def main(port: int, body_path: str, bodies: int, read_path: str, readers: int, origin: str) -> None:
    tasks = [slow_body(port, body_path, origin) for _ in range(bodies)]
    tasks += [slow_reader(port, read_path, origin) for _ in range(readers)]
    ended = await asyncio.gather(*tasks, return_exceptions=True)
    report: dict[str, dict] = {}
    for kind, results in (("bodies", ended[:bodies]), ("readers", ended[bodies:])):
        outcomes: dict[str, int] = {}
        times: list[float] = []
        for result in results:
            outcome, seconds = result if isinstance(result, tuple) else (type(result).__name__, 0.0)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            times.append(seconds)
        times.sort()
        report[kind] = {
            "outcomes": outcomes,
            "seconds_min": times[0] if times else 0,
            "seconds_median": times[len(times) // 2] if times else 0,
            "seconds_max": times[-1] if times else 0,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    port, body_path, bodies, read_path, readers, origin = sys.argv[1:7]
    uvloop.run(main(int(port), body_path, int(bodies), read_path, int(readers), origin))
