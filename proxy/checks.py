"""DESIGN.md's check table as small pure functions of (policy, request facts).

Each returns None when the request passes, or a Rejection saying which contract error to answer.
They touch no database and no network: the policies they read are already in memory.
"""

import base64
import binascii
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass

from keys import access, crypto
from keys.origins import origin_allowed
from proxy.policy import KeyPolicy, TokenPolicy, UpstreamPolicy, user_agent_allowed

SECRET = "secret"  # noqa: S105 - the credential kind of a request that showed the key's secret
RPC_DETAIL_METHODS = 10  # refused JSON-RPC method names a rejection's detail lists, at most


# The contract's error answers; the rules on a key's state, secret and tokens live in keys/access.py,
# which the token exchange calls too.
Rejection = access.Refusal
reject = access.refusal


@dataclass(frozen=True, slots=True)
class Facts:
    """What the checks need to know about one request."""

    method: str
    origin: str | None  # None: the request has no Origin header
    authorization: str
    client_address: str
    user_agent: str
    now: float
    # The methods named by X-HTTP-Method-Override and its kin, which many frameworks obey over the
    # request line: an HTTP-method allowlist must hold for them too.
    method_overrides: tuple[str, ...] = ()


def check_upstream(upstream: UpstreamPolicy | None, slug: str) -> Rejection | None:
    if upstream is None or not upstream.is_active:
        return reject("unknown_upstream", f"There is no upstream {slug!r}.")
    return None


def check_key(key: KeyPolicy | None, key_id: str, now: float) -> Rejection | None:
    if key is None:
        return access.unknown_key(key_id)
    return access.key_state_refusal(
        key_id=key.key_id,
        tenant_active=key.tenant_active,
        revoked_at=key.revoked_at,
        expires_at=key.expires_at,
        now=now,
    )


@dataclass(frozen=True, slots=True)
class Route:
    """What steps 1-4 establish: an active upstream, and a usable key that may call it."""

    upstream: UpstreamPolicy
    key: KeyPolicy


def check_route(
    upstream: UpstreamPolicy | None, slug: str, key: KeyPolicy | None, key_id: str, now: float
) -> Route | Rejection:
    """Steps 1-4 in order (check_upstream, check_key, check_upstream_allowed): the Route when they pass,
    the first rejection otherwise."""
    if upstream is None or key is None:
        # The only rejections there are for a missing upstream or key; the upstream's comes first.
        return check_upstream(upstream, slug) or access.unknown_key(key_id)
    return (
        check_upstream(upstream, slug)
        or check_key(key, key_id, now)
        or check_upstream_allowed(key, upstream)
        or Route(upstream, key)
    )


def check_upstream_allowed(key: KeyPolicy, upstream: UpstreamPolicy) -> Rejection | None:
    owned_elsewhere = upstream.tenant_id is not None and upstream.tenant_id != key.tenant_id
    if upstream.slug not in key.upstreams or owned_elsewhere:
        return reject(
            "upstream_not_allowed",
            f"{key.key_id} may not call the upstream {upstream.slug!r}.",
            detail=upstream.slug,
        )
    return None


def secret_valid(key: KeyPolicy, secret: str, now: float) -> bool:
    return access.secret_matches(
        secret=secret,
        secret_hash=key.secret_hash,
        previous_secret_hash=key.previous_secret_hash,
        previous_secret_until=key.previous_secret_until,
        now=now,
    )


def check_credentials(
    key: KeyPolicy, facts: Facts, token_policy: Callable[[str], TokenPolicy | None]
) -> tuple[Rejection | None, str | TokenPolicy | None]:
    """(rejection, credential): the credential is SECRET, the TokenPolicy used, or None for none shown."""
    scheme, _, value = facts.authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            user, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return reject("invalid_secret", "The Authorization header is not valid Basic credentials."), None
        if user not in ("", key.key_id) or not secret_valid(key, secret, facts.now):
            return access.wrong_secret(key.key_id), None
        return None, SECRET
    if scheme == "bearer":
        token = value.strip()
        if not crypto.well_formed(token, crypto.ACCESS_TOKEN_PREFIX):
            return reject("invalid_token", "The bearer token is not a valid access token."), None
        policy = token_policy(token)
        refused = access.token_refusal(
            key_id=key.key_id,
            token_key_id=policy.key_id if policy else None,
            revoked=policy.revoked if policy else True,
            expires_at=policy.expires_at if policy else 0.0,
            now=facts.now,
        )
        return (refused, None) if refused else (None, policy)
    if key.secret_required:
        return reject(
            "secret_required", f"{key.key_id} requires its secret (Basic auth) or an access token (Bearer)."
        ), None
    return None, None


