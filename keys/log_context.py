"""What every log line carries: the id of the request being served, from a context variable that the
site's RequestIdMiddleware and the proxy's fast path set, read by a logging filter; and on a proxied
call, once its key is known, the key id and the tenant (`key`, `tenant`, as on the access line)."""

import logging
from contextvars import ContextVar, Token

from pythonjsonlogger.json import JsonFormatter

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
# (key id, tenant id) of the proxied call being served, once the relay found its key.
current_key: ContextVar[tuple[str, int] | None] = ContextVar("current_key", default=None)


def bind_request_id(request_id: str) -> Token[str | None]:
    """Mark every log line of this thread's work as the request's, until `unbind_request_id`."""
    return current_request_id.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    current_request_id.reset(token)
    current_key.set(None)  # the call is over: its key no longer speaks for this thread's lines


def bind_key(key_id: str, tenant_id: int) -> None:
    """Mark this request's later log lines with its key and tenant (until `unbind_request_id`)."""
    current_key.set((key_id, tenant_id))


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record, and `key` and `tenant` on a proxied
    call's, unless the record brings its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        if (key := current_key.get()) is not None:
            if not hasattr(record, "key"):
                record.key = key[0]
            if not hasattr(record, "tenant"):
                record.tenant = key[1]
        return True


def json_formatter() -> JsonFormatter:
    """The production formatter: one JSON object a line; a record's extra fields become its keys."""
    return JsonFormatter(
        ["asctime", "levelname", "name", "message", "request_id"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def logging_config(*, log_format: str, level: str) -> dict[str, object]:
    """The LOGGING dict of every process (server, Celery worker and beat): one JSON object a line in
    production, readable text for people (`LOG_FORMAT=text`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "keys.log_context.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "keys.log_context.json_formatter"},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if log_format == "json" else "text",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Refusals (4xx) are answers, not incidents: django.request logs only server errors.
            "django.request": {"level": "ERROR"},
            # Its DEBUG lines hold every upstream URL, query credential included: never below INFO.
            "urllib3": {"level": "INFO"},
        },
    }
