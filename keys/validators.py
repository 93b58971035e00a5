"""Validation of allowlist entries, rates and upstream URLs, with messages a tenant can act on.

Each `clean_*` function takes what a user typed and returns the normalised value, or raises
django.core.exceptions.ValidationError. Models, forms, the API and the commands all call these.
"""

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from keys import origins

# A tenant's or an upstream's slug: 1 to 50 lower-case letters, digits and hyphens, no hyphen at an end.
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")


def is_slug(value: object) -> bool:
    """Whether `value` could be a slug: text of another shape (a NUL, which PostgreSQL refuses in a
    query) is known to match nothing before any lookup."""
    return isinstance(value, str) and SLUG.fullmatch(value) is not None


RATE = re.compile(r"^(?P<count>[1-9]\d{0,8})/(?P<multiplier>[1-9]\d{0,4})?(?P<unit>[smhd])$")
RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HTTP_METHOD = re.compile(r"^[A-Z][A-Z-]{0,31}$")
RPC_METHOD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
WILDCARD_RUN = re.compile(r"\*{2,}")

Resolver = Callable[[str], list[str]]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _as_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValidationError(f"{what} must be a list.")
    if len(value) > settings.KEYS_MAX_ALLOWLIST_ENTRIES:
        raise ValidationError(f"At most {settings.KEYS_MAX_ALLOWLIST_ENTRIES} entries are allowed.")
    for item in value:
        if not isinstance(item, str):
            raise ValidationError(f"Each entry of {what} must be a string, not {item!r}.")
    return list(value)


def _collect(values: list[str], clean_one: Callable[[str], str]) -> list[str]:
    cleaned: list[str] = []
    errors: list[str] = []
    for value in values:
        try:
            cleaned.append(clean_one(value))
        except ValidationError as exc:
            errors.extend(exc.messages)
    if errors:
        raise ValidationError(errors)
    return _unique(cleaned)


def clean_origin(entry: str) -> str:
    try:
        return str(origins.parse_pattern(entry))
    except origins.OriginError as exc:
        raise ValidationError(str(exc), code="invalid_origin") from exc


def clean_origins(value: object) -> list[str]:
    """Allowed origins, normalised (lower-case host, default port dropped)."""
    return _collect(_as_list(value, "allowed origins"), clean_origin)


def clean_network(entry: str) -> str:
    text = entry.strip()
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        raise ValidationError(
            f"{entry!r} is not an IP address or a CIDR network (e.g. 203.0.113.0/24) without host bits set.",
            code="invalid_ip",
        ) from exc


def clean_networks(value: object) -> list[str]:
    """Allowed client IPs and CIDR networks, IPv4 or IPv6."""
    return _collect(_as_list(value, "allowed IPs"), clean_network)


def clean_user_agent(entry: str) -> str:
    """A user-agent pattern: printable text where * matches any run of characters (runs of * are one)."""
    text = WILDCARD_RUN.sub("*", entry.strip())
    max_length, max_wildcards = settings.KEYS_USER_AGENT_MAX_LENGTH, settings.KEYS_USER_AGENT_MAX_WILDCARDS
    if not text or len(text) > max_length or not text.isprintable():
        raise ValidationError(
            f"{entry[:max_length]!r} is not a user-agent pattern (printable text up to {max_length} "
            "characters; * matches any run of characters).",
            code="invalid_user_agent",
        )
    if (wildcards := text.count("*")) > max_wildcards:
        raise ValidationError(
            f"{text!r} has {wildcards} wildcards; a user-agent pattern may have at most {max_wildcards}.",
            code="invalid_user_agent",
        )
    return text


def clean_user_agents(value: object) -> list[str]:
    entries = _as_list(value, "allowed user agents")
    if len(entries) > settings.KEYS_MAX_USER_AGENTS:
        raise ValidationError(f"At most {settings.KEYS_MAX_USER_AGENTS} user-agent patterns are allowed.")
    return _collect(entries, clean_user_agent)


def clean_http_method(entry: str) -> str:
    text = entry.strip().upper()
    if not HTTP_METHOD.match(text):
        raise ValidationError(f"{entry!r} is not an HTTP method (e.g. GET, POST).", code="invalid_method")
    return text


def clean_http_methods(value: object) -> list[str]:
    return _collect(_as_list(value, "allowed HTTP methods"), clean_http_method)


def clean_rpc_method(entry: str) -> str:
    text = entry.strip()
    if not RPC_METHOD.match(text):
        raise ValidationError(
            f"{entry!r} is not a JSON-RPC method name (letters, digits, _ . : -).", code="invalid_rpc_method"
        )
    return text


