"""Every package the code imports is declared in pyproject.toml (test-only ones in the test extras)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("generators", "stores", "policies", "loop")
# Modules shipped in the package for other projects' test suites (zarr's StoreTests style).
TEST_SUPPORT = {"generators/testing.py", "policies/testing.py"}


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def _third_party(paths) -> set[str]:
    names = set().union(*(_top_level_imports(p) for p in paths))
    return {n for n in names if n not in sys.stdlib_module_names and n not in PACKAGES and n != "__future__"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    return {_normalise(re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0]) for r in requirements}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    by_module = importlib.metadata.packages_distributions()
    return {m: {_normalise(d) for d in by_module.get(m, [])} for m in modules}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = _declared(PROJECT["dependencies"])
TEST = _declared(PROJECT["optional-dependencies"]["test"])
# moto (a test dependency) brings boto3; the cluster extra declares it for `ray up`.
EXTRAS = set().union(*(_declared(reqs) for reqs in PROJECT["optional-dependencies"].values()))


def test_every_runtime_import_is_a_declared_dependency() -> None:
    code = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if str(p.relative_to(ROOT)) not in TEST_SUPPORT]
    missing = {m: d for m, d in _distributions(_third_party(code)).items() if not d & RUNTIME}
    assert not missing, f"imported by the package but not in [project] dependencies: {missing}"


def test_every_test_import_is_declared_for_the_tests() -> None:
    tests = list((ROOT / "tests").rglob("*.py")) + [ROOT / p for p in TEST_SUPPORT]
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")}  # helper modules beside the tests
    modules = _third_party(tests) - local - {"tests"}
    missing = {m: d for m, d in _distributions(modules).items() if not d & (RUNTIME | EXTRAS)}
    assert not missing, f"imported by the tests but not declared (dependencies or an extra): {missing}"
