"""The cycle driver: generate → train → evaluate, cycle after cycle, journaled and resumable.

Cycle 0 renders the fixed validation set, the initial training set and the held-out test
set (``n_test`` samples of the initial distribution, an rng stream of their own), trains
from scratch and scores the validation and test sets. Cycle k asks the policy for new
samples (from the parameter table and the validation metrics of cycle k-1, never a test
row or score: :func:`policy_view`), renders them, fine-tunes cycle k-1's model and scores
both sets again, and each named folder of real images. A run with real validation images
(``--real-val``) then places them in the space and scores them (:mod:`loop.run.anchors`):
after cycle 0, and after every cycle but the last when its policy proposes from them
(``anchored``); the next cycle's policy sees them as :attr:`policies.PolicyView.anchors`. Every step first looks in the
journal: a step that finished is skipped, a step that did not is redone from what it fixed
before dispatch (the batch plans are journaled before any batch is rendered), so a run
killed anywhere and resumed ends with the same data.

While a model trains, the trainer's progress events (:func:`loop.train.fit.train`) go to the
caller's ``train_progress`` sink as they come and to the journal as ``train_progress`` events
(every epoch end, mid-epoch ones at most every :data:`JOURNAL_PROGRESS_S`). Those are a record
for ``loop status``; nothing that resumes a run looks at them.

A cycle's training keeps a stage checkpoint (``RUN/checkpoints/cycle_NNN.stage.safetensors``,
:mod:`loop.train.stage_checkpoints`) at each stage end and every few minutes; a driver that
redoes an unfinished training (``loop resume``) has the trainer resume from it, to the same
weights. It is removed once the cycle's ``trained`` event is journaled.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import pyarrow.compute as pc

from loop.config.training import Preset
from loop.run.generation import BatchPlan, next_ids, plan_batches, run_generator, run_plans
from loop.run.journal import Journal
from loop.run.names import (
    checkpoint_name,
    checkpoint_uri,
    found_checkpoint_uri,
    stage_checkpoint_uri,
    test_metrics_name,
    val_metrics_name,
)
from loop.config.run import RunConfig
from policies import PolicyView, Proposal, get_policy

Progress = Callable[[str], None]
TrainProgress = Callable[[dict[str, Any]], None]
"""Takes a training progress record: :data:`TRAIN_PROGRESS_FIELDS` and ``cycle``."""

TRAIN_PROGRESS_FIELDS = ("kind", "stage", "stages", "stage_name", "epoch", "epochs", "step", "steps", "loss",
                         "images_per_s", "elapsed_s", "eta_s", "fraction")
"""The fields of a trainer progress event that the driver passes on and journals."""
JOURNAL_PROGRESS_S = 30.0
"""Mid-epoch progress goes to the journal at most once per this many seconds (epoch ends always)."""


def train_progress_record(cycle: int, event: dict[str, Any]) -> dict[str, Any]:
    """The record of a trainer progress ``event`` in cycle ``cycle``: its :data:`TRAIN_PROGRESS_FIELDS`, rounded."""
    record: dict[str, Any] = {"cycle": cycle}
    for key in TRAIN_PROGRESS_FIELDS:
        value = event.get(key)
        record[key] = round(value, 5 if key in ("loss", "fraction") else 2) if isinstance(value, float) else value
    return record


TEST_SPLIT = "test"
"""The split of the held-out synthetic test set."""
# The rng streams of cycle 0's draws (cycle k > 0 proposes on stream 1).
VAL_STREAM, TRAIN_STREAM, TEST_STREAM = 0, 1, 2


def _plan_to_json(plan: BatchPlan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


def _plan_from_json(data: dict[str, Any]) -> BatchPlan:
    return BatchPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def policy_view(store: Any, cycle: int, anchors: Any = None) -> PolicyView:
    """What a policy sees when proposing cycle ``cycle``: the samples of earlier cycles and
    the validation scores of the cycle before; never a held-out test sample or its score.
    ``anchors``: the real validation images as placed after the cycle before (a table, see
    :func:`loop.run.anchors.anchors_view_table`; ``None``: none)."""
    params = store.params()
    metrics = store.metrics()
    test_ids = params.filter(pc.equal(params["split"], TEST_SPLIT))["sample_id"]
    if metrics.num_rows:
        metrics = metrics.filter(pc.equal(metrics["cycle"], cycle - 1))
        if len(test_ids):
            metrics = metrics.filter(pc.invert(pc.is_in(metrics["sample_id"], value_set=test_ids.combine_chunks())))
    visible = pc.and_(pc.less(params["cycle"], cycle), pc.not_equal(params["split"], TEST_SPLIT))
    return PolicyView(space=store.space, params=params.filter(visible), metrics=metrics, cycle=cycle,
                      **({} if anchors is None else {"anchors": anchors}))


class CycleDriver:
    """Runs the cycles of one run; the caller holds the run lock and the Ray session.

    ``trainer`` and ``evaluator`` are Ray actor handles (or, with ``remote=False``, plain
    :class:`loop.run.trainer_actor.Trainer` / :class:`loop.run.evaluator_actor.Evaluator` objects).
    """

    def __init__(self, store: Any, journal: Journal, config: RunConfig, preset: Preset, *, trainer: Any,
                 evaluator: Any, workers: int, remote: bool = True, say: Progress = print,
                 train_progress: TrainProgress | None = None):
        self.store = store
        self.journal = journal
        self.config = config
        self.preset = preset
        self.trainer = trainer
        self.evaluator = evaluator
        self.workers = workers
        self.remote = remote
        self.say = say
        self.train_progress = train_progress
        self.generator = run_generator(config.generator, config.generator_options, config.space)
        self._real_val_scores: tuple[int, dict[str, Any]] | None = None

    # --- the loop ---------------------------------------------------------------------------

    def run(self, cycles: int) -> None:
        """Run (or finish) cycles 0..``cycles``."""
        for cycle in range(cycles + 1):
            if self.journal.find("cycle_done", cycle=cycle):
                if self.config.real_val:
                    # A run of before scored its real validation images only where it placed them.
                    self._evaluate_real_val(cycle)
                continue
            started = time.time()
            self.say(f"cycle {cycle}/{cycles}")
            self._generate(cycle)
            self._train(cycle)
            self._evaluate(cycle)
            if self._has_test():
                self._evaluate(cycle, TEST_SPLIT)
            if self.config.real:
                self._evaluate_real(cycle)
            if self.config.real_val:
                self._evaluate_real_val(cycle)
            if self.config.real_val and (cycle == 0 or (cycle < self.config.cycles
                                                        and get_policy(self.config.policy).uses_anchors())):
                # Not after the last cycle: placing the images trains an inverse model (minutes); a run
                # given more cycles places them when its policy first asks (:meth:`_anchors`).
                self._anchor(cycle)
            self.store.consolidate()  # images.zarr's consolidated metadata lists this cycle's batches
            self.journal.append("cycle_done", cycle=cycle, wall_s=time.time() - started)

    # --- steps ------------------------------------------------------------------------------

    def _plans(self, cycle: int) -> list[BatchPlan]:
        planned = self.journal.find("planned", cycle=cycle)
        if planned:
            return [_plan_from_json(p) for p in planned["plans"]]
        plans = self._plan_cycle(cycle)
        self.journal.append("planned", cycle=cycle, plans=[_plan_to_json(p) for p in plans])
        return plans

    def _plan_cycle(self, cycle: int) -> list[BatchPlan]:
        cfg = self.config
        first_id, first_batch = next_ids(self.store)
        common = dict(batch_size=cfg.batch_size, seed=cfg.seed, cycle=cycle, size=cfg.size)
        if cycle == 0:
            val = self._propose(cfg.initial_policy, cycle, cfg.n_val, stream=VAL_STREAM)
            train = self._propose(cfg.initial_policy, cycle, cfg.n_train, stream=TRAIN_STREAM)
            val_plans = plan_batches(proposals=val, first_sample_id=first_id, first_batch=first_batch,
                                     split="val", **common)
            train_plans = plan_batches(proposals=train, first_sample_id=first_id + len(val),
                                       first_batch=first_batch + len(val_plans), split="train", **common)
            # The test set comes last, so a run's validation and training data do not depend on n_test.
            n_test = cfg.n_test
            if not n_test:
                return val_plans + train_plans
            test = self._propose(cfg.initial_policy, cycle, n_test, stream=TEST_STREAM)
            test_plans = plan_batches(proposals=test, first_sample_id=first_id + len(val) + len(train),
                                      first_batch=first_batch + len(val_plans) + len(train_plans),
                                      split=TEST_SPLIT, **common)
            return val_plans + train_plans + test_plans
        proposals = self._propose(cfg.policy, cycle, cfg.n_per_cycle, stream=TRAIN_STREAM)
        return plan_batches(proposals=proposals, first_sample_id=first_id, first_batch=first_batch,
                            split="train", **common)

    def _propose(self, spec: str, cycle: int, n: int, stream: int) -> list[Proposal]:
        rng = np.random.default_rng([self.config.seed, cycle, stream])
        policy = get_policy(spec)
        anchored = cycle > 0 and self.config.real_val and policy.uses_anchors()
        return policy.propose(policy_view(self.store, cycle, self._anchors(cycle - 1) if anchored else None), n, rng)

    def _generate(self, cycle: int) -> None:
        if self.journal.find("generated", cycle=cycle):
            return
        plans = self._plans(cycle)
        todo = [p for p in plans if not self.store.has_batch_of(p.batch, p.sample_ids)]
        total, done = sum(len(p) for p in plans), sum(len(p) for p in plans if p not in todo)
        started = time.time()
        self.say(f"  generate: {total} samples in {len(plans)} batches ({done} already committed)")

        shown = done

        def tick(plan: BatchPlan) -> None:
            nonlocal done, shown
            done += len(plan)
            if done == total or done - shown >= total / 10:  # about ten progress lines per cycle
                shown = done
                self.say(f"  generate: {done}/{total} ({time.time() - started:.0f} s)")

        self.journal.check()  # a driver that lost the run lock writes nothing more
        run_plans(self.store.uri, self.config.generator, todo, workers=self.workers if self.remote else 1,
                  on_done=tick, options=self.config.generator_options, space=self.config.space)
        self.journal.append("generated", cycle=cycle, samples=total, wall_s=time.time() - started)

    def _train(self, cycle: int) -> None:
        from loop.train.stage_checkpoints import remove_stage_checkpoint

        stage_checkpoint = stage_checkpoint_uri(self.store, cycle)
        if self.journal.find("trained", cycle=cycle):
            remove_stage_checkpoint(stage_checkpoint)  # left by a driver killed right after journaling
            return
        started = time.time()
        select: dict[str, Any] = {"split": "train"}
        if cycle > 0 and self.config.finetune_on == "new":
            select["cycles"] = [cycle]
        init = self._checked_checkpoint(cycle - 1) if cycle > 0 else None
        out = checkpoint_uri(self.store, cycle)
        train_cfg = dataclasses.replace(self.preset.train, seed=int(np.random.SeedSequence(
            [self.config.seed, cycle]).generate_state(1)[0]))
        self.say(f"  train: {'fine-tune from cycle ' + str(cycle - 1) if init else 'from scratch'} ({self.preset.name})")
        args = ({"run": self.store.uri, "select": select}, train_cfg.to_dict(), self.preset.model.to_dict(), init, out)
        kwargs = {"stage_checkpoint": stage_checkpoint}
        journaled = -JOURNAL_PROGRESS_S

        def on_event(event: dict[str, Any]) -> None:
            nonlocal journaled
            record = train_progress_record(cycle, event)
            if record["kind"] == "epoch" or time.monotonic() - journaled >= JOURNAL_PROGRESS_S:
                journaled = time.monotonic()
                self.journal.append("train_progress", **record)
            if self.train_progress is not None:
                self.train_progress(record)

        self.journal.check()
        if self.remote:
            from loop.run.trainer_actor import follow_training

            result = follow_training(self.trainer, args, on_event, kwargs=kwargs)
        else:  # in-process: the events come when training is over
            result = self.trainer.train(*args, **kwargs)
            for event in self.trainer.progress():
                on_event(event)
        resumed = {"resumed_at": result["resumed_at"]} if result.get("resumed_at") else {}
        if resumed:
            stage, epoch, step = result["resumed_at"]
            self.say(f"  train: resumed from its stage checkpoint (stage {stage}, epoch {epoch}, step {step})")
        self.journal.append("trained", cycle=cycle, checkpoint=checkpoint_name(cycle), digest=result["digest"],
                            loss=result["epoch_losses"][-1], images_per_s=result["images_per_s"],
                            n_samples=result["n_samples"], **resumed, wall_s=time.time() - started)
        remove_stage_checkpoint(stage_checkpoint)

    def _has_test(self) -> bool:
        """Whether the run has a held-out test set: cycle 0 planned one (runs before it, and runs
        with ``n_test = 0``, have none)."""
        planned = self.journal.find("planned", cycle=0)
        return bool(planned) and any(p["split"] == TEST_SPLIT for p in planned["plans"])

    def _evaluate(self, cycle: int, split: str = "val") -> None:
        """Score ``split`` (``val``, or the held-out ``test``) with cycle ``cycle``'s checkpoint."""
        event = "evaluated" if split == "val" else f"{split}_evaluated"
        if self.journal.find(event, cycle=cycle):
            return
        started = time.time()
        name = val_metrics_name(cycle) if split == "val" else test_metrics_name(cycle)
        if name not in self.store.metric_fragment_names():
            uri = self._checked_checkpoint(cycle)
            rows = self._call(self.evaluator.evaluate, self.store.uri, uri, {"split": split})
            for row in rows:
                row.update(cycle=cycle, checkpoint=uri.rstrip("/").rpartition("/")[2])
            self.journal.check()
            self.store.append_metrics(rows, name=name)
        summary = self._summary(cycle, split)
        self.say(f"  evaluate {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))
        self.journal.append(event, cycle=cycle, summary=summary, wall_s=time.time() - started)

    def _summary(self, cycle: int, split: str) -> dict[str, float]:
        """Mean scores of cycle ``cycle`` over the samples of ``split``."""
        params = self.store.params()
        ids = params.filter(pc.equal(params["split"], split))["sample_id"].combine_chunks()
        metrics = self.store.metrics()
        rows = metrics.filter(pc.and_(pc.equal(metrics["cycle"], cycle), pc.is_in(metrics["sample_id"], value_set=ids)))
        keys = [k for k in ("miou", "error", "boundary_f1", "loss") if k in rows.column_names]
        return {k: float(pc.mean(rows[k]).as_py()) for k in keys}

    def _evaluate_real(self, cycle: int) -> None:
        if self.journal.find("real_evaluated", cycle=cycle):
            return
        started = time.time()
        groups: dict[str, dict[str, float]] = {}
        images: list[dict[str, Any]] = []
        for name, folder in self.config.real:
            result = self._score_real_folder(cycle, folder)
            groups[name] = {k: v for k, v in result.items() if isinstance(v, float)}
            images += result["images"]
            self.say(f"  real {name}: " + _scores_line(groups[name]))
        summary = next(iter(groups.values())) if len(groups) == 1 else _pooled(images, groups)
        if len(groups) > 1:
            self.say("  real pooled: " + _scores_line(summary))
        self.journal.append("real_evaluated", cycle=cycle, summary=summary, groups=groups,
                            tile=self.config.real_tile, wall_s=time.time() - started)

    def _evaluate_real_val(self, cycle: int) -> None:
        """Score cycle ``cycle``'s model on the real validation images, when they have masks, after
        every cycle (the last too): the run's own measure of which checkpoint suits real images
        (``loop status``'s best cycle on real-val), whatever the policy."""
        from loop.run.anchors import real_val_folder

        if self.journal.find("real_val_evaluated", cycle=cycle) or not real_val_folder(self.config.real_val).labelled:
            return
        started = time.time()
        result = self._score_real_val(cycle)
        scores = {k: v for k, v in result.items() if isinstance(v, float)}
        self.say("  real-val: " + _scores_line(scores))
        summary = {"n_images": result["n_images"], **scores}
        self.journal.append("real_val_evaluated", cycle=cycle, summary=summary, tile=self.config.real_tile,
                            wall_s=time.time() - started)

    def _score_real_val(self, cycle: int) -> dict[str, Any]:
        """Cycle ``cycle``'s model on the real validation folder (kept for the cycle's anchors, which
        need the same per-image scores)."""
        if self._real_val_scores is None or self._real_val_scores[0] != cycle:
            self._real_val_scores = (cycle, self._score_real_folder(cycle, self.config.real_val))
        return self._real_val_scores[1]

    def _score_real_folder(self, cycle: int, folder: str) -> dict[str, Any]:
        """Cycle ``cycle``'s model on a real folder, in the run's tiles (``real_tile``)."""
        return self._call(self.evaluator.evaluate_real, self._checked_checkpoint(cycle), folder,
                          tile=self.config.real_tile, overlap=self.config.real_overlap)

    def _anchor(self, cycle: int) -> None:
        """Place the real validation images in the space and score them with cycle ``cycle``'s model
        (:func:`loop.run.anchors.estimate_anchors`), once: a resume reads the written file."""
        from loop.run.anchors import (
            anchors_exist, anchors_path, anchors_summary, estimate_anchors, read_anchors, write_anchors,
        )

        if self.journal.find("anchored", cycle=cycle):
            return
        started = time.time()
        if not anchors_exist(self.store, cycle):
            def score(folder: str) -> list[dict[str, Any]]:
                return self._score_real_val(cycle)["images"]

            self.say(f"  real-val: locating {self.config.real_val}")
            data = estimate_anchors(self.store, cycle, self.config.real_val, score=score, say=self.say)
            self.journal.check()
            write_anchors(self.store, cycle, data)
        data, digest = read_anchors(self.store, cycle)
        summary = anchors_summary(data)
        self.say("  real-val: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        self.journal.append("anchored", cycle=cycle, file=anchors_path(cycle), digest=digest, summary=summary,
                            inverse_r2=data.get("r2", {}), wall_s=time.time() - started)

    def _anchors(self, cycle: int) -> Any:
        """The anchors written after cycle ``cycle`` as the policy's table (placed now if that cycle
        has none yet: a run given more cycles, whose last cycle was not anchored)."""
        from loop.run.anchors import anchors_view_table, read_anchors

        if not self.journal.find("anchored", cycle=cycle):
            self._anchor(cycle)
        event = self.journal.find("anchored", cycle=cycle)
        return anchors_view_table(read_anchors(self.store, cycle, event["digest"])[0])

    def _checked_checkpoint(self, cycle: int) -> str:
        """URI of cycle ``cycle``'s checkpoint, checked against the journal (:func:`checked_checkpoint_uri`)."""
        return checked_checkpoint_uri(self.store, self.journal, cycle)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self.remote:
            import ray

            return ray.get(method.remote(*args, **kwargs))
        return method(*args, **kwargs)


def checked_checkpoint_uri(store: Any, journal: Journal, cycle: int) -> str:
    """URI of cycle ``cycle``'s checkpoint in the run of ``store`` (the file its ``trained`` event
    names: a run made before safetensors has ``cycle_NNN.pt``), once its digest file holds the
    digest that event recorded (the loader then checks the bytes against the digest file): a
    checkpoint replaced together with its ``.sha256`` is not the one the run trained."""
    from loop.train.checkpoints import check_recorded_digest

    trained = journal.find("trained", cycle=cycle) or {}
    uri = found_checkpoint_uri(store, cycle, trained.get("checkpoint"))
    if trained.get("digest"):
        check_recorded_digest(uri, trained["digest"], f"the journal's trained event of cycle {cycle}")
    return uri


def _scores_line(summary: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if not k.endswith("_std"))


def _pooled(images: list[dict[str, Any]], groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """The scores of every real image of every group together (each image counts once)."""
    import pyarrow as pa

    from loop.evaluate.scoring import class_rates, summarize_metrics

    table = pa.Table.from_pylist(images)
    columns = [k for k in next(iter(groups.values())) if not k.endswith("_std") and k in table.column_names]
    summary = summarize_metrics(table, columns)
    if "label" in table.column_names:
        summary.update(class_rates(table))
    return {k: v for k, v in summary.items() if isinstance(v, float)}
