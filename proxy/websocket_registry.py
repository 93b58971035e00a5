"""The open WebSocket sockets of this process, by key: the per-key cap, and the watchdog that closes
sockets whose key, token or allowlists no longer admit them.

The watchdog runs on the event loop every PROXY_WS_RECHECK_SECONDS while a socket is open. It runs the
handshake's own checks 1-7 (proxy/gate.py `admit`) again for each open socket against the policy
cache. Every write to a key, token, upstream or tenant drops the cached policies in every process
(proxy/invalidation.py) and a dropped entry is read again from the database (on a thread), so a
revocation reaches open sockets as fast as it reaches new calls: within a second. Sockets that share
their key and credentials share one re-check. The same pass closes idle sockets.

The cap counts a key's open sockets across every process sharing Redis: a sorted set per key, one
member per socket whose score is when its claim lapses. Each process renews its members' claims every
CLAIM_SECONDS / 3, so the sockets of a process that died stop counting within CLAIM_SECONDS. Without
Redis the count is this process's. When Redis fails the cap fails open, as the rate limit does.
"""

import asyncio
import contextvars
import dataclasses
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import Counter, Gauge

from proxy import checks, gate, gateway, metrics
from proxy.policy import KeyPolicy, UpstreamPolicy

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

CLAIM_SECONDS = 30
# KEYS[1] the key's set; ARGV: now, cap, claim's end, member. 1 when claimed, 0 when the key is full.
CLAIM_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[5]))
return 1
"""
IDLE_CLOSE = 4408  # like HTTP's 408: the socket carried nothing for PROXY_WS_IDLE_SECONDS


def close_code_for(status: int) -> int:
    """The close code of a refusal that would answer `status` at the handshake: 4401 key_revoked, ..."""
    return 4000 + status


open_sockets = Gauge("proxy_websockets_open", "WebSocket sockets relayed now.", multiprocess_mode="livesum")
messages = Counter(
    "proxy_websocket_messages",
    "WebSocket messages from clients, by outcome (allowed, rejected).",
    ["outcome"],
)
# Bound once: the relay counts every message.
messages_allowed, messages_rejected = messages.labels("allowed"), messages.labels("rejected")


class OpenSocket:
    """One relayed socket: what its handshake showed, and how the proxy closes it."""

    __slots__ = (
        "upstream_slug",
        "key",
        "key_id",
        "facts",
        "closed",
        "last_activity",
        "request_id",
        "member",
        "destination",
    )

    def __init__(
        self,
        upstream_slug: str,
        key: KeyPolicy,
        facts: checks.Facts,
        loop: asyncio.AbstractEventLoop,
        destination: tuple[object, ...] = (),
    ) -> None:
        self.upstream_slug, self.key, self.key_id, self.facts = upstream_slug, key, key.key_id, facts
        # Where the socket was connected (destination_of its upstream at the handshake).
        self.destination = destination
        # Set by the watchdog (or a server stop): (close code, reason) for the client.
        self.closed: asyncio.Future[tuple[int, str]] = loop.create_future()
        self.last_activity = time.monotonic()
        self.request_id = ""
        self.member = uuid.uuid4().hex

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def close(self, code: int, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))


def _redis() -> "redis.Redis":
    from django_redis import get_redis_connection

    return get_redis_connection("default")


class SharedClaims:
    """The per-key cap's counts in Redis (see the module's docstring)."""

    def __init__(self) -> None:
        self._client = _redis()
        self._claim = self._client.register_script(CLAIM_SCRIPT)

    @staticmethod
    def _name(key_id: str) -> str:
        return f"ws:{key_id}"

    def claim(self, key_id: str, member: str, cap: int) -> bool:
        now = time.time()
        claimed = self._claim(
            keys=[self._name(key_id)], args=[now, cap, now + CLAIM_SECONDS, member, CLAIM_SECONDS]
        )
        return bool(claimed)

    def renew(self, members: list[tuple[str, str]]) -> None:
        until = time.time() + CLAIM_SECONDS
        pipe = self._client.pipeline(transaction=False)
        for key_id, member in members:
            pipe.zadd(self._name(key_id), {member: until}, xx=True)
        for key_id in {key_id for key_id, _ in members}:  # the set outlives its last claim's renewal
            pipe.expire(self._name(key_id), 2 * CLAIM_SECONDS)
        pipe.execute()

    def release(self, key_id: str, member: str) -> None:
        self._client.zrem(self._name(key_id), member)


class Registry:
    def __init__(self) -> None:
        self._by_key: dict[str, set[OpenSocket]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._shared: SharedClaims | None = None
        self._renewed_at = 0.0

    def _claims(self) -> SharedClaims | None:
        if not settings.REDIS_URL:
            return None
        if self._shared is None:
            self._shared = SharedClaims()
        return self._shared

    def count(self, key_id: str) -> int:
        """This process's open sockets of the key."""
        return len(self._by_key.get(key_id, ()))

    async def add(self, socket: OpenSocket) -> bool:
        """Register the socket; False when its key already has PROXY_WS_MAX_CONNECTIONS_PER_KEY open."""
        cap = settings.PROXY_WS_MAX_CONNECTIONS_PER_KEY
        if self.count(socket.key_id) >= cap:
            return False
        claims = self._claims()
        if claims is not None:
            try:
                if not await asyncio.to_thread(claims.claim, socket.key_id, socket.member, cap):
                    return False
            except Exception as exc:  # noqa: BLE001 - the cap fails open, as the rate limit does
                metrics.redis_errors.labels("websocket_claim").inc()
                logger.warning("WebSocket cap not checked: Redis failed (%s)", type(exc).__name__)
        self._by_key.setdefault(socket.key_id, set()).add(socket)
        open_sockets.inc()
        if self._watchdog is None or self._watchdog.done():
            # A context of its own: not the handshake's that started it (its request id, its access line).
            watch = self._watch()
            self._watchdog = asyncio.get_running_loop().create_task(watch, context=contextvars.Context())
        return True

    def remove(self, socket: OpenSocket) -> None:
        group = self._by_key.get(socket.key_id)
        if group is None or socket not in group:
            return
        group.discard(socket)
        if not group:
            del self._by_key[socket.key_id]
        open_sockets.dec()
        if (claims := self._claims()) is not None:
            asyncio.get_running_loop().run_in_executor(None, self._release, claims, socket)

    @staticmethod
    def _release(claims: SharedClaims, socket: OpenSocket) -> None:
        try:
            claims.release(socket.key_id, socket.member)
        except Exception:  # noqa: BLE001 - the claim lapses on its own within CLAIM_SECONDS
            metrics.redis_errors.labels("websocket_release").inc()

    def sockets(self) -> list[OpenSocket]:
        return [socket for group in self._by_key.values() for socket in group]

    async def _watch(self) -> None:
        while self._by_key:
            await asyncio.sleep(settings.PROXY_WS_RECHECK_SECONDS)
            try:
                await self.recheck()
            except Exception:
                logger.exception("WebSocket watchdog failed; it goes on")

    async def recheck(self) -> None:
        """One pass of the watchdog: idle sockets, then each group's checks 1-7 again."""
        now, monotonic, idle = time.time(), time.monotonic(), settings.PROXY_WS_IDLE_SECONDS
        groups: dict[tuple[Any, ...], list[OpenSocket]] = {}
        for socket in self.sockets():
            if socket.closed.done():
                continue
            if idle and monotonic - socket.last_activity > idle:
                socket.close(IDLE_CLOSE, "idle_timeout")
                continue
            facts = socket.facts
            shared = (socket.upstream_slug, socket.key_id, facts.authorization, facts.origin)
            groups.setdefault((*shared, facts.client_address, facts.user_agent), []).append(socket)
        verdicts = await asyncio.gather(
            *(_readmit(group[0], now) for group in groups.values()), return_exceptions=True
        )
        for group, verdict in zip(groups.values(), verdicts, strict=True):
            if isinstance(verdict, KeyPolicy):
                for socket in group:
                    socket.key = verdict  # later messages meet the key's current allowlists and limits
            elif isinstance(verdict, tuple):
                for socket in group:
                    socket.close(*verdict)
            # An exception (the database down and the key not cached): the sockets stay, as calls do.
        if monotonic - self._renewed_at > CLAIM_SECONDS / 3 and (claims := self._claims()) is not None:
            self._renewed_at = monotonic
            members = [(socket.key_id, socket.member) for socket in self.sockets()]
            try:
                await asyncio.to_thread(claims.renew, members)
            except Exception:  # noqa: BLE001 - renewed at the next pass
                metrics.redis_errors.labels("websocket_renew").inc()


