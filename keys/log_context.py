"""What every log line carries: the id of the request being served, from a context variable that the
site's RequestIdMiddleware and the proxy's fast path set, read by a logging filter."""

import logging
from contextvars import ContextVar, Token

from pythonjsonlogger.json import JsonFormatter

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def bind_request_id(request_id: str) -> Token[str | None]:
    """Mark every log line of this thread's work as the request's, until `unbind_request_id`."""
    return current_request_id.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    current_request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record, unless the record brings its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
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
