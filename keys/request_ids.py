"""The request id: chosen once per request, the caller's own when it is a sane token."""

import random
import re

from django.http import HttpRequest

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def request_id(request: HttpRequest) -> str:
    """The request's id, chosen once: the caller's X-Request-Id when it is a sane token, else a new one."""
    chosen = getattr(request, "request_id", None)
    if chosen is None:
        incoming = request.headers.get("X-Request-Id", "")
        # An id is for finding log lines, not a secret (a caller may choose its own): a fast random number,
        # not os.urandom's system call (uuid4's). `random` is reseeded in every forked worker.
        chosen = incoming if REQUEST_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        setattr(request, "request_id", chosen)  # noqa: B010  (HttpRequest declares no request_id)
    return chosen
