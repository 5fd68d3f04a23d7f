"""The cycle driver: generate → train → evaluate, cycle after cycle, journaled and resumable.

Cycle 0 renders the fixed validation set and the initial training set, trains from scratch
and scores the validation set. Cycle k asks the policy for new samples (from the parameter
table and the validation metrics of cycle k-1), renders them, fine-tunes cycle k-1's model
and scores again. Every step first looks in the journal: a step that finished is skipped, a
step that did not is redone from what it fixed before dispatch (the batch plans are journaled
before any batch is rendered), so a run killed anywhere and resumed ends with the same data.

While a model trains, the trainer's progress events (:func:`loop.train.fit.train`) go to the
caller's ``train_progress`` sink as they come and to the journal as ``train_progress`` events
(every epoch end, mid-epoch ones at most every :data:`JOURNAL_PROGRESS_S`). Those are a record
for ``loop status``; nothing that resumes a run looks at them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import pyarrow.compute as pc

from generators import get_generator
from loop.config.training import Preset
from loop.run.generation import BatchPlan, next_ids, plan_batches, run_plans
from loop.run.journal import Journal
from loop.run.names import checkpoint_name, checkpoint_uri, val_metrics_name
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


def _plan_to_json(plan: BatchPlan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


def _plan_from_json(data: dict[str, Any]) -> BatchPlan:
    return BatchPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def policy_view(store: Any, cycle: int) -> PolicyView:
    """What a policy sees when proposing cycle ``cycle``: the samples of earlier cycles and
    the validation scores of the cycle before."""
    params = store.params()
    metrics = store.metrics()
    if metrics.num_rows:
        metrics = metrics.filter(pc.equal(metrics["cycle"], cycle - 1))
    return PolicyView(space=store.space, params=params.filter(pc.less(params["cycle"], cycle)),
                      metrics=metrics, cycle=cycle)


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
        self.generator = get_generator(config.generator)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, cycles: int) -> None:
        """Run (or finish) cycles 0..``cycles``."""
        for cycle in range(cycles + 1):
            if self.journal.find("cycle_done", cycle=cycle):
                continue
            started = time.time()
            self.say(f"cycle {cycle}/{cycles}")
            self._generate(cycle)
            self._train(cycle)
            self._evaluate(cycle)
            if self.config.real_dir:
                self._evaluate_real(cycle)
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
            val = self._propose(cfg.initial_policy, cycle, cfg.n_val, stream=0)
            train = self._propose(cfg.initial_policy, cycle, cfg.n_train, stream=1)
            val_plans = plan_batches(proposals=val, first_sample_id=first_id, first_batch=first_batch,
                                     split="val", **common)
            train_plans = plan_batches(proposals=train, first_sample_id=first_id + len(val),
                                       first_batch=first_batch + len(val_plans), split="train", **common)
            return val_plans + train_plans
        proposals = self._propose(cfg.policy, cycle, cfg.n_per_cycle, stream=1)
        return plan_batches(proposals=proposals, first_sample_id=first_id, first_batch=first_batch,
                            split="train", **common)

    def _propose(self, spec: str, cycle: int, n: int, stream: int) -> list[Proposal]:
        rng = np.random.default_rng([self.config.seed, cycle, stream])
        return get_policy(spec).propose(policy_view(self.store, cycle), n, rng)

    def _generate(self, cycle: int) -> None:
        if self.journal.find("generated", cycle=cycle):
            return
        plans = self._plans(cycle)
        todo = [p for p in plans if not self.store.has_batch(p.batch)]
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
                  on_done=tick)
        self.journal.append("generated", cycle=cycle, samples=total, wall_s=time.time() - started)

    def _train(self, cycle: int) -> None:
        if self.journal.find("trained", cycle=cycle):
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

            result = follow_training(self.trainer, args, on_event)
        else:  # in-process: the events come when training is over
            result = self.trainer.train(*args)
            for event in self.trainer.progress():
                on_event(event)
        self.journal.append("trained", cycle=cycle, checkpoint=checkpoint_name(cycle), digest=result["digest"],
                            loss=result["epoch_losses"][-1], images_per_s=result["images_per_s"],
                            n_samples=result["n_samples"], wall_s=time.time() - started)

    def _evaluate(self, cycle: int) -> None:
        if self.journal.find("evaluated", cycle=cycle):
            return
        started = time.time()
        name = val_metrics_name(cycle)
        if name not in self.store.metric_fragment_names():
            rows = self._call(self.evaluator.evaluate, self.store.uri,
                              self._checked_checkpoint(cycle), {"split": "val"})
            for row in rows:
                row.update(cycle=cycle, checkpoint=checkpoint_name(cycle))
            self.journal.check()
            self.store.append_metrics(rows, name=name)
        summary = self._val_summary(cycle)
        self.say("  evaluate: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))
        self.journal.append("evaluated", cycle=cycle, summary=summary, wall_s=time.time() - started)

    def _val_summary(self, cycle: int) -> dict[str, float]:
        metrics = self.store.metrics()
        rows = metrics.filter(pc.equal(metrics["cycle"], cycle))
        keys = [k for k in ("miou", "error", "boundary_f1", "loss") if k in rows.column_names]
        return {k: float(pc.mean(rows[k]).as_py()) for k in keys}

    def _evaluate_real(self, cycle: int) -> None:
        if self.journal.find("real_evaluated", cycle=cycle):
            return
        started = time.time()
        result = self._call(self.evaluator.evaluate_real, self._checked_checkpoint(cycle),
                            self.config.real_dir)
        summary = {k: v for k, v in result.items() if isinstance(v, float)}
        self.say("  real: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if not k.endswith("_std")))
        self.journal.append("real_evaluated", cycle=cycle, summary=summary, wall_s=time.time() - started)

    def _checked_checkpoint(self, cycle: int) -> str:
        """URI of cycle ``cycle``'s checkpoint, once its digest file holds the digest its ``trained``
        event recorded (the loader then checks the bytes against the digest file)."""
        from loop.train.checkpoints import check_recorded_digest

        uri = checkpoint_uri(self.store, cycle)
        recorded = self.journal.recorded_digest(cycle)
        if recorded is not None:
            check_recorded_digest(uri, recorded, f"the journal's trained event of cycle {cycle}")
        return uri

    def _call(self, method: Any, *args: Any) -> Any:
        if self.remote:
            import ray

            return ray.get(method.remote(*args))
        return method(*args)
