"""JSON in and out of the service: request bodies, envelopes and log lines, through orjson.

orjson (a compiled, widely used JSON library) does what the standard `json` module does here at a fraction of the
cost, and answers a body nested deeper than 1 024 levels with a decoding error where `json` raises RecursionError.
Anything orjson refuses to encode (an integer beyond 64 bits, a string with a lone surrogate, a dict with
non-string keys) is encoded by the standard module instead, so no value that encoded before fails now.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import orjson
from flask.json.provider import DefaultJSONProvider

# Flask's own `default` sees dates (HTTP date strings, not orjson's ISO 8601) and dataclasses (dataclasses.asdict),
# so the app's JSON stays what Flask's default provider makes.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_COMPACT = (",", ":")


def dumps_bytes(obj: Any, default: Callable[[Any], Any] | None = None, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON. `default` turns what JSON cannot represent into what it can (or raises TypeError)."""
    try:
        return orjson.dumps(obj, default=default, option=_PASSTHROUGH | (orjson.OPT_SORT_KEYS if sort_keys else 0))
    except orjson.JSONEncodeError:
        # Escaped to ASCII: a lone surrogate can then still be written to a UTF-8 stream.
        return json.dumps(obj, default=default, sort_keys=sort_keys, separators=_COMPACT).encode()


def loads(data: str | bytes) -> Any:
    """A JSON text (UTF-8 bytes or str). Raises ValueError (json.JSONDecodeError) for anything that is not one,
    including invalid UTF-8 and nesting deeper than 1 024 levels."""
    return orjson.loads(data)


class FastJSONProvider(DefaultJSONProvider):
    """Flask's default provider (its `default`, `sort_keys` and `response`), encoding and decoding with orjson.

    A call with `json.dumps` options orjson has no equivalent for (indent, for Flask's debug-mode responses) goes to
    the standard module, as Flask's would. Non-ASCII characters are written as UTF-8, not escaped."""

    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self.dumps_bytes(obj, **kwargs).decode()

    def dumps_bytes(self, obj: Any, **kwargs: Any) -> bytes:
        if any(name != "separators" or tuple(value) != _COMPACT for name, value in kwargs.items()):
            return super().dumps(obj, **kwargs).encode()
        return dumps_bytes(obj, self.default, sort_keys=self.sort_keys)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if kwargs:
            return super().loads(s, **kwargs)
        return loads(s)
