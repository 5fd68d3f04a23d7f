"""The paper's Table 1 (§3.1.2–3.1.3): crack classifiers trained on synthetic, real and mixed data.

The real data are **tiles** of the model's input size cut from the real images at their own
resolution, as the paper cut 128 px tiles from its chip images (:mod:`loop.study.crack_tiles`:
tiling, labels, physical-tile groups, grouped splits). For each seed ``s`` (the paper ran
seeds 1..200):

1. **Split.** The usable tiles (crack / no crack) are split into train / val / test
   (``fractions``, the paper's 357 / 89 / 64 of 510) by whole physical groups — every
   exposure and capture of one object on one side — stratified by class and seeded by
   ``s`` (:func:`~loop.study.crack_tiles.grouped_split`). The split is written to
   ``split_NNN.json``.
2. **Evaluation sets.** With ``balance`` (the paper's sets were even), the val and test
   sets are every crack tile of their groups and as many no-crack tiles drawn from their
   groups; ``all`` is the same over every tile of the seed (training tiles included, as the
   paper's "all data").
3. **Training set.** The training groups' tiles balanced by sampling
   (:func:`~loop.study.crack_tiles.oversampled`): each crack tile ``r`` times, ``r =
   min(max_repeat, no-crack / crack)``, and ``r`` × as many no-crack tiles drawn.
4. **Generator.** Set up from the training split only: with ``exemplars="real"`` its
   texture dictionary is a seeded draw of the split's no-crack tiles (at most
   ``max_exemplars``), with ``space="fit"`` its crack distributions are fitted on the
   split's crack tiles (:func:`generators.crack_fit.fit_pairs`; as many no-crack tiles
   join for the background's grey and contrast); a folder / a space file / ``"default"``
   may be given instead. It renders tiles of the same size.
5. **Three models**, from the same initial weights (training seed ``s``): (i) **synthetic**
   on ``n_synthetic`` generated tiles with the preset's classification stages; (ii)
   **real** on the training set; (iii) **mixed**: model (i) fine-tuned on the training
   set. (ii) and (iii) use the preset's stages with ``real_epochs`` epochs each (the paper:
   10 head + 10 full). Every schedule is sized to its data by one rule
   (:func:`sized_stages`): batch at most the preset's, at most a quarter of the set (never
   more than the set), epochs counted in passes over the rarer class, and at least
   ``min_steps`` optimiser steps per stage.
6. Each model's error rate on the test, all and val sets (and per class).

The summary (:func:`table1_summary`): per model and evaluation set, mean ± sd of the error
rate over seeds; the paper's 99 % Agresti–Coull interval, which takes the mean rate as a
proportion of N² trials for N seeds (the convention that reproduces the paper's Table 1, see
:mod:`loop.study.statistics`); a 99 % t interval of the mean; the textbook Agresti–Coull
interval of every classification pooled. Paired two-tailed t-tests real vs mixed and
synthetic vs real on the same seeds, Holm-adjusted within each evaluation set
(:func:`loop.study.statistics.holm`, statsmodels' ``multipletests``).

Results go to ``OUT``: ``config.toml``, per finished seed ``seed_NNN.json`` and
``split_NNN.json`` (a rerun with the same configuration skips those seeds), ``table1.json``
and ``table1.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tomli_w

from generators.cracks import CrackGenerator, load_space_file
from generators.textures import Exemplar, make_exemplar
from loop.config.training import Preset, Stage, TrainConfig, get_preset, sized_stages
from loop.errors import InputError
from loop.evaluate.real_tiles import CRACK, DEFAULT_MIN_CRACK_PX, NO_CRACK
from loop.study.crack_tiles import (
    DEFAULT_CAPTURE_GAP,
    PARTS,
    TileSet,
    balanced_draw,
    exemplar_tiles,
    fit_tiles,
    grouped_split,
    load_tiles,
    oversampled,
)
from loop.study.report import json_ready
from loop.study.statistics import (
    CONFIDENCE,
    SIGNIFICANCE,
    agresti_coull_interval,
    holm,
    mean_sd,
    paired_t_test,
    t_interval,
)
from loop.train.data import ArrayView

MODELS = ("synthetic", "real", "mixed")
"""The three models of Table 1, in order."""

EVAL_SETS = ("test", "all")
"""Where the models are scored for the table: the real test split, and every real tile of the seed."""

SCORED = ("test", "all", "val")
"""Every set a model is scored on (val is reported per seed, not in the table)."""

TESTS = (("real", "mixed"), ("synthetic", "real"))
"""The paired comparisons of the table, Holm-adjusted together within an evaluation set."""

TILE_SIZE = {"paper": 128, "cpu": 64}
"""Default tile side (= the model's input) per preset; other presets: their final training size.

The paper's 128 px. On a CPU 64 px, the cpu preset's first stage size: a tile costs a
quarter, and at the images' own resolution a crack is as wide in a 64 px tile as in a
128 px one. At 128 px a shared 2-core CPU gave the synthetic model about 60 optimiser
steps per seed within the hour for 30 seeds, and it did not learn even its own synthetic
task (validation error 0.1–0.45); at 64 px it gets 250 (0.09).
"""

N_SYNTHETIC = {"paper": 20000, "cpu": 800, "smoke": 48}
"""Default synthetic training tiles per preset (the paper had 79312; a validation fifth more)."""

REAL_EPOCHS = {"paper": 10, "cpu": 6, "smoke": 1}
"""Default epochs per stage on the real training set (passes over its crack tiles), per preset."""

MIN_STEPS = {"paper": 100, "cpu": 30, "smoke": 1}
"""Default minimum optimiser steps per training stage, per preset."""

MAX_REPEAT = 4
"""Default most repeats of a crack tile when balancing the real training set by sampling."""


class ExperimentError(InputError):
    """An experiment cannot run as configured (bad setting, too few real tiles, changed output folder)."""


def _positive_int(name: str, value: Any, low: int = 1, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ExperimentError(f"{name}: expected an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """What ``loop experiment cracks`` runs (see the module docstring).

    Tiling: ``tile_size`` (default :data:`TILE_SIZE`, else the preset's final training
    size; every stage trains at it, :func:`tile_stages`), ``tile_stride`` (default: the tile size), ``min_crack_px``,
    ``pad`` (reflect-pad images smaller than a tile; else they are left out and counted),
    ``crack_image_negatives`` (use the crack-free tiles of crack images as no-crack tiles),
    ``groups`` and ``capture_gap`` (:func:`loop.study.crack_tiles.physical_groups`).
    """

    real_dir: str
    seeds: tuple[int, ...] = (1, 2, 3)
    preset: str = "cpu"
    n_synthetic: int | None = None
    real_epochs: int | None = None
    min_steps: int | None = None
    balance: bool = True
    fractions: tuple[float, float, float] = (0.7, 0.175, 0.125)
    exemplars: str = "real"
    space: str = "fit"
    max_exemplars: int = 8
    encoder_weights: str | None = None
    tile_size: int | None = None
    tile_stride: int | None = None
    min_crack_px: int = DEFAULT_MIN_CRACK_PX
    pad: bool = True
    crack_image_negatives: bool = False
    groups: str = "auto"
    capture_gap: int = DEFAULT_CAPTURE_GAP
    max_repeat: int = MAX_REPEAT

    def __post_init__(self) -> None:
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ExperimentError(f"seeds: expected non-negative integers, got {self.seeds!r}")
        get_preset(self.preset)
        if self.n_synthetic is not None and (isinstance(self.n_synthetic, bool) or self.n_synthetic < 2):
            raise ExperimentError(f"n_synthetic: expected an integer >= 2, got {self.n_synthetic!r}")
        _positive_int("real_epochs", self.real_epochs)
        _positive_int("min_steps", self.min_steps)
        if len(self.fractions) != 3 or any(not f > 0 for f in self.fractions):
            raise ExperimentError(f"fractions: expected three positive train/val/test fractions, got {self.fractions!r}")
        _positive_int("max_exemplars", self.max_exemplars, optional=False)
        if self.exemplars not in ("real", "default") and not Path(self.exemplars).is_dir():
            raise ExperimentError(f"exemplars: expected 'real', 'default' or a folder of texture images, "
                                  f"got {self.exemplars!r} (no such folder)")
        if self.space not in ("fit", "default") and not Path(self.space).is_file():
            raise ExperimentError(f"space: expected 'fit', 'default' or a space file from `loop fit-cracks`, "
                                  f"got {self.space!r} (no such file)")
        if self.tile_size is not None and (isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int)
                                           or self.tile_size < 32 or self.tile_size % 32):
            raise ExperimentError(f"tile_size: expected a multiple of 32 px >= 32 (the model's input), "
                                  f"got {self.tile_size!r}")
        _positive_int("tile_stride", self.tile_stride)
        if self.tile_stride is not None and self.tile_stride > self.input_size:
            raise ExperimentError(f"tile_stride: expected at most the tile size {self.input_size}, "
                                  f"got {self.tile_stride}")
        _positive_int("min_crack_px", self.min_crack_px, optional=False)
        _positive_int("capture_gap", self.capture_gap, low=0, optional=False)
        _positive_int("max_repeat", self.max_repeat, optional=False)
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    @property
    def input_size(self) -> int:
        """The model's input size = the tile size (:data:`TILE_SIZE` or the preset's final training size unless set)."""
        return self.tile_size or TILE_SIZE.get(self.preset) or \
            get_preset(self.preset, task="classification").train.stages[-1].size

    @property
    def synthetic_count(self) -> int:
        """Synthetic training tiles (the preset's default unless set)."""
        return self.n_synthetic or N_SYNTHETIC.get(self.preset, N_SYNTHETIC["cpu"])

    @property
    def real_epoch_count(self) -> int:
        """Epochs per stage on the real training set (the preset's default unless set)."""
        return self.real_epochs or REAL_EPOCHS.get(self.preset, REAL_EPOCHS["cpu"])

    @property
    def min_step_count(self) -> int:
        """Least optimiser steps per training stage (the preset's default unless set)."""
        return self.min_steps or MIN_STEPS.get(self.preset, MIN_STEPS["cpu"])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (TOML-ready), defaults resolved."""
        d = dataclasses.asdict(self)
        d.update(seeds=list(self.seeds), fractions=list(self.fractions), n_synthetic=self.synthetic_count,
                 real_epochs=self.real_epoch_count, min_steps=self.min_step_count, tile_size=self.input_size,
                 tile_stride=self.tile_stride or self.input_size)
        return {k: v for k, v in d.items() if v is not None}


# --- schedules ---------------------------------------------------------------------------------


def tile_stages(stages: Sequence[Stage], size: int) -> tuple[Stage, ...]:
    """The stages, every one at the tile size ``size``.

    A preset's progressive resizing (the cpu preset trains its head at 64 px, then all
    layers at 128 px) suits segmentation of large images; a tile shrunk to half its size
    halves a crack a few pixels wide, and a head fitted at one size misleads the next
    stage at another (worst when fine-tuning a model trained at the tile size). The paper
    trained its crack classifier at 128 px throughout (§3.1.2).
    """
    return tuple(dataclasses.replace(s, size=size) for s in stages)


def base_schedule(config: ExperimentConfig) -> tuple[Preset, TrainConfig]:
    """The classification preset (with ``encoder_weights``) and its schedule at the tile size (:func:`tile_stages`),
    not yet sized to the data."""
    preset = get_preset(config.preset, task="classification")
    if config.encoder_weights:
        preset = dataclasses.replace(preset, model=dataclasses.replace(preset.model,
                                                                        encoder_weights=config.encoder_weights))
    train = dataclasses.replace(preset.train, stages=tile_stages(preset.train.stages, config.input_size))
    return preset, train


# --- generator -----------------------------------------------------------------------------------


def real_exemplars(tiles: TileSet, indices: np.ndarray, limit: int, rng: np.random.Generator) -> tuple[Exemplar, ...]:
    """Texture exemplars: a seeded draw of at most ``limit`` no-crack tiles at ``indices`` (flat tiles skipped)."""
    chosen = exemplar_tiles(tiles, indices, limit, rng)
    if not chosen:
        raise ExperimentError("exemplars 'real': the real training split has no no-crack tile with texture; "
                              "pass --exemplars default or a folder")
    return tuple(make_exemplar(f"tile{i}", tiles.images[i], f"{tiles.tile_name(i)} (real training split)")
                 for i in chosen)


def crack_generator_for(config: ExperimentConfig, tiles: TileSet, train: np.ndarray,
                        rng: np.random.Generator) -> CrackGenerator:
    """The crack generator of one seed: exemplars and space as configured, from the training split's tiles only."""
    if config.exemplars == "real":
        exemplars: Any = real_exemplars(tiles, train, config.max_exemplars, rng)
    elif config.exemplars == "default":
        exemplars = None
    else:
        exemplars = config.exemplars
    if config.space == "fit":
        if not (tiles.kind[train] == CRACK).any():
            raise ExperimentError("space 'fit': the real training split has no crack tile to fit the cracks on")
        fit = fit_tiles(tiles, train, rng)
        return CrackGenerator(exemplars=exemplars, space=fit.space, space_source="space fitted on the training split")
    if config.space == "default":
        return CrackGenerator(exemplars=exemplars)
    return CrackGenerator(exemplars=exemplars, space=load_space_file(config.space),
                          space_source=f"space file {config.space}")


