"""One access line per proxied request (logger `proxy.access`), written when the answer is done (a
streamed one when it ends or is cut). It holds no secret, token,
credential or query string: the path only (the query may carry the upstream's credential)."""

import contextlib
import logging
import random
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from keys.log_context import bind_key
from keys.request_ids import request_id
from proxy.policy import KeyPolicy
from proxy.tracing import trace_of

logger = logging.getLogger("proxy.access")
PATH_MAX = 512  # a longer path is cut: the line stays one line of a sane size


@dataclass(slots=True)
class Access:
    """What the access line reports, filled in as the relay learns it."""

    request: HttpRequest
    started: float
    upstream: str | None = None
    key: str | None = None
    tenant: int | None = None
    code: str | None = None  # the contract's error code of a refusal
    bound: Token["Access | None"] | None = None

    def write(self, status: int) -> None:
        """The access line, when the settings ask for this one."""
        if not settings.PROXY_ACCESS_LOG or not logger.isEnabledFor(logging.INFO):
            return  # (before the line's fields are gathered: that is most of its cost)
        sample = settings.PROXY_ACCESS_LOG_SAMPLE
        if status < 500 and sample < 1.0 and random.random() >= sample:  # noqa: S311  (not security)
            return  # sampled out; server errors are always written
        request = self.request
        logger.info(
            "%s %s %s",
            request.method,
            request.path[:PATH_MAX],
            status,
            extra={
                "request_id": request_id(request),
                "method": request.method,
                "path": request.path[:PATH_MAX],
                "upstream": self.upstream,
                "key": self.key,
                "tenant": self.tenant,
                "status": status,
                "code": self.code,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "trace_id": trace_of(request).trace_id,
            },
        )


_current: ContextVar[Access | None] = ContextVar("proxy_access", default=None)


def begin(request: HttpRequest, upstream: str | None) -> Access:
    """Start the request's access record; the relay adds to it through `note_key` and `note_code`."""
    access = Access(request, time.perf_counter(), upstream=upstream)
    access.bound = _current.set(access)
    return access


def note_key(key: KeyPolicy | None) -> None:
    """The call's key is known: on its access line and on every later log line of the call."""
    if key is not None:
        bind_key(key.key_id, key.tenant_id)
        if (access := _current.get()) is not None:
            access.key, access.tenant = key.key_id, key.tenant_id


def note_code(code: str) -> None:
    if (access := _current.get()) is not None:
        access.code = code


def end(access: Access, status: int) -> None:
    """The request is answered (a streamed answer to its end, or cut): write its line."""
    if access.bound is not None:
        with contextlib.suppress(ValueError):  # a call abandoned by its server ends in another context
            _current.reset(access.bound)
        access.bound = None
    access.write(status)
