"""The cached, immutable view of keys, upstreams and tokens that the proxy reads: no ORM objects.

Entries live in process memory. A write anywhere drops them after commit: in this process through
keys.policy_changes.policy_changed, in every other process through Redis pub/sub (proxy/invalidation.py).
An entry is trusted for PROXY_POLICY_TTL only while that push channel is live now and has been since
before the entry was loaded; otherwise for one second, so a revocation still reaches every process
within a second (DESIGN.md). Freshness is judged when the entry is read, not when it was stored: an
entry loaded while the channel was live must not outlive the channel. An entry past its time is kept
as a fallback for when the database is down (DESIGN.md: keys already cached keep working).
"""

import asyncio
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from keys import crypto, validators
from keys.models import AccessToken, ApiKey, Upstream
from keys.origins import OriginPattern, parse_pattern
from proxy import metrics
from proxy.lazy import lazy


class PolicyUnavailable(Exception):
    """The database could not be read and nothing usable is cached."""


class NeedsDatabase(Exception):
    """A cache miss met on an event loop's thread: the ORM blocks, so the caller repeats the lookup on a
    worker thread (proxy/gateway.py). In steady state every lookup hits and no thread is used."""


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    slug: str
    tenant_id: int | None
    is_active: bool
    scheme: str
    host: str
    port: int
    base_path: str
    auth_type: str
    auth_name: str
    auth_value: str
    timeout: float
    allow_private_network: bool
    websocket_url: str = ""  # the upstream's own ws(s):// URL; empty: derived from the base URL


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    key_id: str
    tenant_id: int
    tenant_active: bool
    secret_hash: str
    previous_secret_hash: str
    previous_secret_until: float | None
    secret_required: bool
    origins: tuple[OriginPattern, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    user_agents: tuple["UserAgentPattern", ...]
    http_methods: frozenset[str]
    rpc_methods: frozenset[str]
    rate: tuple[int, int] | None  # (requests, window seconds)
    daily_quota: int | None
    expires_at: float | None
    revoked_at: float | None
    upstreams: frozenset[str]
    # The checks in report mode (keys.validators.REPORT_ONLY_CHECKS): proxy/report.py.
    report_only: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    key_id: str
    expires_at: float
    revoked: bool
    origins: tuple[OriginPattern, ...]


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass(frozen=True, slots=True)
class UserAgentPattern:
    """A user-agent allowlist entry: `*` matches any run of characters; case-insensitive, whole string.

    Matched with startswith, endswith and find, in time linear in the user agent. A regex would
    backtrack: `*a*a*a*a*a*a*a*a*a*a*a*a*b` against 60 characters held a worker for minutes.
    """

    prefix: str  # lower-cased, as are the other parts
    middle: tuple[str, ...]
    suffix: str | None  # None: the entry has no `*`, so the whole user agent must equal prefix

    def matches(self, agent: str) -> bool:
        """`agent` already lower-cased (user_agent_allowed does it once for all entries)."""
        if self.suffix is None:
            return agent == self.prefix
        end = len(agent) - len(self.suffix)
        if end < len(self.prefix) or not agent.startswith(self.prefix) or not agent.endswith(self.suffix):
            return False
        # For `*`-only globs the leftmost match of each middle part is always a safe choice, so one
        # left-to-right pass decides, never to be retried: no backtracking.
        position = len(self.prefix)
        for part in self.middle:
            found = agent.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True


def _user_agent_pattern(entry: str) -> UserAgentPattern:
    first, *rest = entry.lower().split("*")
    if not rest:
        return UserAgentPattern(first, (), None)
    return UserAgentPattern(first, tuple(part for part in rest[:-1] if part), rest[-1])


def user_agent_allowed(user_agent: str, patterns: tuple[UserAgentPattern, ...]) -> bool:
    """True when the user agent matches one of the entries."""
    agent = user_agent.lower()
    return any(pattern.matches(agent) for pattern in patterns)


def build_key_policy(api_key: ApiKey, upstream_slugs: list[str]) -> KeyPolicy:
    return KeyPolicy(
        key_id=api_key.key_id,
        tenant_id=api_key.tenant_id,
        tenant_active=api_key.tenant.is_active,
        secret_hash=api_key.secret_hash,
        previous_secret_hash=api_key.previous_secret_hash,
        previous_secret_until=_timestamp(api_key.previous_secret_expires_at),
        secret_required=api_key.secret_required,
        origins=tuple(parse_pattern(entry) for entry in api_key.allowed_origins),
        networks=tuple(ipaddress.ip_network(entry, strict=False) for entry in api_key.allowed_ips),
        user_agents=tuple(_user_agent_pattern(entry) for entry in api_key.allowed_user_agents),
        http_methods=frozenset(method.upper() for method in api_key.allowed_http_methods),
        rpc_methods=frozenset(api_key.allowed_rpc_methods),
        rate=validators.rate_parts(api_key.rate_limit) if api_key.rate_limit else None,
        daily_quota=api_key.daily_quota,
        expires_at=_timestamp(api_key.expires_at),
        revoked_at=_timestamp(api_key.revoked_at),
        upstreams=frozenset(upstream_slugs),
        report_only=frozenset(api_key.report_only or ()),
    )


def build_upstream_policy(upstream: Upstream) -> UpstreamPolicy:
    parts = urlsplit(upstream.base_url)
    scheme = parts.scheme.lower()
    return UpstreamPolicy(
        slug=upstream.slug,
        tenant_id=upstream.tenant_id,
        is_active=upstream.is_active,
        scheme=scheme,
        host=parts.hostname or "",
        port=parts.port or (443 if scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
        auth_type=upstream.auth_type,
        auth_name=upstream.auth_name,
        auth_value=crypto.decrypt(upstream.auth_value_encrypted),
        timeout=float(upstream.timeout_seconds),
        allow_private_network=upstream.allow_private_network,
        websocket_url=upstream.websocket_url,
    )


def _load_key(key_id: str) -> KeyPolicy | None:
    api_key = ApiKey.objects.select_related("tenant").filter(key_id=key_id).first()
    if api_key is None:
        return None
    return build_key_policy(api_key, list(api_key.upstreams.values_list("slug", flat=True)))


def _load_upstream(slug: str) -> UpstreamPolicy | None:
    upstream = Upstream.objects.filter(slug=slug).first()
    return build_upstream_policy(upstream) if upstream is not None else None


def _load_token(token_hash: str) -> TokenPolicy | None:
    row = (
        AccessToken.objects.filter(token_hash=token_hash)
        .values("api_key__key_id", "expires_at", "revoked_at", "allowed_origins")
        .first()
    )
    if row is None:
        return None
    return TokenPolicy(
        key_id=row["api_key__key_id"],
        expires_at=row["expires_at"].timestamp(),
        revoked=row["revoked_at"] is not None,
        origins=tuple(parse_pattern(entry) for entry in row["allowed_origins"]),
    )


SHORT_TTL = 1.0  # DESIGN.md: a change reaches every process within one second, push channel or not.
# Longest silence of the push channel after which long-lived entries are no longer trusted. Well under
# SHORT_TTL, so that a change missed while Redis went away still counts within the second; the listener
# pings at half of it, so one late answer is forgiven.
CHANNEL_SILENCE = 0.5


class PushChannel:
    """What this process knows of its Redis push channel, for judging cached entries when read.

    The listener (proxy/invalidation.py) pings Redis every CHANNEL_SILENCE / 2 seconds and reports each
    answer. Long-lived entries are trusted only while an answer came within CHANNEL_SILENCE and the
    subscription has been unbroken since before the entry was loaded: a change published while we were
    away, or one whose publish failed because Redis was down, then outlives no entry by a second.
    """

    def __init__(self) -> None:
        # (live since, last answer): one tuple, replaced whole, so a reader never sees half an update.
        self._state: tuple[float, float] | None = None

    def answered(self, now: float) -> None:
        """Redis answered on the subscribed connection (a ping's pong, or a message)."""
        state = self._state
        self._state = (state[0] if state else now, now)

    def lost(self) -> None:
        """The subscription broke: whatever comes next is a new, later, stretch."""
        self._state = None

    def covers(self, loaded_at: float, now: float) -> bool:
        """True when every change made after `loaded_at` would have reached us by now."""
        state = self._state
        return state is not None and state[0] <= loaded_at and now - state[1] <= CHANNEL_SILENCE


P = TypeVar("P")  # the policy a store holds
# (loaded at, long-lived?, the policy or None for "does not exist")
_Entry = tuple[float, bool, P | None]


class _Store(Generic[P]):
    """One kind of cached entry, least recently used evicted first.

    name -> (loaded at, long-lived?, value or None for "does not exist"). Ids that do not exist are
    kept apart, so a flood of made-up ids cannot push out the entries that real traffic uses.
    """

    def __init__(
        self, loader: Callable[[str], P | None], channel: PushChannel, *, kind: str = "other"
    ) -> None:
        self._kind = kind
        self._hits, self._misses = (metrics.policy_cache.labels(kind, result) for result in ("hit", "miss"))
        self._loader = loader
        self._channel = channel
        self._found: OrderedDict[str, _Entry[P]] = OrderedDict()
        self._missing: OrderedDict[str, _Entry[P]] = OrderedDict()
        # Request threads and the listener thread share the dicts; an OrderedDict is not safe to
        # reorder while another thread pops from it. Never held while loading.
        self._lock = threading.Lock()
        # Loads in flight, by name: each a one-item list set to True when a drop of that name races it.
        self._loading: dict[str, list[list[bool]]] = {}

    def _fresh(self, entry: _Entry[P], now: float) -> bool:
        loaded_at, long_lived, _ = entry
        age = now - loaded_at
        if age < SHORT_TTL:
            return True
        return long_lived and age < settings.PROXY_POLICY_TTL and self._channel.covers(loaded_at, now)

    def get(self, name: str) -> P | None:
        now = time.monotonic()
        with self._lock:
            entry = self._found.get(name)
            if entry is not None:
                self._found.move_to_end(name)
            else:
                entry = self._missing.get(name)
        if entry is not None and self._fresh(entry, now):
            metrics.move(self._hits)
            return entry[2]
        if _on_event_loop():
            raise NeedsDatabase(name)
        metrics.move(self._misses)
        raced = [False]
        with self._lock:
            self._loading.setdefault(name, []).append(raced)
        try:
            # The fast path skips Django's request signals, so drop a broken or expired connection here
            # (never inside a transaction: that one is someone else's, as in a test).
            if not connection.in_atomic_block:
                close_old_connections()
            value = self._loader(name)
        except DatabaseError as exc:
            metrics.database_errors.inc()
            if entry is not None and entry[2] is not None:
                return entry[2]  # the database is down: what was cached keeps working
            raise PolicyUnavailable(str(exc)) from exc
        finally:
            with self._lock:
                loads = self._loading[name]
                loads.remove(raced)
                if not loads:
                    del self._loading[name]
        # An id that does not exist is remembered one second only, so guessing ids cannot load the
        # database and a key created just now works within a second.
        entries, other = (self._found, self._missing) if value is not None else (self._missing, self._found)
        limit = settings.PROXY_POLICY_CACHE_ENTRIES
        with self._lock:
            # A change dropped while we were reading may be newer than what we read: trust that for
            # one second only. `now`, taken before the read, is what freshness is measured from.
            entries[name] = (now, value is not None and not raced[0], value)
            entries.move_to_end(name)
            other.pop(name, None)
            while len(entries) > limit:
                entries.popitem(last=False)
            self._count_entries()
        return value

    def _count_entries(self) -> None:
        """(under the lock)"""
        metrics.policy_cache_entries.labels(self._kind).set(len(self._found) + len(self._missing))

    def known(self, name: str) -> bool:
        """True when `name` was found (exists) at its last load: a bounded set, fit for a metric's label."""
        return name in self._found

    def __contains__(self, name: str) -> bool:
        return name in self._found or name in self._missing

    def drop(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._found.pop(name, None)
                self._missing.pop(name, None)
                for raced in self._loading.get(name, ()):
                    raced[0] = True
            self._count_entries()

    def clear(self) -> None:
        with self._lock:
            for loads in self._loading.values():
                for raced in loads:
                    raced[0] = True
            self._found.clear()
            self._missing.clear()
            self._count_entries()


class PolicyCache:
    def __init__(self) -> None:
        self.channel = PushChannel()
        self.keys = _Store(_load_key, self.channel, kind="key")
        self.upstreams = _Store(_load_upstream, self.channel, kind="upstream")
        self.tokens = _Store(_load_token, self.channel, kind="token")

    def key(self, key_id: str) -> KeyPolicy | None:
        """The key's policy; None for an id that does not exist. A malformed id or one whose checksum
        is wrong is refused here, before any lookup, and never takes a place in the cache."""
        # An id in the cache passed this check when it was stored: the check is for ids not seen yet.
        if key_id not in self.keys and not crypto.well_formed(key_id, crypto.KEY_ID_PREFIX):
            return None
        return self.keys.get(key_id)

    def upstream(self, slug: str) -> UpstreamPolicy | None:
        return self.upstreams.get(slug)

    def token(self, token: str) -> TokenPolicy | None:
        return self.tokens.get(crypto.hash_secret(token))

    def drop(
        self,
        *,
        key_ids: Iterable[str] = (),
        token_hashes: Iterable[str] = (),
        upstream_slugs: Iterable[str] = (),
    ) -> None:
        self.keys.drop(key_ids)
        self.tokens.drop(token_hashes)
        self.upstreams.drop(upstream_slugs)

    def clear(self) -> None:
        self.keys.clear()
        self.tokens.clear()
        self.upstreams.clear()


policies = lazy(PolicyCache)
