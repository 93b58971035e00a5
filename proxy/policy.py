"""The cached, immutable view of keys, upstreams and tokens that the proxy reads: no ORM objects.

Entries live in process memory. A write anywhere drops them after commit: in this process through
keys.signals.policy_changed, in every other process through Redis pub/sub (proxy/invalidation.py).
While that push channel is not known to be live, entries are trusted for one second only, so a
revocation still reaches every process within a second. An entry past its time is kept as a
fallback for when the database is down (DESIGN.md: keys already cached keep working).
"""

import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from keys import crypto, validators
from keys.models import AccessToken, ApiKey, Upstream
from keys.origins import OriginPattern, parse_pattern


class PolicyUnavailable(Exception):
    """The database could not be read and nothing usable is cached."""


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
    user_agents: tuple[re.Pattern, ...]
    http_methods: frozenset[str]
    rpc_methods: frozenset[str]
    rate: tuple[int, int] | None  # (requests, window seconds)
    daily_quota: int | None
    expires_at: float | None
    revoked_at: float | None
    upstreams: frozenset[str]


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    key_id: str
    expires_at: float
    revoked: bool
    origins: tuple[OriginPattern, ...]


def _timestamp(value) -> float | None:
    return value.timestamp() if value is not None else None


def _user_agent_pattern(entry: str) -> re.Pattern:
    return re.compile("^" + ".*".join(re.escape(part) for part in entry.split("*")) + "$", re.IGNORECASE)


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


class _Store:
    """One kind of cached entry: name -> (fresh until, value or None for "does not exist")."""

    def __init__(self, loader, max_entries: int) -> None:
        self._loader = loader
        self._entries: dict[str, tuple[float, object]] = {}
        self._max_entries = max_entries

    def get(self, name: str, ttl: float):
        entry = self._entries.get(name)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        try:
            # The fast path skips Django's request signals, so drop a broken or expired connection here
            # (never inside a transaction: that one is someone else's, as in a test).
            if not connection.in_atomic_block:
                close_old_connections()
            value = self._loader(name)
        except DatabaseError as exc:
            if entry is not None and entry[1] is not None:
                return entry[1]  # the database is down: what was cached keeps working
            raise PolicyUnavailable(str(exc)) from exc
        if len(self._entries) >= self._max_entries:
            # Bounded memory under a flood of made-up ids: forget the oldest half.
            for old in list(self._entries)[: self._max_entries // 2]:
                self._entries.pop(old, None)
        # An id that does not exist is remembered briefly, so guessing ids cannot load the database.
        self._entries[name] = (now + (ttl if value is not None else min(ttl, 1.0)), value)
        return value

    def drop(self, names) -> None:
        for name in names:
            self._entries.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()


class PolicyCache:
    def __init__(self) -> None:
        size = settings.PROXY_POLICY_CACHE_ENTRIES
        self.keys = _Store(_load_key, size)
        self.upstreams = _Store(_load_upstream, size)
        self.tokens = _Store(_load_token, size)
        self.push_channel_live = threading.Event()

    def ttl(self) -> float:
        return settings.PROXY_POLICY_TTL if self.push_channel_live.is_set() else 1.0

    def key(self, key_id: str) -> KeyPolicy | None:
        return self.keys.get(key_id, self.ttl())

    def upstream(self, slug: str) -> UpstreamPolicy | None:
        return self.upstreams.get(slug, self.ttl())

    def token(self, token: str) -> TokenPolicy | None:
        return self.tokens.get(crypto.hash_secret(token), self.ttl())

    def drop(self, *, key_ids=(), token_hashes=(), upstream_slugs=()) -> None:
        self.keys.drop(key_ids)
        self.tokens.drop(token_hashes)
        self.upstreams.drop(upstream_slugs)

    def clear(self) -> None:
        self.keys.clear()
        self.tokens.clear()
        self.upstreams.clear()


policies = PolicyCache()