def check_origin(key: KeyPolicy, facts: Facts, credential: str | TokenPolicy | None) -> Rejection | None:
    """The key's origin allowlist (a refusal of check "allowed_origins", which may report only), then a
    token's own origins (which narrow the key and are always enforced)."""
    if facts.origin is not None:
        if not origin_allowed(facts.origin, key.origins):
            return reject(
                "origin_not_allowed",
                f"Origin {facts.origin} is not allowed for key {key.key_id}.",
                detail=facts.origin,
                check="allowed_origins",
            )
        return check_token_origin(key, facts, credential)
    if key.origins and credential is None:
        return reject(
            "origin_required",
            f"{key.key_id} allows only listed origins; without an Origin, send the secret or a token.",
            check="allowed_origins",
        )
    return None


def check_token_origin(
    key: KeyPolicy, facts: Facts, credential: str | TokenPolicy | None
) -> Rejection | None:
    """A token bound to origins holds only from them: never relaxed by report mode (no `check`)."""
    if facts.origin is not None and isinstance(credential, TokenPolicy):
        if not origin_allowed(facts.origin, credential.origins):
            return reject(
                "origin_not_allowed",
                f"Origin {facts.origin} is not allowed for key {key.key_id}.",
                detail=facts.origin,
            )
    return None


def _ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_client(key: KeyPolicy, facts: Facts) -> Rejection | None:
    """The IP, user-agent and HTTP-method allowlists: the first that refuses."""
    return next((rejection for rejection in client_rejections(key, facts) if rejection), None)


def client_rejections(
    key: KeyPolicy, facts: Facts
) -> tuple[Rejection | None, Rejection | None, Rejection | None]:
    """What the IP, user-agent and HTTP-method allowlists each say, in that order (each may be in
    report mode, so a relay needs all three, proxy/report.py)."""
    return check_ip(key, facts), check_user_agent(key, facts), check_http_method(key, facts)


def check_ip(key: KeyPolicy, facts: Facts) -> Rejection | None:
    if key.networks:
        address = _ip_of(facts.client_address)
        if address is None or not any(address in network for network in key.networks):
            return reject(
                "ip_not_allowed",
                f"Client address {facts.client_address} is not allowed for {key.key_id}.",
                detail=facts.client_address,
                check="allowed_ips",
            )
    return None


def check_user_agent(key: KeyPolicy, facts: Facts) -> Rejection | None:
    if key.user_agents and not user_agent_allowed(facts.user_agent, key.user_agents):
        return reject(
            "user_agent_not_allowed",
            f"This user agent is not allowed for {key.key_id}.",
            detail=facts.user_agent,
            check="allowed_user_agents",
        )
    return None


def check_http_method(key: KeyPolicy, facts: Facts) -> Rejection | None:
    if key.http_methods:
        for method in (facts.method, *facts.method_overrides):
            if method not in key.http_methods:
                return reject(
                    "http_method_not_allowed",
                    f"HTTP method {method[:20]} is not allowed for {key.key_id}.",
                    detail=method,
                    check="allowed_http_methods",
                )
    return None


def _refuse_duplicate_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """JSON objects with one value per name, whatever its case: parsers disagree on which of two
    `method`s counts (this one read the last, many upstreams the first; Go's reads `Method` as `method`),
    so a body whose meaning depends on it is refused."""
    payload = dict(pairs)
    # Go's encoding/json (geth, erigon, ...) matches names regardless of case (Unicode case folding)
    # and keeps the last: next to "method", a "Method" or "METHOD" would be the call the upstream runs.
    if len({name.casefold() for name in payload}) != len(pairs):
        raise ValueError("duplicate name in a JSON object")
    return payload


def rpc_methods_of(body: bytes) -> list[str] | None:
    """The method names of a JSON-RPC call or batch; None when the body is not JSON-RPC (not JSON,
    a name twice in one object, or nested past the parser's depth)."""
    try:
        payload = json.loads(body, object_pairs_hook=_refuse_duplicate_names)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    calls = payload if isinstance(payload, list) else [payload]
    if not calls or not all(isinstance(call, dict) and isinstance(call.get("method"), str) for call in calls):
        return None
    return [call["method"] for call in calls]


def check_rpc_methods(key: KeyPolicy, body: bytes) -> Rejection | None:
    methods = rpc_methods_of(body)
    if methods is None:
        return reject(
            "invalid_rpc_request",
            f"{key.key_id} allows only listed JSON-RPC methods; the body is not JSON-RPC.",
        )
    refused = [method for method in methods if method not in key.rpc_methods]
    if refused:
        # A batch names each refused method once, the first few only (the counter bounds the length).
        names = list(dict.fromkeys(refused))
        return reject(
            "rpc_method_not_allowed",
            f"JSON-RPC method {refused[0][:100]!r} is not allowed for {key.key_id}.",
            detail=", ".join(names[:RPC_DETAIL_METHODS]),
            check="allowed_rpc_methods",
        )
    return None
