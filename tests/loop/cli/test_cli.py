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
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "smoke", "--real", "=x"], "'=x' has an empty name"),
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "smoke", "--real", "iron={tmp}/none"],
         "real group 'iron': "),
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "smoke", "--real", "a={tmp}", "--real", "a={tmp}"],
         "group name 'a' is given twice"),
        (["start", "--run", "{tmp}/r", "--policy", "paper", "--preset", "smoke", "--generator", "cracks"],
         "run.policy 'paper' does not fit the cracks generator's space"),
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "smoke", "--augment", "rotate=200"],
         "--augment: augment.rotate: expected a number in [0.0, 180.0], got 200.0"),
        (["start", "--run", "{tmp}/r", "--policy", "random", "--preset", "smoke", "--augment", "spin=3"],
         "--augment 'spin=3': expected KEY=VALUE with KEY one of flip, rot90, brightness, contrast, stretch, rotate, zoom, or off"),
        (["compare", "{tmp}/r", "--policies", "random", "--seeds", "1", "--augment", "flip=maybe"],
         "--augment flip=maybe: expected on or off"),
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


def _unfinished_run(tmp_path) -> str:
    """A run whose journal stops in cycle 0's training, its driver gone (nobody holds the lock)."""
    from generators import get_generator
    from loop.config.run import RunConfig
    from loop.run.journal import Journal

    gen = get_generator("grains")
    run = str(tmp_path / "run")
    config = RunConfig.for_preset("smoke", cycles=1)
    RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task, space=gen.space,
                    config={"run": config.to_dict()})
    journal = Journal(str(tmp_path / "run" / "journal.jsonl"))
    journal.append("started", cycles=1, pid=999999999)
    journal.append("generated", cycle=0, samples=18, wall_s=1.0)
    journal.append("train_progress", cycle=0, kind="batch", stage=1, stages=2, stage_name="all @64px", epoch=2,
                   epochs=5, step=3, steps=8, loss=0.4321, images_per_s=12.5, elapsed_s=40.0, eta_s=95.0,
                   fraction=0.55)
    (tmp_path / "run" / ".lock").write_text("pid 999999999 on elsewhere")
    return run


def test_status_shows_val_test_and_each_real_group_side_by_side(tmp_path) -> None:
    from generators import get_generator
    from loop.config.run import RunConfig
    from loop.run.journal import Journal

    gen = get_generator("grains")
    run = str(tmp_path / "run")
    config = RunConfig.for_preset("smoke", cycles=0, real=(f"iron={tmp_path}", f"tbm={tmp_path}"))
    RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task, space=gen.space,
                    config={"run": config.to_dict()})
    journal = Journal(str(tmp_path / "run" / "journal.jsonl"))
    journal.append("started", cycles=0, pid=999999999)
    journal.append("evaluated", cycle=0, summary={"miou": 0.6123, "error": 0.2}, wall_s=1.0)
    journal.append("test_evaluated", cycle=0, summary={"miou": 0.5987, "error": 0.21}, wall_s=1.0)
    journal.append("real_evaluated", cycle=0, summary={"miou": 0.41, "miou_std": 0.1, "error": 0.3},
                   groups={"iron": {"miou": 0.45, "miou_std": 0.0}, "tbm": {"miou": 0.39, "miou_std": 0.1}}, wall_s=2.0)
    journal.append("cycle_done", cycle=0, wall_s=5.0)
    result = invoke("status", run, "--json")
    assert result.exit_code == 0, result.output
    (cycle,) = json.loads(result.output)["cycles"]
    assert cycle["val"]["miou"] == 0.6123 and cycle["test"]["miou"] == 0.5987 and cycle["real"] == {"miou": 0.41,
                                                                                                     "error": 0.3}
    assert cycle["real_groups"] == {"iron": {"miou": 0.45}, "tbm": {"miou": 0.39}}
    result = invoke("status", run)
    assert result.exit_code == 0, result.output
    for text in ("val miou", "test miou", "real miou", "iron miou", "tbm miou", "0.6123", "0.5987", "0.4500",
                 "0.3900"):
        assert text in result.output, text
    assert result.output.index("0.6123") < result.output.index("0.5987") < result.output.index("0.4100")


def test_status_says_interrupted_with_the_latest_training_progress(tmp_path) -> None:
    run = _unfinished_run(tmp_path)
    result = invoke("status", run, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["state"] == "interrupted" and info["lock_holder"] is None
    assert [c["state"] for c in info["cycles"]] == ["interrupted", "pending"]
    assert info["cycles"][0]["train_progress"]["epoch"] == 2 and info["cycles"][0]["train_progress"]["eta_s"] == 95

    result = invoke("status", run)
    assert result.exit_code == 0, result.output
    assert "smoke: interrupted" in result.output and "│ interrupted │" in result.output
    assert "cycle 0 interrupted, training: stage 2/2 all @64px, epoch 3/5, loss 0.4321, 55%, ETA 1m35s" in result.output


def test_training_progress_off_a_terminal_is_plain_lines_at_most_every_few_seconds(capsys) -> None:
    from loop.cli.progress import TrainProgressView

    first = dict(cycle=1, kind="batch", stage=0, stages=2, stage_name="head @64px", epoch=0, epochs=1, step=1,
                 steps=4, loss=0.8, images_per_s=10.0, elapsed_s=1.0, eta_s=9.0, fraction=0.1)
    middle = dict(first, kind="epoch", step=4, fraction=0.4, eta_s=6.0)
    last = dict(middle, stage=1, stage_name="all @64px", fraction=1.0, eta_s=0.0, data_wait_fraction=0.354)
    with TrainProgressView(every_s=60) as view:
        assert not view.live  # pytest's stdout is no terminal
        for record in (first, middle, last):
            view(record)
        view.say("evaluate: ...")
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 3 and not out.err  # the middle one came too soon after the first
    assert lines[0].endswith("train c1 stage 1/2 head @64px epoch 1/1 step 1/4: loss 0.8000, 10.0 img/s, "
                             "10% done, ETA 9s")
    assert lines[1].endswith("train c1 stage 2/2 all @64px epoch 1/1: loss 0.8000, 10.0 img/s (data wait 35%), "
                             "100% done, ETA 0s")
    assert lines[2].endswith("] evaluate: ...")
    # With --json, stdout is for the JSON: progress goes to stderr.
    with TrainProgressView(as_json=True, every_s=0) as view:
        view(first, "seed 1/2 random")
    out = capsys.readouterr()
    assert not out.out and "[seed 1/2 random]   train c1 stage 1/2" in out.err


def test_augment_option_sets_fields_over_off_or_the_preset() -> None:
    from loop.cli.options import augment_option

    assert augment_option(None) is None
    assert augment_option("rotate=180, zoom=0.1") == {"rotate": 180.0, "zoom": 0.1}
    off = augment_option("off,flip=on")
    assert off == {"flip": True, "rot90": False, "brightness": 0.0, "contrast": 0.0, "stretch": 0.0, "rotate": 0.0,
                   "zoom": 0.0}
