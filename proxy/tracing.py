"""W3C Trace Context (traceparent, tracestate): the caller's trace kept when well formed, else a new
one; the upstream hop gets the same trace id under a new parent id, as a proxy's own span would."""

import random
import re
from dataclasses import dataclass

from django.http import HttpRequest

# Version 00: 32 lowercase hex (trace id), 16 (parent id), 2 (flags); all-zero ids are invalid.
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Where the request's trace, once read, is kept: a key of its WSGI environ, never a header.
TRACE = "proxy.trace"
# Longer lists may be cut by any hop (the spec asks for at least 512 characters to be passed on).
TRACESTATE_MAX = 512
NOT_SAMPLED = "00"  # a trace the proxy starts: it records no spans of its own


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    flags: str
    tracestate: str | None  # only ever kept with the caller's valid traceparent


def _random_hex(bits: int) -> str:
    """A random id that is never all zeros (the spec's invalid value). Trace ids need to be unique, not
    secret: `random`, reseeded in every forked worker, spares the hot path os.urandom's system calls."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


def trace_of(request: HttpRequest) -> Trace:
    """The request's trace, read once: the caller's when its traceparent is well formed, else a new one."""
    trace: Trace | None = request.META.get(TRACE)
    if trace is None:
        match = TRACEPARENT.match(request.META.get("HTTP_TRACEPARENT", "").strip())
        if match and match[1] != "0" * 32 and match[2] != "0" * 16:
            state = request.META.get("HTTP_TRACESTATE", "").strip()
            keep = 0 < len(state) <= TRACESTATE_MAX and state.isprintable()
            trace = Trace(match[1], match[3], state if keep else None)
        else:
            trace = Trace(_random_hex(128), NOT_SAMPLED, None)
        request.META[TRACE] = trace
    return trace


def upstream_trace_headers(trace: Trace) -> dict[str, str]:
    """traceparent (and tracestate) for the upstream hop: the same trace id, a new parent id."""
    headers = {"traceparent": f"00-{trace.trace_id}-{_random_hex(64)}-{trace.flags}"}
    if trace.tracestate:
        headers["tracestate"] = trace.tracestate
    return headers