def clean_rpc_methods(value: object) -> list[str]:
    return _collect(_as_list(value, "allowed JSON-RPC methods"), clean_rpc_method)


# The kinds of check a key may set to report-only (DESIGN.md checks 6-8), named as the key's fields.
# A request such a check would refuse passes and is counted as would-be refused.
REPORT_ONLY_CHECKS = (
    "allowed_origins",
    "allowed_ips",
    "allowed_user_agents",
    "allowed_http_methods",
    "allowed_rpc_methods",
    "rate_limit",
    "daily_quota",
)


# The check behind each refusal code a report-mode check can count (keys.usage WOULD_REJECT rows).
REPORT_CHECK_OF_CODE = {
    "origin_not_allowed": "allowed_origins",
    "origin_required": "allowed_origins",
    "ip_not_allowed": "allowed_ips",
    "user_agent_not_allowed": "allowed_user_agents",
    "http_method_not_allowed": "allowed_http_methods",
    "rpc_method_not_allowed": "allowed_rpc_methods",
    "rate_limited": "rate_limit",
    "quota_exceeded": "daily_quota",
}


def clean_report_only(value: object) -> list[str]:
    """The checks in report mode, each once, in REPORT_ONLY_CHECKS' order; anything else is refused."""
    names = _as_list(value, "report-only checks")
    unknown = [str(name)[:50] for name in names if name not in REPORT_ONLY_CHECKS]
    if unknown:
        raise ValidationError(
            f"{unknown[0]!r} is not a check that can report only: use {', '.join(REPORT_ONLY_CHECKS)}.",
            code="invalid_report_only",
        )
    return [name for name in REPORT_ONLY_CHECKS if name in names]


