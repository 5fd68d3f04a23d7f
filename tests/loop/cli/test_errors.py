"""The CLI's error boundary: project errors are one line and exit 1, bugs say so and exit 70."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import loop.run.lifecycle as lifecycle
from loop.cli import EXIT_ERROR, EXIT_INTERNAL, main
from loop.errors import InputError, LoopError
from policies import PolicyError
from stores import StoreError


def _status_raising(monkeypatch, exc: BaseException):
    def boom(run):
        raise exc

    monkeypatch.setattr(lifecycle, "run_status", boom)
    return CliRunner().invoke(main, ["status", "somewhere"])


def test_every_package_error_is_a_project_error() -> None:
    from generators import GeneratorError, ParamSpaceError
    from loop.config.fields import ConfigError
    from loop.evaluate.metrics import EvaluationError
    from loop.run.lock import RunLockedError
    from loop.train.checkpoints import CheckpointError

    for cls in (GeneratorError, ParamSpaceError, StoreError, PolicyError, ConfigError, EvaluationError,
                CheckpointError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError), cls
    assert issubclass(RunLockedError, LoopError)


def test_a_project_error_is_one_line_and_exit_1(monkeypatch) -> None:
    result = _status_raising(monkeypatch, StoreError("run x: not a run\nsecond line"))
    assert result.exit_code == EXIT_ERROR == 1
    assert result.output.strip() == "loop: error: run x: not a run"


def test_a_bug_is_an_internal_error_with_its_own_exit_code(monkeypatch) -> None:
    result = _status_raising(monkeypatch, KeyError("run"))
    assert result.exit_code == EXIT_INTERNAL == 70
    line = result.output.strip()
    assert line.startswith("loop: internal error: KeyError: 'run'") and "--debug" in line
    assert len(result.output.strip().splitlines()) == 1


def test_the_cause_of_a_wrapped_project_error_is_shown(monkeypatch) -> None:
    cause = InputError("checkpoint c.pt: digest mismatch")

    class RayTaskLike(InputError):  # Ray's task errors are instances of their cause's class
        def __init__(self):
            super().__init__("ray::Trainer.train() (pid=1, actor_id=abc)")
            self.cause = cause

    result = _status_raising(monkeypatch, RayTaskLike())
    assert result.exit_code == 1 and result.output.strip() == "loop: error: checkpoint c.pt: digest mismatch"


def test_debug_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setattr(lifecycle, "run_status", lambda run: {}["run"])
    result = CliRunner().invoke(main, ["--debug", "status", "x"])
    assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize("argv", [["status", "/nonexistent/run"]])
def test_python_dash_m_runs_the_cli(argv) -> None:
    proc = subprocess.run([sys.executable, "-m", "loop.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("loop: error:"), proc.stderr
