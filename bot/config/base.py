"""What every section shares: strict, frozen models that refuse unknown keys, and small checks."""

from __future__ import annotations

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
    """None when `text` formats with only `allowed` placeholders, else what is wrong with it."""
    try:
        text.format(**{k: 0 for k in allowed})
    except (KeyError, IndexError) as e:
        return f"unknown placeholder {e} (allowed: {', '.join(allowed) or 'none'})"
    except ValueError as e:
        return f"bad braces: {e}"
    return None


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