def clean_rate(value: str | None) -> str | None:
    """A django-ratelimit rate such as 100/m or 10/5s; None or empty means no limit."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not RATE.match(value.strip()):
        raise ValidationError(
            f"{value!r} is not a rate: write N/s, N/m, N/h or N/d (e.g. 100/m).", code="invalid_rate"
        )
    return value.strip()


def rate_parts(rate: str) -> tuple[int, int]:
    """(requests, window seconds) of a rate that clean_rate accepted."""
    match = RATE.match(rate)
    if match is None:
        raise ValueError(f"not a rate: {rate!r}")
    multiplier = int(match["multiplier"] or 1)
    return int(match["count"]), multiplier * RATE_UNIT_SECONDS[match["unit"]]


# --- Upstream URLs and SSRF --------------------------------------------------------------------


def address_is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local,
    multicast, reserved, unspecified and shared addresses, IPv4-mapped and 6to4/Teredo forms included."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not address_is_public(str(embedded)):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback)


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to. getaddrinfo also reads the numeric forms an attacker might
    use for a loopback address: 2130706433, 0177.0.0.1, 0x7f.1, 127.1."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError(f"The host {host!r} could not be resolved.", code="unresolvable") from exc
    return _unique(str(info[4][0]) for info in infos)  # an address (AF_INET/AF_INET6: always a str)


def clean_upstream_url(value: str) -> str:
    """An upstream base URL: http or https, a host, no user info, query or fragment."""
    return _clean_url(value, ("http", "https"), "base URL")


def clean_upstream_websocket_url(value: str) -> str:
    """An upstream's own WebSocket URL, when it differs from its base URL's (Infura's `/ws/v3/`): ws or
    wss, a host, no user info, query or fragment. Empty: derived from the base URL."""
    if isinstance(value, str) and not value.strip():
        return ""
    return _clean_url(value, ("ws", "wss"), "WebSocket URL")


def _clean_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"Enter the upstream's {what}.", code="required")
    text = value.strip()
    if any(ch.isspace() or ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text):  # C0, DEL, C1
        raise ValidationError(
            "The URL may not contain white space or control characters.", code="invalid_url"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a valid URL.", code="invalid_url") from exc
    if parts.scheme.lower() not in schemes:
        allowed = " and ".join(schemes)
        raise ValidationError(f"Only {allowed} upstream {what}s are allowed.", code="invalid_scheme")
    if not parts.hostname:
        raise ValidationError("The URL has no host.", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Put credentials in the upstream's auth settings, not in the URL.", code="credentials_in_url"
        )
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValidationError(
            f"The {what} may not have a query or fragment; use auth type 'query' for a key parameter.",
            code="invalid_url",
        )
    if port == 0:
        raise ValidationError("The port must be from 1 to 65535.", code="invalid_url")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def check_public_destination(url: str, *, resolve: Resolver = resolve_host) -> list[str]:
    """Resolve the URL's host and refuse it unless every address is public. Returns the addresses,
    so a caller can connect to the address it checked (DNS rebinding)."""
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        addresses = resolve(host)
    refused = [address for address in addresses if not address_is_public(address)]
    if refused or not addresses:
        raise ValidationError(
            f"The upstream host {host!r} resolves to a non-public address ({', '.join(refused) or 'none'}); "
            "only staff may allow an upstream on a private network.",
            code="private_address",
        )
    return addresses


# --- Upstream credentials ----------------------------------------------------------------------

# A header or query parameter name: letters, digits, - and _ (a subset of RFC 9110's token). Used with
# fullmatch: `$` alone would let a trailing line break through.
HEADER_OR_PARAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Hop-by-hop headers (RFC 9110 section 7.6.1): they concern one connection, so a proxy never relays them
# (proxy/outbound.py drops them both ways).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers an upstream credential may not claim: hop-by-hop ones, those that frame the message or route
# it, the client's credentials the proxy strips, and those the proxy sets itself.
RESERVED_HEADERS = HOP_BY_HOP | frozenset(
    {
        "authorization",
        "content-length",
        "cookie",
        "expect",
        "forwarded",
        "host",
        "traceparent",
        "tracestate",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    }
)
RESERVED_HEADER_PREFIXES = ("proxy-", "x-forwarded-", "sec-websocket-")
# What a credential sent in a header may hold: visible ASCII and inner spaces (RFC 9110 field-value).
HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def header_name_reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES)


def check_credential(*, auth_type: str, auth_name: str, auth_value: str | None) -> None:
    """Raise ValidationError by field (auth_name, auth_value) unless the proxy can send this credential
    as it is: no line break or control character anywhere (it would break every proxied request), a
    header name that is a token the proxy does not manage itself. `auth_value` None: not checked (the
    caller has none). No message ever quotes the value."""
    errors: dict[str, list[str]] = {}
    name = auth_name or ""
    if auth_type in ("header", "query"):
        kind = "header" if auth_type == "header" else "query parameter"
        if not HEADER_OR_PARAM_NAME.fullmatch(name):
            errors["auth_name"] = [f"Enter the {kind}'s name: 1 to 100 letters, digits, - and _."]
        elif auth_type == "header" and header_name_reserved(name):
            hint = " (use the basic or bearer auth type)" if name.lower() == "authorization" else ""
            errors["auth_name"] = [f"{name} is a header the proxy manages itself{hint}; choose another."]
    elif auth_type == "basic" and (":" in name or not name.isprintable()):
        errors["auth_name"] = ["The user may not contain a colon, line breaks or control characters."]
    if auth_value:
        if auth_type in ("bearer", "header"):
            if not HEADER_VALUE.fullmatch(auth_value):
                errors["auth_value"] = [
                    "The credential is sent in a header: use printable ASCII characters only, with no line "
                    "break, control character, or space at its start or end."
                ]
        elif not auth_value.isprintable():
            errors["auth_value"] = ["The credential may not contain line breaks or control characters."]
    if errors:
        raise ValidationError(errors)


# --- Webhook URLs --------------------------------------------------------------------------------


def clean_webhook_url(value: str) -> str:
    """A webhook endpoint's URL: as an upstream's (no user info, no fragment), https, a query allowed."""
    if not isinstance(value, str):
        raise ValidationError("Enter the endpoint's URL.", code="required")
    text = value.strip()
    base, sep, query = text.partition("?")
    if "#" in text:
        raise ValidationError("The URL may not have a fragment.", code="invalid_url")
    cleaned = clean_upstream_url(base)
    if query and any(ch.isspace() or ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in query):
        raise ValidationError(
            "The URL may not contain white space or control characters.", code="invalid_url"
        )
    return cleaned + (sep + query if query else "")


def check_webhook_destination(
    url: str, *, allow_private: bool, resolve: Resolver = resolve_host
) -> list[str]:
    """The addresses a delivery to `url` may connect to. Public hosts need https; with `allow_private`
    (the operator's KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK) a loopback or private receiver is allowed, over
    http too (no public CA certifies such an address)."""
    parts = urlsplit(url)
    if allow_private:
        host = parts.hostname or ""
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = resolve(host)
        if parts.scheme != "https" and any(address_is_public(address) for address in addresses):
            raise ValidationError("A webhook URL must use https.", code="invalid_scheme")
        return addresses
    if parts.scheme != "https":
        raise ValidationError("A webhook URL must use https.", code="invalid_scheme")
    try:
        return check_public_destination(url, resolve=resolve)
    except ValidationError as exc:
        raise ValidationError(
            f"The webhook host {parts.hostname!r} resolves to a non-public address.", code="private_address"
        ) from exc