# The close of a socket whose upstream now lives elsewhere (1012: "service restart", reconnect).
UPSTREAM_CHANGED = (1012, "upstream_changed")


def destination_of(upstream: UpstreamPolicy) -> tuple[object, ...]:
    """What decides where an upstream's sockets connect, and whether that may be a private address."""
    return (
        upstream.scheme,
        upstream.host,
        upstream.port,
        upstream.base_path,
        upstream.websocket_url,
        upstream.allow_private_network,
    )


async def _readmit(socket: OpenSocket, now: float) -> KeyPolicy | tuple[int, str]:
    """The key's current policy when the handshake's checks 1-7 still pass and the upstream still
    lives where the socket was connected, else (close code, reason)."""
    facts = dataclasses.replace(socket.facts, now=now)
    headers = {"X-Request-Id": socket.request_id}
    admitted = await gateway._with_database(
        gate.admit, facts, {}, headers, socket.upstream_slug, socket.key_id
    )
    if isinstance(admitted, HttpResponse):
        code = json.loads(admitted.content)["error"]["code"]
        return close_code_for(admitted.status_code), code
    if socket.destination and destination_of(admitted.upstream) != socket.destination:
        return UPSTREAM_CHANGED  # moved, or no longer allowed a private address: connect anew
    return admitted.key


registry = Registry()
