"""`loop start --real-val DIR` and the anchored policy: real images located and scored after each cycle,
written once and journaled, read back on resume (also after kill -9), never the test images; a crack run
anchored on images only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from PIL import Image

from generators import get_generator
from loop.cli import main
from loop.config.run import RunConfig, run_config_from
from loop.run.anchors import anchors_view_table, read_anchors
from loop.run.driver import policy_view
from loop.run.journal import Journal
from loop.run.lifecycle import resume_run, run_status, start_run
from policies import get_policy
from stores import RunStore
from tests.loop.run.kill_harness import start_and_kill

SMALL = dict(n_train=8, n_val=8, n_test=4, n_per_cycle=6, size=64, batch_size=8, workers=1)
POLICY = "anchored:worst_share=0.25"


def write_real(folder: Path, generator: str = "grains", n: int = 2, size: int = 80, masks: bool = True,
               seed: int = 3) -> Path:
    """``n`` rendered images (``folder/images``, with ``folder/masks`` when ``masks``) standing in for real ones."""
    gen = get_generator(generator)
    (folder / "images").mkdir(parents=True)
    if masks:
        (folder / "masks").mkdir()
    for i, params in enumerate(gen.space.sample(np.random.default_rng(seed), n)):
        sample = gen.render(params, 50 + i, size)
        Image.fromarray(sample.image).save(folder / "images" / f"r{i}.png")
        if masks:
            mask = sample.mask if sample.mask is not None else np.zeros((size, size), np.uint8)
            Image.fromarray(mask * 255).save(folder / "masks" / f"r{i}.png")
    return folder


def small_config(**overrides) -> RunConfig:
    return RunConfig.for_preset("smoke", **{**SMALL, **overrides})


def events(run: str, name: str) -> list[dict]:
    return [e for e in Journal(str(Path(run) / "journal.jsonl")).events() if e["event"] == name]


def param_rows(run: str) -> list[dict]:
    """The parameter table without creation times and batch numbers, in sample-id order."""
    table = RunStore.open(run).params().drop(["created_at", "batch"]).sort_by("sample_id")
    return table.to_pylist()


def proposals_from_stored_anchors(run: str, cycle: int) -> list[dict]:
    """What the run's policy proposes for ``cycle`` from the anchors the run stored after ``cycle - 1``."""
    store = RunStore.open(run)
    config = run_config_from(store.config["run"])
    event = [e for e in events(run, "anchored") if e["cycle"] == cycle - 1][-1]
    anchors = anchors_view_table(read_anchors(store, cycle - 1, event["digest"])[0])
    rng = np.random.default_rng([config.seed, cycle, 1])
    view = policy_view(store, cycle, anchors)
    return [p.params for p in get_policy(config.policy).propose(view, config.n_per_cycle, rng)]


