"""The `loop` CLI: generate → show → query end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from loop.cli import main
from stores import RunStore


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_generate_show_query_end_to_end(tmp_path) -> None:
    run = str(tmp_path / "run")
    result = invoke("generate", run, "--generator", "grains", "--n", "20", "--size", "96", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert "wrote 20 samples" in result.output
    store = RunStore.open(run)
    assert store.committed_batches() == [0, 1, 2]
    params = store.params().to_pylist()
    assert [r["sample_id"] for r in params] == list(range(20))
    image, mask = store.view()[3]
    assert image.shape == (96, 96) and set(mask.ravel().tolist()) <= {0, 1}

    # Adding to the run continues ids and batches; the same command on a new run gives the same bytes.
    assert invoke("generate", run, "--n", "4", "--size", "96").exit_code == 0
    assert len(RunStore.open(run).params()) == 24
    twin = str(tmp_path / "twin")
    assert invoke("generate", twin, "--n", "20", "--size", "96", "--batch-size", "8").exit_code == 0
    for i in (0, 19):
        a, b = RunStore.open(run).view()[i], RunStore.open(twin).view()[i]
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()

    out = tmp_path / "sheet.png"
    result = invoke("show", run, "--n", "6", "--out", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        assert sheet.width > 600 and sheet.height > 150
    assert invoke("show", run).exit_code == 0
    assert (tmp_path / "run" / "reports" / "contact_sheet.png").exists()

    result = invoke("query", run, "SELECT count(*) AS n, min(grain_diameter) AS d FROM params", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["n"] == 24 and rows[0]["d"] >= 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "{tmp}/r", "--generator", "nope", "--n", "2"], "unknown generator 'nope'; known: "),
        (["generate", "{tmp}/r", "--n", "2", "--size", "8"], "size: expected an integer in [32, 4096] px, got 8"),
        (["show", "{tmp}"], "not a run"),
        (["query", "{tmp}", "SELECT 1"], "not a run"),
        (["start", "--run", "{tmp}/r", "--policy", "nope", "--preset", "smoke"], "unknown policy 'nope'"),
        (["start", "--run", "{tmp}/r", "--policy", "worst:k=2", "--preset", "smoke"], "setting k=2 is out of range; expected a number in (0, 1]"),
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "huge"], "preset: expected one of"),
        (["resume", "{tmp}"], "not a run"),
        (["status", "{tmp}"], "not a run"),
        (["evaluate", "{tmp}", "--real", "{tmp}"], "not a run"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "loop.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("loop: error:") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "--debug", "show", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
