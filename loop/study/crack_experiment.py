"""The paper's Table 1 (§3.1.2–3.1.3): crack classifiers trained on synthetic, real and mixed data.

For each seed ``s`` (the paper ran seeds 1..200):

1. The real labelled folder (``DIR/images`` + ``DIR/masks``, label = the mask has a crack
   pixel) is — with ``balance`` — cut to as many no-crack as crack images (a seeded draw of
   the larger class, as the paper's sets were even), then split, stratified by label and
   seeded by ``s``, into train / val / test (``fractions``, the paper's 357 / 89 / 64 of 510).
   Images are resized to the preset's final training size (they come in any size).
2. The crack generator is set up from the real *training* split only: with
   ``exemplars="real"`` its texture dictionary is the split's no-crack images (at most
   ``max_exemplars``, scaled like the images are for classification), with
   ``space="fit"`` its crack distributions are fitted on the split's crack masks
   (:func:`generators.crack_fit.fit_pairs`); a folder / a space file / ``"default"`` may
   be given instead.
3. Three models, from the same initial weights (training seed ``s``):
   (i) **synthetic**: trained on ``n_synthetic`` generated images with the preset's
   classification schedule; (ii) **real**: trained on the real training split;
   (iii) **mixed**: model (i) fine-tuned on the real training split. (ii) and (iii) use the
   preset's stages with ``real_epochs`` epochs each (the paper: 10 head + 10 full).
4. Each model's error rate on the real test split and on all real images of the seed.

The summary: per model and evaluation set, mean ± sd of the error rate over seeds, its
99 % Agresti–Coull interval and a paired two-tailed t-test of real vs mixed, from
:mod:`loop.study.statistics` (the functions ``loop compare`` uses). The interval takes the mean
rate as a proportion of N² trials for N seeds, the convention that reproduces the paper's
Table 1 (see :mod:`loop.study.statistics`); ``ci_pooled_*`` is the textbook interval of every
classification of every seed pooled, for comparison.

Results go to ``OUT``: ``config.toml``, one ``seed_NNN.json`` per finished seed (a rerun with
the same configuration skips those), ``table1.json`` and ``table1.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tomli_w
from skimage.transform import resize

from generators.crack_fit import fit_pairs
from generators.cracks import CrackGenerator, load_space_file
from generators.textures import Exemplar, make_exemplar, min_exemplar_side
from loop.config.training import Preset, TrainConfig, get_preset
from loop.study.report import json_ready
from loop.train.data import ArrayView
from loop.study.statistics import CONFIDENCE, agresti_coull_interval, mean_sd, paired_t_test
from loop.evaluate.real import RealFolder
from loop.errors import InputError

MODELS = ("synthetic", "real", "mixed")
"""The three models of Table 1, in order."""

EVAL_SETS = ("test", "all")
"""Where the models are scored: the real test split, and every real image of the seed."""

N_SYNTHETIC = {"paper": 20000, "cpu": 2000, "smoke": 48}
"""Default synthetic training images per preset (the paper had 79312; a validation fifth more)."""

REAL_EPOCHS = {"paper": 10, "cpu": 10, "smoke": 1}
"""Default epochs per stage when training on (or fine-tuning on) the real split, per preset."""


class ExperimentError(InputError):
    """An experiment cannot run as configured (bad setting, too few real images, changed output folder)."""


@dataclass(frozen=True)
class RealSet:
    """A real labelled folder in memory: resized images for the classifier, native images and masks for the fit."""

    names: list[str]
    view: ArrayView
    native_images: list[np.ndarray]
    native_masks: list[np.ndarray]


def resize_grey(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A grey uint8 image resized to ``shape`` (bilinear, anti-aliased when shrinking)."""
    if image.shape == tuple(shape):
        return image
    out = resize(image, shape, order=1, preserve_range=True, anti_aliasing=image.size > shape[0] * shape[1])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_real_set(real_dir: str | Path, size: int) -> RealSet:
    """Read every pair of a real labelled folder; label = the mask has a crack pixel; images resized to ``size``²."""
    folder = RealFolder(real_dir)
    names, images, natives, masks, labels = [], [], [], [], []
    for pair in folder:
        names.append(pair.name)
        natives.append(pair.image)
        masks.append(pair.mask)
        labels.append(int(pair.mask.any()))
        images.append(resize_grey(pair.image, (size, size)))
    return RealSet(names=names, view=ArrayView(np.stack(images), labels), native_images=natives, native_masks=masks)


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with as many of each class as the rarest has (a seeded draw of the others), sorted."""
    classes = np.unique(labels)
    n = min(int((labels == c).sum()) for c in classes)
    picks = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def stratified_split(indices: np.ndarray, labels: np.ndarray, fractions: Sequence[float],
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Split ``indices`` into train / val / test with ``fractions`` of each class (largest remainders).

    Every class puts at least one image into each part when it has three or more.
    """
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == c])
        counts = _apportion(len(members), fractions)
        start = 0
        for name, count in zip(parts, counts):
            parts[name].extend(members[start:start + count].tolist())
            start += count
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def _apportion(n: int, fractions: Sequence[float]) -> list[int]:
    raw = np.asarray(fractions, dtype=float) / float(sum(fractions)) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(fractions):
        # Never leave a part empty: take from the largest.
        for i in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts.tolist()


