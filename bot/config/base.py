"""What every section shares: strict, frozen models that refuse unknown keys, and small checks."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo


class Section(BaseModel):
    """A config table: every key declared, typed strictly (no "5" for 5), frozen once built."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _as_tuple(value: Any) -> Any:
    # TOML arrays arrive as lists; the frozen config holds tuples. Anything else fails the tuple check.
    return tuple(value) if isinstance(value, list) else value


AsTuple = BeforeValidator(_as_tuple)
Strs = Annotated[tuple[str, ...], AsTuple]
# Read-only views: a frozen model still hands out its dict, so tables are wrapped.
Frozen = AfterValidator(types.MappingProxyType)
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def empty_map() -> types.MappingProxyType[str, Any]:
    return types.MappingProxyType({})


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(http_url)]


def check_placeholders(text: str, allowed: tuple[str, ...]) -> str | None:
    """None when `text` formats with only `allowed` placeholders, else what is wrong with it. `{unit}`
    is allowed everywhere: the config puts the unit's name in before anything is formatted."""
    try:
        text.format(**{"unit": 0, **{k: 0 for k in allowed}})
    except (KeyError, IndexError) as e:
        return f"unknown placeholder {e} (allowed: {', '.join(allowed) or 'none'})"
    except ValueError as e:
        return f"bad braces: {e}"
    return None


_UNIT_MARK = re.compile(r"(?<!\{)\{unit\}(?!\})")


def with_unit(value: Any, unit: str) -> Any:
    """`value` with `{unit}` in every string of it replaced by `unit` (sections, tables and arrays
    included); the very same object when nothing changed."""
    if isinstance(value, str):
        return _UNIT_MARK.sub(unit, value) if "{unit}" in value else value
    if isinstance(value, BaseModel):
        changed = {k: new for k in type(value).model_fields
                   if (new := with_unit(old := getattr(value, k), unit)) is not old}
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, tuple):
        items = tuple(with_unit(v, unit) for v in value)
        return items if any(a is not b for a, b in zip(items, value)) else value
    if isinstance(value, types.MappingProxyType):
        table = {k: with_unit(v, unit) for k, v in value.items()}
        return types.MappingProxyType(table) if any(table[k] is not value[k] for k in value) else value
    return value


def base_dir(info: ValidationInfo) -> Path:
    """The config file's folder, handed to validation by load_config (relative paths start there)."""
    return Path((info.context or {}).get("base_dir", "."))


def resolve(folder: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else folder / p


def readable_text_problem(p: Path) -> str | None:
    if not p.is_file():
        return f"file not found: {str(p)!r}"
    try:
        p.read_text(encoding="utf-8")
    except OSError as e:
        return f"cannot read {str(p)!r}: {e.strerror}"
    except UnicodeDecodeError:
        return f"{str(p)!r} is not UTF-8 text"
    return None