def _cli_error(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("loop: error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output  # one line, no traceback
    return errors[0]


def test_real_val_is_checked_before_the_run_starts(tmp_path) -> None:
    start = ["start", "--preset", "smoke", "--size", "64", "--cycles", "1", "--policy", "anchored"]
    (tmp_path / "empty").mkdir()
    assert "--real-val" in _cli_error(*start, "--run", str(tmp_path / "a"))  # anchored needs it
    assert "no images" in _cli_error(*start, "--run", str(tmp_path / "a"), "--real-val", str(tmp_path / "empty"))
    assert "not a folder" in _cli_error(*start, "--run", str(tmp_path / "a"), "--real-val", str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    assert "x.png: cannot be read as an image" in _cli_error(*start, "--run", str(tmp_path / "a"),
                                                             "--real-val", str(broken))
    small = write_real(tmp_path / "small", size=40, masks=False)
    assert "r0.png is 40×40 px, smaller than the inverse model's input of 64×64 px" in _cli_error(
        *start, "--run", str(tmp_path / "a"), "--real-val", str(small))
    lonely = write_real(tmp_path / "lonely")
    (lonely / "masks" / "r1.png").unlink()
    assert "image without a mask" in _cli_error(*start, "--run", str(tmp_path / "a"), "--real-val", str(lonely))
    # The real validation images are never the test images (same bytes in a --real group).
    real = write_real(tmp_path / "real")
    line = _cli_error(*start, "--run", str(tmp_path / "a"), "--real-val", str(real), "--real", f"test={real}")
    assert "r0.png is also an image of the real test group 'test'" in line
    assert not (tmp_path / "a").exists()


def test_the_folder_is_frozen_with_its_digest(tmp_path) -> None:
    real = write_real(tmp_path / "real")
    config = small_config(real_val=os.path.relpath(real))
    assert config.real_val == str(real) and config.real_val_digest is None
    assert run_config_from(config.to_dict()) == config
    assert "real_val" not in small_config().to_dict()
    from loop.run.lifecycle import frozen_real_val

    frozen = frozen_real_val(config)
    assert len(frozen.real_val_digest) == 64 and run_config_from(frozen.to_dict()) == frozen
    assert frozen_real_val(frozen) == frozen
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(real / "masks" / "r0.png")
    with pytest.raises(ValueError, match="changed since it was frozen"):
        frozen_real_val(frozen)


def test_an_anchored_run_samples_around_its_real_images_and_resumes_from_them(ray_local, tmp_path) -> None:
    real = write_real(tmp_path / "real")
    run = str(tmp_path / "run")
    start_run(run, small_config(cycles=1, policy=POLICY, real_val=str(real)), say=lambda line: None)
    store = RunStore.open(run)
    anchored = events(run, "anchored")
    assert [e["cycle"] for e in anchored] == [0]  # after every cycle the policy proposes from, not the last
    data = read_anchors(store, 0, anchored[0]["digest"])[0]
    assert data["labelled"] and [r["name"] for r in data["images"]] == ["r0.png", "r1.png"]
    for row in data["images"]:
        assert 0 <= row["miou"] <= 1 and 0 <= row["error"] <= 1 and row["loss"] >= 0
        assert "grain_diameter" in row["unit"] and set(row["unit"]) == set(row["spread"]) == set(data["dims"])
    assert store.location.exists("checkpoints", "inverse_cycle_000.safetensors")
    status = run_status(run)["cycles"][0]
    assert status["real_val"]["n_images"] == 2 and status["inverse_r2"] == data["r2"]
    assert set(data["r2"]) == set(data["dims"])
    # The real-val images are scored after every cycle, the last too; the anchors reuse cycle 0's scores.
    scored = events(run, "real_val_evaluated")
    assert [e["cycle"] for e in scored] == [0, 1] and all(e["tile"] == 64 for e in scored)
    assert scored[0]["summary"]["miou"] == pytest.approx(np.mean([r["miou"] for r in data["images"]]))
    cycles = run_status(run)["cycles"]
    best = max((0, 1), key=lambda c: (cycles[c]["real_val"]["miou"], -c))
    assert run_status(run)["best_real_val"] == {"cycle": best, "metric": "miou", "value": cycles[best]["real_val"]["miou"]}
    shown = CliRunner().invoke(main, ["status", run])
    assert shown.exit_code == 0 and "real-val miou" in shown.output
    assert f"best on the real validation images: cycle {best} (miou " in shown.output
    picked = CliRunner().invoke(main, ["evaluate", run, "--real", str(real), "--checkpoint", "best", "--json"])
    assert picked.exit_code == 0, picked.output
    assert json.loads(picked.output)["cycle"] == best  # the real-val images scored again give the same mIoU
    assert json.loads(picked.output)["miou"] == pytest.approx(cycles[best]["real_val"]["miou"])
    assert "cycle 0 inverse model, held-out R² (identifiable at >= 0.5): grain_diameter " in shown.output

    new = store.params(cycle=1)
    counts = {p: new["policy"].to_pylist().count(p) for p in set(new["policy"].to_pylist())}
    assert counts == {"anchored:floor=0.05,worst_share=0.25": 4, "worst:k=0.1,m=10,radius=0.05": 2}
    stored = [{k: r[k] for k in store.space.names} for r in param_rows(run) if r["cycle"] == 1]
    assert stored == proposals_from_stored_anchors(run, 1)

    # A changed folder is refused.
    image = real / "images" / "r1.png"
    kept = image.read_bytes()
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(image)
    with pytest.raises(ValueError, match=r"its --real-val folder .* changed since the run began"):
        resume_run(run, cycles=2)
    image.write_bytes(kept)
    assert len(events(run, "resumed")) == 0

    # A run of before, which scored its real-val images only where it placed them, gets every
    # finished cycle scored when it is resumed.
    journal = Path(run) / "journal.jsonl"
    journal.write_text("".join(line for line in journal.read_text().splitlines(keepends=True)
                               if '"real_val_evaluated"' not in line))
    assert events(run, "real_val_evaluated") == []
    resume_run(run, cycles=1, say=lambda line: None)
    assert [(e["cycle"], e["summary"]) for e in events(run, "real_val_evaluated")] == [
        (e["cycle"], e["summary"]) for e in scored]


@pytest.mark.slow
def test_more_cycles_read_the_stored_anchors(ray_local, tmp_path) -> None:
    """A finished anchored run given more cycles: the anchors of earlier cycles are read, not recomputed
    (a second write of a file would fail: they are written once), and the new cycle's proposals come
    from them."""
    real = write_real(tmp_path / "real")
    run = str(tmp_path / "run")
    start_run(run, small_config(cycles=1, policy=POLICY, real_val=str(real)), say=lambda line: None)
    digests = [e["digest"] for e in events(run, "anchored")]
    resume_run(run, cycles=2, say=lambda line: None)
    assert [e["cycle"] for e in events(run, "anchored")] == [0, 1]  # cycle 1's placed when cycle 2 proposed
    assert read_anchors(RunStore.open(run), 0)[1] == digests[0]
    store = RunStore.open(run)
    stored = [{k: r[k] for k in store.space.names} for r in param_rows(run) if r["cycle"] == 2]
    assert stored == proposals_from_stored_anchors(run, 2)


def test_a_crack_run_anchors_on_unlabelled_images(ray_local, tmp_path) -> None:
    """Issue 14 item 4: a folder of crack tiles without masks anchors the crack generator."""
    tiles = write_real(tmp_path / "tiles", generator="cracks", n=3, size=64, masks=False)
    run = str(tmp_path / "run")
    start_run(run, small_config(generator="cracks", cycles=1, policy="anchored", real_val=str(tiles / "images"),
                                n_per_cycle=6), say=lambda line: None)
    store = RunStore.open(run)
    data = read_anchors(store, 0)[0]
    assert not data["labelled"] and [r["name"] for r in data["images"]] == ["r0.png", "r1.png", "r2.png"]
    assert all(r["miou"] is None and r["error"] is None and r["loss"] is None for r in data["images"])
    assert events(run, "real_val_evaluated") == [] and run_status(run)["best_real_val"] is None  # nothing to score
    assert "width" in data["dims"] and "texture" not in data["dims"]  # a choice is not located
    new = store.params(cycle=1)
    assert set(new["policy"].to_pylist()) == {"anchored:floor=0.05"} and new.num_rows == 6
    stored = [{k: r[k] for k in store.space.names} for r in param_rows(run) if r["cycle"] == 1]
    assert stored == proposals_from_stored_anchors(run, 1)  # no scores: 2 draws around each tile


def _start_and_kill(run: str, real: Path, after_event: str, cycle: int) -> None:
    """An anchored smoke run killed (-9) once ``after_event`` of ``cycle`` is journaled."""
    start_and_kill(run, ["--policy", POLICY, "--preset", "smoke", "--cycles", "1", "--real-val", str(real),
                         *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items() if k != "batch_size"]],
                   after_event, cycle)


# Killed while cycle 0's real-val images are being located (the inverse model trains): the resume
# places them again from scratch. Killed once they are journaled: the resume reads them. Each is a
# smoke run plus a resume beside an uninterrupted one.
@pytest.mark.slow
@pytest.mark.parametrize("after_event", ["test_evaluated", "anchored"])
def test_kill_9_then_resume_gives_the_uninterrupted_anchored_run(ray_local, tmp_path, after_event) -> None:
    real = write_real(tmp_path / "real")
    reference = str(tmp_path / "reference")
    start_run(reference, small_config(cycles=1, policy=POLICY, real_val=str(real), batch_size=16),
              say=lambda line: None)
    killed = str(tmp_path / "killed")
    _start_and_kill(killed, real, after_event, 0)
    assert not events(killed, "cycle_done")
    resume_run(killed, say=lambda line: None)
    assert [e["cycle"] for e in events(killed, "anchored")] == [0]
    assert param_rows(killed) == param_rows(reference)
    assert read_anchors(RunStore.open(killed), 0)[0]["images"] == read_anchors(RunStore.open(reference), 0)[0]["images"]
    params = RunStore.open(killed).params()
    assert params.filter(pc.equal(params["cycle"], 1)).num_rows == SMALL["n_per_cycle"]