@dataclass(frozen=True)
class ExperimentConfig:
    """What ``loop experiment cracks`` runs (see the module docstring)."""

    real_dir: str
    seeds: tuple[int, ...] = (1, 2, 3)
    preset: str = "cpu"
    n_synthetic: int | None = None
    real_epochs: int | None = None
    balance: bool = True
    fractions: tuple[float, float, float] = (0.7, 0.175, 0.125)
    exemplars: str = "real"
    space: str = "fit"
    max_exemplars: int = 16
    encoder_weights: str | None = None

    def __post_init__(self) -> None:
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ExperimentError(f"seeds: expected non-negative integers, got {self.seeds!r}")
        get_preset(self.preset)
        if self.n_synthetic is not None and (isinstance(self.n_synthetic, bool) or self.n_synthetic < 2):
            raise ExperimentError(f"n_synthetic: expected an integer >= 2, got {self.n_synthetic!r}")
        if self.real_epochs is not None and (isinstance(self.real_epochs, bool) or self.real_epochs < 1):
            raise ExperimentError(f"real_epochs: expected an integer >= 1, got {self.real_epochs!r}")
        if len(self.fractions) != 3 or any(not f > 0 for f in self.fractions):
            raise ExperimentError(f"fractions: expected three positive train/val/test fractions, got {self.fractions!r}")
        if self.max_exemplars < 1:
            raise ExperimentError(f"max_exemplars: expected an integer >= 1, got {self.max_exemplars!r}")
        if self.exemplars not in ("real", "default") and not Path(self.exemplars).is_dir():
            raise ExperimentError(f"exemplars: expected 'real', 'default' or a folder of texture images, "
                                  f"got {self.exemplars!r} (no such folder)")
        if self.space not in ("fit", "default") and not Path(self.space).is_file():
            raise ExperimentError(f"space: expected 'fit', 'default' or a space file from `loop fit-cracks`, "
                                  f"got {self.space!r} (no such file)")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    @property
    def synthetic_count(self) -> int:
        """Synthetic training images (the preset's default unless set)."""
        return self.n_synthetic or N_SYNTHETIC.get(self.preset, N_SYNTHETIC["cpu"])

    @property
    def real_epoch_count(self) -> int:
        """Epochs per stage on the real split (the preset's default unless set)."""
        return self.real_epochs or REAL_EPOCHS.get(self.preset, REAL_EPOCHS["cpu"])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (TOML-ready), defaults resolved."""
        d = dataclasses.asdict(self)
        d.update(seeds=list(self.seeds), fractions=list(self.fractions), n_synthetic=self.synthetic_count,
                 real_epochs=self.real_epoch_count)
        return {k: v for k, v in d.items() if v is not None}


def schedules(config: ExperimentConfig) -> tuple[Preset, TrainConfig, TrainConfig]:
    """The classification preset, the synthetic schedule and the real / fine-tune schedule."""
    preset = get_preset(config.preset, task="classification")
    if config.encoder_weights:
        preset = dataclasses.replace(preset, model=dataclasses.replace(preset.model,
                                                                        encoder_weights=config.encoder_weights))
    real = dataclasses.replace(preset.train, stages=tuple(dataclasses.replace(s, epochs=config.real_epoch_count)
                                                          for s in preset.train.stages))
    return preset, preset.train, real


def real_exemplars(real: RealSet, indices: np.ndarray, size: int, limit: int,
                   rng: np.random.Generator) -> tuple[Exemplar, ...]:
    """Texture exemplars from the no-crack images at ``indices``, scaled as for classification (side → ``size``).

    At most ``limit`` (a seeded draw). An image is shrunk as the classifier's resize shrinks
    it, but not below :func:`~generators.textures.min_exemplar_side`; smaller or flat
    images are skipped.
    """
    negatives = [int(i) for i in indices if not real.native_masks[i].any()]
    out = []
    for i in rng.permutation(negatives):
        image = real.native_images[i]
        if min(image.shape) < min_exemplar_side() or int(image.max()) == int(image.min()):
            continue
        # As much shrinking as the classifier's resize does, but never below the exemplar minimum.
        scale = min(1.0, max(size / math.sqrt(image.shape[0] * image.shape[1]), min_exemplar_side() / min(image.shape)))
        shape = (max(min_exemplar_side(), round(image.shape[0] * scale)), max(min_exemplar_side(), round(image.shape[1] * scale)))
        out.append(make_exemplar(real.names[i], resize_grey(image, shape), f"{real.names[i]} (real train split)"))
        if len(out) == limit:
            break
    if not out:
        raise ExperimentError(f"exemplars 'real': no no-crack training image is at least {min_exemplar_side()} px a "
                              f"side; pass --exemplars default or a folder")
    return tuple(out)


def crack_generator_for(config: ExperimentConfig, real: RealSet, train: np.ndarray, size: int,
                        rng: np.random.Generator) -> CrackGenerator:
    """The crack generator of one seed: exemplars and space as configured, from the training split only."""
    if config.exemplars == "real":
        exemplars: Any = real_exemplars(real, train, size, config.max_exemplars, rng)
    elif config.exemplars == "default":
        exemplars = None
    else:
        exemplars = config.exemplars
    if config.space == "fit":
        positives = [int(i) for i in train if real.native_masks[i].any()]
        if not positives:
            raise ExperimentError("space 'fit': the real training split has no crack image to fit the cracks on")
        fit = fit_pairs(((real.names[i], real.native_masks[i], real.native_images[i]) for i in positives),
                        where="real training split")
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


def count_errors(model: Any, view: ArrayView, device: Any = None) -> int:
    """How many samples of ``view`` the classifier gets wrong."""
    from loop.evaluate.scoring import evaluate_view

    table = evaluate_view(model, view, device, batch_size=64, task="classification")
    return int(round(float(np.sum(table.column("error").to_numpy()))))


def run_seed(config: ExperimentConfig, real: RealSet, seed: int, out: Path, *, device: Any = None,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and score the three models of one seed; returns the seed's row (also written to ``seed_NNN.json``)."""
    from loop.train.fit import train

    started = time.time()
    preset, synthetic_cfg, real_cfg = schedules(config)
    size = preset.train.stages[-1].size
    labels = real.view.labels
    rng = np.random.default_rng([seed, 0])
    chosen = balanced_indices(labels, rng) if config.balance else np.arange(len(labels))
    split = stratified_split(chosen, labels, config.fractions, rng)
    if min(len(v) for v in split.values()) == 0:
        raise ExperimentError(f"{config.real_dir}: {len(chosen)} real images are too few for a train/val/test split")
    views = {name: real.view.subset(idx) for name, idx in split.items()}
    views["all"] = real.view.subset(chosen)

    generator = crack_generator_for(config, real, split["train"], size, np.random.default_rng([seed, 1]))
    n_val = max(1, config.synthetic_count // 5)
    say(f"seed {seed}: generating {config.synthetic_count} + {n_val} synthetic {size} px images")
    synthetic_train = synthetic_view(generator, config.synthetic_count, size, seed)
    synthetic_val = synthetic_view(generator, n_val, size, seed, first_id=config.synthetic_count)

    checkpoint = out / f"seed_{seed:03d}_synthetic.pt"
    models: dict[str, Any] = {}
    timing: dict[str, float] = {}
    plans = (("synthetic", synthetic_train, synthetic_cfg, None),
             ("real", views["train"], real_cfg, None),
             ("mixed", views["train"], real_cfg, str(checkpoint)))
    for name, view, cfg, init in plans:
        say(f"seed {seed}: training {name} on {len(view)} images" + (" (fine-tuning the synthetic model)" if init else ""))
        t0 = time.time()
        result = train(view, dataclasses.replace(cfg, seed=seed), preset.model, init=init, device=device,
                       out=str(checkpoint) if name == "synthetic" else None)
        timing[name] = time.time() - t0
        models[name] = result.model
    checkpoint.unlink(missing_ok=True)
    checkpoint.with_name(checkpoint.name + ".sha256").unlink(missing_ok=True)

    row: dict[str, Any] = {"seed": seed, "n": {k: len(v) for k, v in views.items()},
                           "n_crack": {k: int(v.labels.sum()) for k, v in views.items()},
                           "errors": {}, "error_rate": {}, "train_s": timing,
                           "generator": {"version": generator.version,
                                         "exemplars": [e.name for e in generator.exemplars],
                                         "space": generator.space.to_dict()}}
    for name, model in models.items():
        errors = {k: count_errors(model, views[k], device) for k in ("test", "all", "val")}
        row["errors"][name] = errors
        row["error_rate"][name] = {k: errors[k] / len(views[k]) for k in errors}
    row["synthetic_val_error_rate"] = count_errors(models["synthetic"], synthetic_val, device) / len(synthetic_val)
    row["wall_s"] = time.time() - started
    (out / f"seed_{seed:03d}.json").write_text(json.dumps(row, indent=1))
    rates = ", ".join(f"{m} {row['error_rate'][m]['test']:.3f}/{row['error_rate'][m]['all']:.3f}" for m in MODELS)
    say(f"seed {seed}: error test/all: {rates} ({row['wall_s']:.0f} s)")
    return row


def table1_summary(rows: Sequence[dict[str, Any]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Table 1 from per-seed rows: per evaluation set and model, mean ± sd and the 99 % intervals; the t-tests."""
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
            pooled = agresti_coull_interval([errors / n], confidence, nobs=n)
            table[where][model] = {"error_mean": mean, "error_sd": sd, "ci_low": low, "ci_high": high,
                                   "ci_pooled_low": pooled[0], "ci_pooled_high": pooled[1],
                                   "errors": errors, "n_classifications": n}
        test = paired_t_test([r["error_rate"]["real"][where] for r in rows],
                             [r["error_rate"]["mixed"][where] for r in rows], ("real", "mixed"))
        table[where]["real_vs_mixed"] = test.to_dict()
    table["synthetic_val_error_mean"] = float(np.mean([r["synthetic_val_error_rate"] for r in rows]))
    return table


def table_markdown(table: dict[str, Any]) -> str:
    """Table 1 as Markdown (the paper's layout)."""
    pct = f"{table['confidence']:.0%}"
    n = table["n_seeds"]
    lines = ["| | | synthetic model | real model | mixed model |", "|---|---|---|---|---|"]
    for where, label in (("test", "test data"), ("all", "all data")):
        cells = table[where]
        lines.append(f"| {label} | μ ± σ | " + " | ".join(
            f"{_num(cells[m]['error_mean'])} ± {_num(cells[m]['error_sd'])}" for m in MODELS) + " |")
        lines.append(f"| | {pct} CI | " + " | ".join(
            f"[{_num(cells[m]['ci_low'])}, {_num(cells[m]['ci_high'])}]" for m in MODELS) + " |")
    tests = "; ".join(f"{w} data: p = {_num(table[w]['real_vs_mixed']['p_value'], '.3g')}" for w in EVAL_SETS)
    lines.append("")
    lines.append(f"Error rates over {n} seeds ({', '.join(map(str, table['seeds']))}). CI: Agresti–Coull with "
                 f"n = N² = {n * n} (the paper's convention, see loop/study/statistics.py). Paired two-tailed t-test "
                 f"real vs mixed: {tests}.")
    return "\n".join(lines) + "\n"


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


def run_experiment(config: ExperimentConfig, out: str | Path, *, device: Any = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every seed of ``config`` not yet finished in ``out``, then write and return Table 1."""
    out = Path(out)
    _check_out(out, config)
    preset = get_preset(config.preset, task="classification")
    real = load_real_set(config.real_dir, preset.train.stages[-1].size)
    if len(np.unique(real.view.labels)) < 2:
        raise ExperimentError(f"{config.real_dir}: needs images with and without a crack, "
                              f"got only label {int(real.view.labels[0])}")
    rows = []
    for seed in config.seeds:
        done = out / f"seed_{seed:03d}.json"
        if done.exists():
            say(f"seed {seed}: done before ({done})")
            rows.append(json.loads(done.read_text()))
            continue
        rows.append(run_seed(config, real, seed, out, device=device, say=say))
    table = table1_summary(rows)
    table["config"] = config.to_dict()
    table = json_ready(table)
    (out / "table1.json").write_text(json.dumps(table, indent=1))
    (out / "table1.md").write_text(table_markdown(table))
    return table

