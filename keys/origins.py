"""Origin allowlist entries: parsing, matching a request's `Origin`, and narrowing (DESIGN.md).

Entry forms: `https://app.example.com` (scheme and host, default port), `https://app.example.com:8443`,
`app.example.com` (any scheme, default port), `*.example.com` (any subdomain, not the apex; with or
without a scheme). Hosts compare case-insensitively; there is no other wildcard; `null` matches nothing.
"""

import functools
import ipaddress
import re
from dataclasses import dataclass

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ORIGIN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^/:?#\[\]@]+)(?::(?P<port>\d{1,5}))?$"
)


class OriginError(ValueError):
    """An allowlist entry or an Origin header that is not one of the accepted forms."""


@dataclass(frozen=True)
class OriginPattern:
    scheme: str | None  # None: any scheme
    host: str  # lower case; for a wildcard, the suffix after "*."
    port: int | None  # None: the scheme's default port
    wildcard: bool = False

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        scheme = f"{self.scheme}://" if self.scheme else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{scheme}{host}{port}"


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int  # always explicit: the default port when the header names none


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if len(host) > 253:
        return False
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        # Only a plain dotted quad is an IPv4 origin; 127.1 or 2130706433 are not origins browsers send.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return all(_LABEL.match(label) for label in labels)


def _normalise_host(host: str) -> str:
    host = host.lower().rstrip(".") if not host.startswith("[") else host.lower()
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise OriginError(f"{host!r} is not a valid host name") from exc


def parse_pattern(entry: str) -> OriginPattern:
    """Parse one allowlist entry, or raise OriginError saying what is wrong with it."""
    if not isinstance(entry, str) or not entry.strip():
        raise OriginError("an origin must be a non-empty string")
    text = entry.strip()
    if any(ch.isspace() for ch in text):
        raise OriginError(f"{entry!r} contains white space: one origin a line, as https://app.example.com")
    scheme = None
    if "://" in text:
        scheme, _, text = text.partition("://")
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise OriginError(f"{entry!r}: only http and https origins are allowed")
    elif ":" in text and not text.startswith("["):
        if text.partition(":")[2].isdigit():
            raise OriginError(f"{entry!r}: write a port only with a scheme, as https://host:port")
        raise OriginError(f"{entry!r}: only http and https origins are allowed")
    if any(ch in text for ch in "/?#@\\"):
        raise OriginError(f"{entry!r}: an origin is a scheme and a host only, without a path or user")
    port = None
    if not text.startswith("[") and ":" in text:
        text, _, port_text = text.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise OriginError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    elif text.startswith("[") and "]:" in text:
        text, _, port_text = text.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise OriginError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    wildcard = text.startswith("*.")
    host = _normalise_host(text[2:] if wildcard else text)
    if "*" in host:
        raise OriginError(f"{entry!r}: the only wildcard allowed is a leading '*.'")
    if not _valid_host(host):
        raise OriginError(f"{entry!r}: {host!r} is not a valid host name")
    if wildcard and (host.startswith("[") or len(host.split(".")) < 2 or host.replace(".", "").isdigit()):
        raise OriginError(f"{entry!r}: a wildcard needs a domain of at least two labels, as *.example.com")
    if port is not None and scheme and DEFAULT_PORTS[scheme] == port:
        port = None
    return OriginPattern(scheme=scheme, host=host, port=port, wildcard=wildcard)


@functools.lru_cache(maxsize=4096)
def parse_origin(header: str) -> Origin | None:
    """Parse a request's Origin header; None for `null`, other schemes and anything malformed.
    Cached: a busy key sees the same few origins on every request."""
    match = _ORIGIN.match(header.strip().lower()) if header else None
    if not match or match["scheme"] not in SCHEMES:
        return None
    host = match["host"].rstrip(".")
    if not _valid_host(host):
        return None
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[match["scheme"]]
    return Origin(scheme=match["scheme"], host=host, port=port)


def pattern_matches(pattern: OriginPattern, origin: Origin) -> bool:
    if pattern.scheme is not None and pattern.scheme != origin.scheme:
        return False
    expected_port = pattern.port if pattern.port is not None else DEFAULT_PORTS[origin.scheme]
    if expected_port != origin.port:
        return False
    if pattern.wildcard:
        return origin.host.endswith("." + pattern.host)
    return origin.host == pattern.host


def origin_allowed(header: str, patterns: list[OriginPattern] | tuple[OriginPattern, ...]) -> bool:
    """True when the Origin header matches one of the patterns. An empty allowlist allows every origin."""
    if not patterns:
        return True
    origin = parse_origin(header)
    return origin is not None and any(pattern_matches(pattern, origin) for pattern in patterns)


def pattern_within(narrow: OriginPattern, wide: OriginPattern) -> bool:
    """True when every origin `narrow` matches is also matched by `wide`."""
    if wide.scheme is not None and narrow.scheme != wide.scheme:
        return False
    if narrow.port != wide.port:
        return False
    if wide.wildcard:
        return narrow.host.endswith("." + wide.host) or (narrow.wildcard and narrow.host == wide.host)
    return not narrow.wildcard and narrow.host == wide.host


def patterns_within(narrow: list[OriginPattern], wide: list[OriginPattern]) -> list[OriginPattern]:
    """The entries of `narrow` that `wide` does not cover (empty when the narrowing is sound)."""
    if not wide:
        return []
    return [entry for entry in narrow if not any(pattern_within(entry, outer) for outer in wide)]