def synthetic_view(generator: CrackGenerator, n: int, size: int, seed: int, first_id: int = 0) -> ArrayView:
    """``n`` samples of ``generator`` at ``size`` px: parameters drawn uniformly from its space, seeds from ``seed``."""
    params = generator.space.sample(np.random.default_rng([seed, first_id, 1]), n)
    seeds = np.random.SeedSequence([seed, first_id, 2]).generate_state(n, dtype=np.uint32)
    samples = [generator.render(p, int(s), size) for p, s in zip(params, seeds)]
    return ArrayView(np.stack([s.image for s in samples]), [s.label for s in samples],
                     np.arange(first_id, first_id + n))


# --- one seed ------------------------------------------------------------------------------------


def score(model: Any, view: ArrayView, device: Any = None) -> dict[str, int]:
    """Errors of the classifier on ``view``: all, on crack samples (missed) and on no-crack ones (false alarms)."""
    from loop.evaluate.scoring import evaluate_view

    table = evaluate_view(model, view, device, batch_size=64, task="classification")
    wrong = np.round(table.column("error").to_numpy()).astype(bool)
    labels = view.labels
    return {"errors": int(wrong.sum()), "missed": int((wrong & (labels == CRACK)).sum()),
            "false_alarms": int((wrong & (labels == NO_CRACK)).sum())}


