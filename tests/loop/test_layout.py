"""The import rules of ``loop/__init__.py``, read from the source: who may import whom, no circles."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("generators", "stores", "policies", "loop")

# package -> the project packages it may import (itself always allowed)
ALLOWED = {
    "loop.errors": set(),
    "loop.config": {"generators", "loop.errors"},
    "loop.train": {"loop.config", "stores", "loop.errors"},
    "loop.evaluate": {"loop.config", "loop.train", "generators", "stores", "loop.errors"},
    "loop.run": {"loop.config", "loop.train", "loop.evaluate", "generators", "stores", "policies", "loop.errors"},
    "loop.study": {"loop.config", "loop.train", "loop.evaluate", "loop.run", "generators", "stores", "policies",
                   "loop.errors"},
    "loop.bench": {"loop.config", "loop.train", "loop.evaluate", "loop.run", "loop.study", "generators", "stores",
                   "policies", "loop.errors"},
    "loop.cli": {"loop.config", "loop.train", "loop.evaluate", "loop.run", "loop.study", "loop.bench", "generators",
                 "stores", "policies", "loop.errors"},
    "generators": {"loop.errors"},
    "stores": {"generators", "loop.errors"},
    "policies": {"generators", "loop.errors"},
}
RAY_ALLOWED = ("loop.run",)
FSSPEC_ALLOWED = ("stores",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (deferred imports count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _group(module: str) -> str | None:
    """The rule group of a project module: ``loop.<sub>`` (or ``loop.errors``) or the top package."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "loop":
        return "loop" if len(parts) == 1 else f"loop.{parts[1]}"
    return parts[0]


MODULES = _modules()


def _project_imports(module: str) -> set[str]:
    return {name for name in _imports(MODULES[module], module) if name in MODULES}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m) in ALLOWED))
def test_a_module_imports_only_what_its_package_may(module: str) -> None:
    group = _group(module)
    bad = sorted(name for name in _project_imports(module)
                 if _group(name) not in (group, "loop") and _group(name) not in ALLOWED[group])
    assert not bad, f"{module} ({group}) imports {bad}; allowed: {sorted(ALLOWED[group])} (loop/__init__.py)"


def test_every_loop_subpackage_has_a_rule() -> None:
    groups = {_group(m) for m in MODULES} - {"loop"}
    assert groups <= set(ALLOWED), f"sub-packages without an import rule: {sorted(groups - set(ALLOWED))}"


def test_ray_and_fsspec_are_imported_only_where_the_rules_say() -> None:
    offenders = []
    for module, path in MODULES.items():
        names = {n.split(".")[0] for n in _imports(path, module)}
        if "ray" in names and not module.startswith(RAY_ALLOWED):
            offenders.append(f"{module} imports ray")
        if "fsspec" in names and not module.startswith(FSSPEC_ALLOWED):
            offenders.append(f"{module} imports fsspec")
    assert not offenders, offenders


def test_no_import_circles_between_modules() -> None:
    graph = nx.DiGraph()
    for module in MODULES:
        graph.add_node(module)
        for name in _project_imports(module):
            # a package's __init__ importing its own submodules is how it exports them, not a circle
            if name != module and not name.startswith(module + "."):
                graph.add_edge(module, name)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles: {cycles[:5]}"
