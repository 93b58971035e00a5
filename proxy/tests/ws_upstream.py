"""A real JSON-RPC WebSocket upstream on loopback (aiohttp's server on a thread of its own), for the
WebSocket relay's tests: it records each handshake and message, answers calls, sends notifications
to subscribers, and closes with a given code when asked."""

import asyncio
import json
import threading
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

BLOCK_NUMBER = "0x1b4"


@dataclass
class Seen:
    handshakes: list[dict[str, str]] = field(default_factory=list)  # each handshake's headers
    paths: list[str] = field(default_factory=list)  # path?query of each handshake
    messages: list[str] = field(default_factory=list)


class WsUpstream:
    """`with WsUpstream() as upstream:` serves ws://127.0.0.1:<port>/... until the block ends.

    Methods: eth_blockNumber answers BLOCK_NUMBER; eth_subscribe answers a subscription id and then
    sends a notification every `notify_every` seconds; test_close closes with params [code, reason];
    anything else answers its method name as the result."""

    def __init__(
        self, *, notify_every: float = 0.2, subprotocols: tuple[str, ...] = (), answers_pings: bool = True
    ) -> None:
        self.seen = Seen()
        self.answers_pings = answers_pings  # False: a hung peer, which never pongs
        self.notify_every = notify_every
        self.subprotocols = subprotocols
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "WsUpstream":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.handshakes.append(dict(request.headers))
        self.seen.paths.append(request.path_qs)
        ws = web.WebSocketResponse(protocols=self.subprotocols, autoping=self.answers_pings)
        await ws.prepare(request)
        tasks: list[asyncio.Task] = []
        async for message in ws:
            if message.type in (WSMsgType.PING, WSMsgType.PONG):
                continue  # only seen with autoping off: left unanswered
            if message.type != WSMsgType.TEXT:
                await ws.send_bytes(message.data)
                continue
            self.seen.messages.append(message.data)
            payload = json.loads(message.data)
            calls = payload if isinstance(payload, list) else [payload]
            answers = []
            for call in calls:
                method = call.get("method")
                if method == "test_close":
                    code, reason = call["params"]
                    await ws.close(code=code, message=reason.encode())
                    return ws
                if method == "eth_subscribe":
                    subscription = f"0x{len(tasks) + 1:x}"
                    tasks.append(asyncio.ensure_future(self._notify(ws, subscription)))
                    result: object = subscription
                elif method == "eth_blockNumber":
                    result = BLOCK_NUMBER
                else:
                    result = method
                answers.append({"jsonrpc": "2.0", "id": call.get("id"), "result": result})
            await ws.send_str(json.dumps(answers if isinstance(payload, list) else answers[0]))
        for task in tasks:
            task.cancel()
        return ws

    async def _notify(self, ws: web.WebSocketResponse, subscription: str) -> None:
        number = 0
        while not ws.closed:
            await asyncio.sleep(self.notify_every)
            number += 1
            notification = {
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {"subscription": subscription, "result": {"number": hex(number)}},
            }
            try:
                await ws.send_str(json.dumps(notification))
            except ConnectionError:
                return
