"""The store benchmark: small runs of its parts by default, the whole quick bench when slow tests run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stores.bench import bench_query, bench_read, bench_store, stand_in_sample


def test_stand_in_images_are_textured_not_flat_nor_noise():
    image, mask = stand_in_sample(np.random.default_rng(0), 128)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8 and image.shape == (128, 128)
    assert 0.02 < mask.mean() < 0.5
    assert image.std() > 10
    # Neighbouring pixels are correlated (smooth grains), unlike pure noise.
    a, b = image[:, :-1].astype(float).ravel(), image[:, 1:].astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_bench_read_and_query_on_small_runs(tmp_path):
    assert bench_read(str(tmp_path), 32, 70) > 0
    seconds = bench_query(str(tmp_path), n_rows=3000, per_fragment=1000)
    assert 0 < seconds < 60


@pytest.mark.slow
def test_bench_store_quick_reports_every_figure(tmp_path):
    result = bench_store(str(tmp_path), quick=True)
    for key in ("write_mb_per_s", "numpy_save_mb_per_s", "write_ratio", "read_128px_samples_per_s",
                "read_512px_samples_per_s", "query_1m_rows_s"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0
    assert result["write_ratio"] == pytest.approx(result["write_mb_per_s"] / result["numpy_save_mb_per_s"])
    assert list(tmp_path.iterdir()) == []
