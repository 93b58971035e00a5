"""The slow upstream of bench/concurrency.py: an HTTP/1.1 server on one event loop that reads each
request whole (its Content-Length body too) and answers a small JSON body, after DELAY seconds when
the path starts with /slow and at once otherwise. Keep-alive; no chunked bodies (the bench sends none).

    python bench/slow_upstream.py PORT DELAY
"""

import asyncio
import sys
from typing import Any

import uvloop

BODY = b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class Upstream(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.body_left = 0  # bytes of the current request's body still to come
        self.slow = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio's classes
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer, self.body_left = self.buffer[taken:], self.body_left - taken
                if self.body_left:
                    return
                self._answer()
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            self.buffer = rest
            lines = head.split(b"\r\n")
            self.slow = lines[0].split(b" ")[1].startswith(b"/slow") if b" " in lines[0] else False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.body_left = int(value.strip() or 0)
            if not self.body_left:
                self._answer()

    def _answer(self) -> None:
        if self.slow:
            asyncio.get_running_loop().call_later(self.delay, self._write)
        else:
            self._write()

    def _write(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER)


async def main(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), float(sys.argv[2])))
