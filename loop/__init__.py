"""The loop: configs, runs, training, evaluation, studies, benchmarks and the CLI.

Sub-packages by job, and what each may import (``tests/loop/test_layout.py`` reads the
imports and keeps this true):

==================  =========================================================  ==========================
package             job                                                        may import (besides stdlib,
                                                                                numpy, scipy, pyarrow...)
==================  =========================================================  ==========================
``loop.errors``     the one error hierarchy (``LoopError``, ``InputError``)    nothing
``loop.config``     checked config fields, model/training configs, presets,    generators, loop.errors
                    the run config frozen in ``run.toml``
``loop.train``      torch only: fit, in-memory data, model, losses, augment,   loop.config, stores,
                    checkpoints, the device resolver; no Ray, no fsspec         loop.errors
``loop.evaluate``   metrics, inference, real images, scoring, overlays,        loop.config, loop.train,
                    contact sheets; no Ray                                     generators, stores,
                                                                               loop.errors
``loop.run``        a run's life: file names, driver, journal, lock,           loop.config, loop.train,
                    generation, fork, ``loop generate``, Ray session and       loop.evaluate, generators,
                    the trainer/evaluator actors                               stores, policies, loop.errors
``loop.study``      comparisons, reports, statistics, failure analysis,        everything above but
                    the crack experiment                                       loop.bench and loop.cli
``loop.bench``      throughput benchmarks                                      everything but loop.cli
``loop.cli``        thin click commands                                        everything
==================  =========================================================  ==========================

Ray is imported only in ``loop.run`` (where actors and tasks are made); fsspec only in
``stores`` (file I/O goes through :class:`stores.location.Location`). ``generators``,
``stores`` and ``policies`` import nothing of ``loop`` but ``loop.errors``.
"""
