"""The README documents every config key an owner can set (a new key without docs fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from bot import config as c

ROOT = Path(__file__).resolve().parents[2]


def _sections(readme: str) -> dict[str, str]:
    parts = re.split(r"^### (.+)$", readme, flags=re.M)
    return {parts[i].split()[0]: parts[i + 1] for i in range(1, len(parts), 2)}


def _expected() -> dict[str, list[str]]:
    expected: dict[str, list[str]] = {}

    def is_table(tp: object) -> bool:
        return isinstance(tp, type) and issubclass(tp, BaseModel)

    def walk(cls: type[BaseModel], heading: str, prefix: str) -> None:
        for name, f in cls.model_fields.items():
            if is_table(f.annotation):
                walk(f.annotation, f"[{prefix}{name}]", f"{prefix}{name}.")  # type: ignore[arg-type]
            else:
                expected.setdefault(heading, []).append(name)

    for name, f in c.Config.model_fields.items():
        if is_table(f.annotation):
            walk(f.annotation, f"[{name}]", f"{name}.")  # type: ignore[arg-type]
    walk(c.ChannelConfig, "[[channels]]", "")
    walk(c.ModelConfig, "[models.NAME]", "")
    walk(c.ProductConfig, "[[products]]", "")
    return expected


def test_the_readme_documents_every_config_key_in_its_section():
    sections = _sections((ROOT / "README.md").read_text(encoding="utf-8"))
    missing = [f"{heading} {key}" for heading, keys in _expected().items() for key in keys
               if f"| `{key}` |" not in sections.get(heading, "")]
    assert missing == []


def test_the_shipped_config_toml_names_every_section():
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    absent = [h for h in _expected() if h.split(".")[0].strip("[]") not in text]
    assert absent == []
