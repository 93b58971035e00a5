"""Strict JSON in: no NaN or Infinity, text that every database can store, and a bounded size."""

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, parsers

from keys.api.errors import ApiError


def _storable(data: object) -> object:
    """Refuse lone surrogates (valid JSON escapes, but not UTF-8): PostgreSQL would refuse them later."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise exceptions.ParseError(
            "JSON parse error - the body contains text that is not valid Unicode."
        ) from exc
    return data


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> object:
    """A JSON document from bytes, or ParseError. Empty means an empty object."""
    if len(raw) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise ApiError("payload_too_large", "The request body is too large.")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        return _storable(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise exceptions.ParseError("JSON parse error - the body is not valid JSON.") from exc
    except RecursionError as exc:  # a body nested deeper than the parser goes: a client's input, not a fault
        raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from exc


class StrictJSONParser(parsers.JSONParser):
    # The stubs have JSONParser.parse return a dict, but a JSON body may be any JSON value (DRF hands a
    # list or a string on as request.data), and so may this one.
    def parse(  # type: ignore[override]
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> object:
        if stream is None:
            return {}
        return parse_json(stream.read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
