"""One HTTP POST of a signed webhook body to an endpoint, to the address that was checked.

The endpoint's host is resolved and checked (validators.check_webhook_destination) at every attempt and
the connection goes to that address, with the endpoint's host name for TLS and `Host`: a receiver that
re-points its DNS at an internal address between checks (DNS rebinding) reaches nothing. Redirects are
never followed (a 3xx is a failed attempt), and at most RESPONSE_KEEP_BYTES of the answer are read.
"""

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError

from keys import validators

RESPONSE_KEEP_BYTES = 1024
USER_AGENT = "keyportal-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str
    response: str
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(*, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """POST `body` to `url`; never raises for what the receiver or the network does."""
    started = time.monotonic()

    def done(status_code: int | None, error: str, response: str = "") -> Attempt:
        return Attempt(status_code, error, response, int((time.monotonic() - started) * 1000))

    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = validators.check_webhook_destination(
            url, allow_private=settings.KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK
        )
    except ValidationError as exc:
        return done(None, exc.messages[0])
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = urllib3.Timeout(total=settings.KEYS_WEBHOOK_TIMEOUT_SECONDS)
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            addresses[0],
            port,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            retries=False,
            timeout=timeout,
        )
    else:
        pool = urllib3.HTTPConnectionPool(addresses[0], port, retries=False, timeout=timeout)
    netloc_host = f"[{host}]" if ":" in host else host
    host_header = netloc_host if parts.port is None else f"{netloc_host}:{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        response = pool.urlopen(
            "POST",
            target,
            body=body,
            headers={
                **headers,
                "Host": host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            text = response.read(RESPONSE_KEEP_BYTES, decode_content=False).decode("utf-8", "replace")
        finally:
            response.release_conn()
            response.close()
    except urllib3.exceptions.TimeoutError:
        return done(None, "timeout")
    except urllib3.exceptions.HTTPError as exc:
        return done(None, f"connection failed: {type(exc).__name__}")
    finally:
        pool.close()
    status = response.status
    error = "" if 200 <= status < 300 else f"answered {status}"
    return done(status, error, text)