def count_errors(model: Any, view: ArrayView, device: Any = None) -> int:
    """How many samples of ``view`` the classifier gets wrong."""
    return score(model, view, device)["errors"]


@dataclass(frozen=True)
class SeedData:
    """The tiles one seed uses: the split by groups, the evaluation sets and the training set (tile indices)."""

    split: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    train: np.ndarray
    repeat: int


def seed_data(config: ExperimentConfig, tiles: TileSet, seed: int) -> SeedData:
    """Split, evaluation sets and balanced training set of one seed (see the module docstring)."""
    rng = np.random.default_rng([seed, 0])
    usable = tiles.usable
    parts = grouped_split(tiles.group[usable], tiles.kind[usable], config.fractions, rng)
    split = {k: usable[v] for k, v in parts.items()}
    for name, idx in split.items():
        classes = set(np.unique(tiles.kind[idx]).tolist())
        if classes != {CRACK, NO_CRACK}:
            n_crack = len(np.unique(tiles.group[tiles.kind == CRACK]))
            raise ExperimentError(f"{config.real_dir}: the {name} split of seed {seed} lacks "
                                  f"{'crack' if CRACK not in classes else 'no-crack'} tiles; {n_crack} physical "
                                  f"group(s) hold crack tiles, at least 3 are needed for train/val/test")

    def chosen(idx: np.ndarray) -> np.ndarray:
        return idx[balanced_draw(tiles.kind[idx], rng)] if config.balance else idx

    evaluation = {name: chosen(split[name]) for name in ("val", "test")}
    evaluation["all"] = chosen(usable)
    order, repeat = oversampled(tiles.kind[split["train"]], rng, config.max_repeat)
    train = split["train"][order]
    return SeedData(split=split, evaluation=evaluation, train=train, repeat=repeat)


