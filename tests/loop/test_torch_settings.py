"""Tests leave torch's process-wide settings as they found them (issue 15, item 11).

A test module that calls ``torch.set_num_threads`` at import time changes the setting for
every test collected with it; a test that builds an in-process evaluator or trainer changes
it for every later test. Either made a float32 comparison in another module depend on the
order the tests ran in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
PROCESS_WIDE = {"set_num_threads", "set_num_interop_threads", "use_deterministic_algorithms", "set_default_dtype",
                "set_float32_matmul_precision", "set_flush_denormal", "set_grad_enabled", "manual_seed"}
AT_IMPORT = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()


def _module_level_calls(tree: ast.Module) -> list[ast.Call]:
    """Calls made when the module is imported: in its top-level statements, not in functions or classes."""
    calls = []
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        calls.extend(node for node in ast.walk(statement) if isinstance(node, ast.Call))
    return calls


def test_no_test_module_changes_torch_settings_at_import() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for call in _module_level_calls(ast.parse(path.read_text(), filename=str(path))):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in PROCESS_WIDE:
                offenders.append(f"{path.relative_to(TESTS)}:{call.lineno}: {name}(...)")
    assert not offenders, f"set these in a fixture that restores them: {offenders}"


def test_a_test_that_changes_torch_settings() -> None:
    torch.set_num_threads(AT_IMPORT[0] + 2)
    torch.use_deterministic_algorithms(True)


def test_finds_them_restored_whatever_ran_before() -> None:
    # The autouse fixture of tests/loop/conftest.py put them back after the test above.
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == AT_IMPORT
