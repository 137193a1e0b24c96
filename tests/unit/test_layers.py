"""Dependencies point one way: scripts -> composition -> web_companion -> bot -> storage.

Read from the source with ast (every import, also those inside functions), so a new import that
points the wrong way fails here before it tangles the packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each package may import itself and the packages after it, never one before it.
LAYERS = ("scripts", "web_companion", "bot", "storage")
OURS = set(LAYERS)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import statement in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_itself_and_the_packages_below_it(package):
    forbidden = set(LAYERS[:LAYERS.index(package)])
    wrong = [f"{_where(p, line)} imports {module}" for p in _modules(package)
             for module, _, line in _imports(p) if module.split(".")[0] in forbidden]
    assert wrong == []


def test_only_the_composition_root_and_the_entry_points_above_it_know_every_package():
    # The composition root builds the server from the packages below; it never reaches up into the
    # commands that use it.
    wrong = [f"{_where(p, line)} imports {module}" for p in _modules("scripts/composition")
             for module, _, line in _imports(p)
             if module.startswith("scripts.") and not module.startswith("scripts.composition")]
    assert wrong == []


def test_the_report_command_does_not_import_the_command_line_that_mounts_it():
    assert [m for m, _, _ in _imports(ROOT / "scripts" / "report.py") if m == "scripts.cli"] == []


def test_no_module_imports_another_modules_private_names():
    wrong = [f"{_where(p, line)} takes {n} from {module}"
             for package in LAYERS for p in _modules(package)
             for module, names, line in _imports(p)
             if module.split(".")[0] in OURS and module != _name(p)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert wrong == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    # A test that cannot fail is a defect: the same parsing finds an upward import in a sample file.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from web_companion.login import LoginCodes\n", encoding="utf-8")
    assert [m for m, _, _ in _imports(sample)] == ["web_companion.login"]