def split_record(tiles: TileSet, data: SeedData, seed: int) -> dict[str, Any]:
    """What ``split_NNN.json`` holds: the rule, per part its groups (image names) and tile counts, the evaluated tiles."""
    record: dict[str, Any] = {"seed": seed, "group_rule": tiles.group_rule, "tiling": tiles.settings, "parts": {}}
    for name in PARTS:
        idx = data.split[name]
        groups = []
        for g in np.unique(tiles.group[idx]):
            sources = np.unique(tiles.source[tiles.group == g])
            groups.append([tiles.names[s] for s in sources])
        record["parts"][name] = {"groups": groups, "n_tiles": int(len(idx)),
                                 "n_crack_tiles": int((tiles.kind[idx] == CRACK).sum())}
    record["evaluated"] = {k: [tiles.tile_name(i) for i in v] for k, v in data.evaluation.items() if k != "all"}
    record["train_set"] = {"n": int(len(data.train)), "n_crack": int((tiles.kind[data.train] == CRACK).sum()),
                           "crack_repeat": data.repeat}
    return record


def run_seed(config: ExperimentConfig, tiles: TileSet, seed: int, out: Path, *, device: Any = None,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and score the three models of one seed; returns the seed's row (also written to ``seed_NNN.json``)."""
    from loop.train.fit import train

    started, load_before = time.time(), os.getloadavg()[0]
    preset, base = base_schedule(config)
    size = config.input_size
    data = seed_data(config, tiles, seed)
    (out / f"split_{seed:03d}.json").write_text(json.dumps(json_ready(split_record(tiles, data, seed)), indent=1))
    views = {name: tiles.view(idx) for name, idx in data.evaluation.items()}
    train_view = tiles.view(data.train)

    t0 = time.time()
    generator = crack_generator_for(config, tiles, data.split["train"], np.random.default_rng([seed, 1]))
    n_val = max(1, config.synthetic_count // 5)
    say(f"seed {seed}: generating {config.synthetic_count} + {n_val} synthetic {size} px tiles")
    synthetic_train = synthetic_view(generator, config.synthetic_count, size, seed)
    synthetic_val = synthetic_view(generator, n_val, size, seed, first_id=config.synthetic_count)
    timing: dict[str, float] = {"generator": time.time() - t0}

    synthetic_cfg = dataclasses.replace(base, seed=seed, stages=sized_stages(
        base.stages, len(synthetic_train), min_steps=config.min_step_count))
    real_cfg = dataclasses.replace(base, seed=seed, stages=sized_stages(
        base.stages, len(train_view), min_steps=config.min_step_count, epochs=config.real_epoch_count,
        repeat=data.repeat))
    checkpoint = out / f"seed_{seed:03d}_synthetic.safetensors"
    models: dict[str, Any] = {}
    plans = (("synthetic", synthetic_train, synthetic_cfg, None),
             ("real", train_view, real_cfg, None),
             ("mixed", train_view, real_cfg, str(checkpoint)))
    for name, view, cfg, init in plans:
        stages = ", ".join(f"{s.epochs}×{len(view) // s.batch_size if len(view) > s.batch_size else 1} steps of "
                           f"{s.batch_size}" for s in cfg.stages)
        say(f"seed {seed}: training {name} on {len(view)} tiles ({stages})"
            + (", fine-tuning the synthetic model" if init else ""))
        t0 = time.time()
        result = train(view, cfg, preset.model, init=init, device=device,
                       out=str(checkpoint) if name == "synthetic" else None)
        timing[name] = time.time() - t0
        models[name] = result.model
    checkpoint.unlink(missing_ok=True)
    checkpoint.with_name(checkpoint.name + ".sha256").unlink(missing_ok=True)

    t0 = time.time()
    row: dict[str, Any] = {"seed": seed, "n": {k: len(views[k]) for k in SCORED},
                           "n_crack": {k: int(views[k].labels.sum()) for k in SCORED},
                           "n_train": len(train_view), "n_train_crack": int(train_view.labels.sum()),
                           "crack_repeat": data.repeat, "errors": {}, "error_rate": {}, "missed": {},
                           "false_alarms": {},
                           "schedules": {"synthetic": [s.to_dict() for s in synthetic_cfg.stages],
                                         "real": [s.to_dict() for s in real_cfg.stages]},
                           "generator": {"version": generator.version,
                                         "exemplars": [e.source for e in generator.exemplars],
                                         "space": generator.space.to_dict()}}
    for name, model in models.items():
        scores = {k: score(model, views[k], device) for k in SCORED}
        row["errors"][name] = {k: v["errors"] for k, v in scores.items()}
        row["missed"][name] = {k: v["missed"] for k, v in scores.items()}
        row["false_alarms"][name] = {k: v["false_alarms"] for k, v in scores.items()}
        row["error_rate"][name] = {k: scores[k]["errors"] / len(views[k]) for k in SCORED}
    row["synthetic_val_error_rate"] = count_errors(models["synthetic"], synthetic_val, device) / len(synthetic_val)
    timing["scoring"] = time.time() - t0
    row["train_s"] = timing
    row["wall_s"] = time.time() - started
    row["load"] = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}
    (out / f"seed_{seed:03d}.json").write_text(json.dumps(json_ready(row), indent=1))
    rates = ", ".join(f"{m} {row['error_rate'][m]['test']:.3f}/{row['error_rate'][m]['all']:.3f}" for m in MODELS)
    say(f"seed {seed}: error test/all: {rates} ({row['wall_s']:.0f} s, load {row['load']['after']:.1f})")
    return row


# --- Table 1 -------------------------------------------------------------------------------------


def table1_summary(rows: Sequence[dict[str, Any]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Table 1 from per-seed rows: per evaluation set and model, mean ± sd and the intervals; the paired tests."""
    if not rows:
        raise ExperimentError("table1_summary: no finished seed")
    table: dict[str, Any] = {"seeds": [r["seed"] for r in rows], "n_seeds": len(rows), "confidence": confidence}
    for where in EVAL_SETS:
        table[where] = {}
        for model in MODELS:
            rates = [r["error_rate"][model][where] for r in rows]
            errors = sum(r["errors"][model][where] for r in rows)
            n = sum(r["n"][where] for r in rows)
            mean, sd = mean_sd(rates)
            low, high = agresti_coull_interval(rates, confidence)
            t_low, t_high = t_interval(rates, confidence)
            pooled = agresti_coull_interval([errors / n], confidence, nobs=n)
            table[where][model] = {"error_mean": mean, "error_sd": sd, "ci_low": low, "ci_high": high,
                                   "t_ci_low": t_low, "t_ci_high": t_high,
                                   "ci_pooled_low": pooled[0], "ci_pooled_high": pooled[1],
                                   "errors": errors, "n_classifications": n}
            for key in ("missed", "false_alarms"):
                if all(key in r for r in rows):
                    table[where][model][key] = sum(r[key][model][where] for r in rows)
        tests = [paired_t_test([r["error_rate"][a][where] for r in rows],
                               [r["error_rate"][b][where] for r in rows], (a, b)) for a, b in TESTS]
        for test, p_holm in zip(tests, holm([t.p_value for t in tests])):
            table[where][f"{test.a}_vs_{test.b}"] = {
                **test.to_dict(), "p_holm": p_holm,
                "significant_holm": bool(math.isfinite(p_holm) and p_holm < SIGNIFICANCE)}
    table["synthetic_val_error_mean"] = float(np.mean([r["synthetic_val_error_rate"] for r in rows]))
    walls = [r["wall_s"] for r in rows if "wall_s" in r]
    if walls:
        table["seed_wall_s_mean"] = float(np.mean(walls))
    loads = [r["load"]["after"] for r in rows if "load" in r]
    if loads:
        table["load_mean"], table["load_max"] = float(np.mean(loads)), float(np.max(loads))
    return table


def table_markdown(table: dict[str, Any]) -> str:
    """Table 1 as Markdown (the paper's layout, plus the t interval and the Holm-adjusted tests)."""
    pct = f"{table['confidence']:.0%}"
    n = table["n_seeds"]
    lines = ["| | | synthetic model | real model | mixed model |", "|---|---|---|---|---|"]
    for where, label in (("test", "test data"), ("all", "all data")):
        cells = table[where]
        lines.append(f"| {label} | μ ± σ | " + " | ".join(
            f"{_num(cells[m]['error_mean'])} ± {_num(cells[m]['error_sd'])}" for m in MODELS) + " |")
        lines.append(f"| | {pct} CI (paper's: Agresti–Coull, n = N²) | " + " | ".join(
            f"[{_num(cells[m]['ci_low'])}, {_num(cells[m]['ci_high'])}]" for m in MODELS) + " |")
        lines.append(f"| | {pct} t interval of the mean | " + " | ".join(
            f"[{_num(cells[m].get('t_ci_low'))}, {_num(cells[m].get('t_ci_high'))}]" for m in MODELS) + " |")
    lines += ["", "| paired two-tailed t-test | data | mean difference | p | p (Holm) |", "|---|---|---|---|---|"]
    for where in EVAL_SETS:
        for a, b in TESTS:
            test = table[where].get(f"{a}_vs_{b}")
            if test is None:
                continue
            lines.append(f"| {a} vs {b} | {where} | {_num(test['mean_difference'], '+.3f')} | "
                         f"{_num(test['p_value'], '.3g')} | {_num(test.get('p_holm'), '.3g')} |")
    lines.append("")
    lines.append(f"Error rates over {n} seeds ({_seed_list(table['seeds'])}). The paper's CI: Agresti–Coull with "
                 f"n = N² = {n * n} (its convention, see loop/study/statistics.py); the t interval is the textbook "
                 f"one for a mean over seeds. Holm adjustment within each evaluation set (statsmodels multipletests).")
    if "seed_wall_s_mean" in table:
        lines.append(f"Mean {table['seed_wall_s_mean']:.0f} s per seed; 1-minute load average after a seed: mean "
                     f"{table['load_mean']:.1f}, max {table['load_max']:.1f}.")
    return "\n".join(lines) + "\n"


def _seed_list(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _check_out(out: Path, config: ExperimentConfig) -> None:
    """Write ``config.toml`` into a new ``out``; refuse an ``out`` that holds another configuration."""
    saved = out / "config.toml"
    current = tomllib.loads(tomli_w.dumps(config.to_dict()))
    if not saved.exists():
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(tomli_w.dumps(current))
        return
    before = tomllib.loads(saved.read_text())
    changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
    if changed:
        raise ExperimentError(f"output folder {out}: holds an experiment with another configuration "
                              f"(differs in {', '.join(changed)}); use another --out")


def load_experiment_tiles(config: ExperimentConfig) -> TileSet:
    """The real folder of ``config`` tiled as configured."""
    return load_tiles(config.real_dir, config.input_size, min_crack_px=config.min_crack_px, pad=config.pad,
                      stride=config.tile_stride, crack_image_negatives=config.crack_image_negatives,
                      groups=config.groups, capture_gap=config.capture_gap)


def run_experiment(config: ExperimentConfig, out: str | Path, *, device: Any = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every seed of ``config`` not yet finished in ``out``, then write and return Table 1."""
    out = Path(out)
    tiles = load_experiment_tiles(config)
    _check_out(out, config)
    counts = tiles.counts()
    say(f"{config.real_dir}: {counts['crack']} crack and {counts['no_crack']} no-crack {config.input_size} px tiles "
        f"from {counts['tiled_images']} images in {counts['groups']} physical groups ({counts['crack_groups']} with "
        f"cracks); kept apart: {counts['crack_image_no_crack_pixel']} crack-free tiles of crack images, "
        f"{counts['too_few_crack_pixels']} with < {config.min_crack_px} crack px; padded {counts['padded_images']}, "
        f"skipped {counts['skipped_images']} images smaller than a tile")
    rows = []
    for seed in config.seeds:
        done = out / f"seed_{seed:03d}.json"
        if done.exists():
            say(f"seed {seed}: done before ({done})")
            rows.append(json.loads(done.read_text()))
            continue
        rows.append(run_seed(config, tiles, seed, out, device=device, say=say))
    table = table1_summary(rows)
    table["config"] = config.to_dict()
    table["tiles"] = {**counts, "group_rule": tiles.group_rule}
    table = json_ready(table)
    (out / "table1.json").write_text(json.dumps(table, indent=1))
    (out / "table1.md").write_text(table_markdown(table))
    return table
