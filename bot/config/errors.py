"""ConfigError, and the translation of pydantic's report into one line naming the dotted key."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError


class ConfigError(Exception):
    """A configuration problem, with the dotted key it concerns."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


def problem(key: str, text: str) -> PydanticCustomError:
    """A cross-field problem raised by a model validator, naming `key` relative to that model.

    pydantic locates a validator's error at the model; `key` says which field of it is wrong."""
    return PydanticCustomError("key_problem", "{problem}", {"key": key, "problem": text})


def dotted(loc: tuple[Any, ...], tail: str = "") -> str:
    """('channels', 0, 'weight') -> 'channels[0].weight'; `tail` is appended as a key below it."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    if tail:
        key += tail if tail.startswith("[") or not key else f".{tail}"
    return key


def _text(err: Any) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    words = {
        "missing": "is required",
        "extra_forbidden": "unknown key",
        "int_type": f"must be an integer (got {value!r})",
        "float_type": f"must be a number (got {value!r})",
        "bool_type": f"must be true or false (got {value!r})",
        "string_type": f"must be a string (got {value!r})",
        "tuple_type": f"must be a list (got {type(value).__name__})",
        "model_type": "must be a table",
        "dict_type": "must be a table",
        "mapping_type": "must be a table",
        "greater_than": f"must be greater than {ctx.get('gt')} (got {value!r})",
        "greater_than_equal": f"must be >= {ctx.get('ge')} (got {value!r})",
        "less_than_equal": f"must be <= {ctx.get('le')} (got {value!r})",
        "literal_error": f"must be {ctx.get('expected')} (got {value!r})",
        "too_short": "must not be empty",
        "key_problem": ctx.get("problem", ""),
        "value_error": str(ctx.get("error", "")),
    }
    return words.get(kind, err["msg"])


def from_validation(exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, as one ConfigError (fields in their declared order)."""
    err = exc.errors(include_url=False)[0]
    tail = (err.get("ctx") or {}).get("key", "") if err["type"] == "key_problem" else ""
    return ConfigError(dotted(tuple(err["loc"]), tail), _text(err))
