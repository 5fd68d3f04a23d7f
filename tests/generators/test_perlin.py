"""Vectorised Perlin noise: agreement with ``noise.pnoise2``, lattice zeros, determinism, errors."""

from __future__ import annotations

import noise
import numpy as np
import pytest

from generators.perlin import PerlinError, lattice_gradients, perlin_grid, perlin_image, random_permutation

# Ken Perlin's reference permutation, the table compiled into the ``noise`` package.
REFERENCE_PERM = np.array([
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30, 69, 142,
    8, 99, 37, 240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117,
    35, 11, 32, 57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71,
    134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41,
    55, 46, 245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89,
    18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186, 3, 64, 52, 217, 226,
    250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212, 207, 206, 59, 227, 47, 16, 58, 17, 182,
    189, 28, 42, 223, 183, 170, 213, 119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43,
    172, 9, 129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97,
    228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239, 107,
    49, 192, 214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138,
    236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
])


def test_reference_table_is_a_permutation() -> None:
    assert sorted(REFERENCE_PERM.tolist()) == list(range(256))


@pytest.mark.parametrize(
    ("x_range", "y_range", "n"), [((0.1, 300.3), (3.05, 40.7), 97), ((0.0, 7.9), (250.2, 260.0), 61)]
)
def test_matches_noise_pnoise2(x_range: tuple[float, float], y_range: tuple[float, float], n: int) -> None:
    # noise.pnoise2 works in float32: hand it exactly the coordinates we use.
    xs = np.linspace(*x_range, n).astype(np.float32).astype(np.float64)
    ys = np.linspace(*y_range, n // 2).astype(np.float32).astype(np.float64)
    ours = perlin_grid(xs, ys, REFERENCE_PERM, dtype=np.float64)
    reference = np.array([[noise.pnoise2(float(x), float(y)) for x in xs] for y in ys])
    assert ours.shape == (len(ys), len(xs))
    assert reference.std() > 0.1  # a real comparison, not of two flat fields
    np.testing.assert_allclose(ours, reference, atol=2e-6)


def test_float32_result_close_to_float64() -> None:
    xs = np.linspace(0.0, 20.0, 200)
    f32 = perlin_grid(xs, xs, REFERENCE_PERM)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, perlin_grid(xs, xs, REFERENCE_PERM, dtype=np.float64), atol=1e-5)


def test_zero_on_lattice_nodes() -> None:
    nodes = np.arange(0.0, 40.0)
    perm = random_permutation(np.random.default_rng(3))
    assert np.abs(perlin_grid(nodes, nodes, perm)).max() < 1e-6


def test_lattice_gradients_use_the_hash() -> None:
    gx, gy = lattice_gradients(np.arange(4), np.arange(3), REFERENCE_PERM)
    p = np.concatenate([REFERENCE_PERM, REFERENCE_PERM])
    h = p[p[p[2] + 1]] & 15  # node (i=2, j=1)
    grad3 = [(1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (1, 0), (-1, 0),
             (0, 1), (0, -1), (0, 1), (0, -1), (1, 0), (-1, 0), (0, -1), (0, 1)]
    assert (gx[1, 2], gy[1, 2]) == grad3[h]


def test_perlin_image_is_seeded_and_scaled() -> None:
    a = perlin_image(np.random.default_rng(7), (48, 64), 12.0)
    b = perlin_image(np.random.default_rng(7), (48, 64), 12.0)
    c = perlin_image(np.random.default_rng(8), (48, 64), 12.0)
    assert a.shape == (48, 64) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0
    # A longer wavelength gives a smoother field: smaller differences between neighbours.
    smooth = perlin_image(np.random.default_rng(7), (48, 64), 40.0)
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(a, axis=1)).mean()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: perlin_grid(np.arange(4.0), np.arange(4.0), np.arange(255)), "perm"),
        (lambda: perlin_grid(np.arange(4.0), np.arange(4.0), np.zeros(256, dtype=int)), "perm"),
        (lambda: perlin_grid(np.zeros((2, 2)), np.arange(4.0), REFERENCE_PERM), "xs, ys"),
        (lambda: perlin_grid(np.array([np.nan]), np.arange(4.0), REFERENCE_PERM), "finite"),
        (lambda: perlin_image(np.random.default_rng(0), (8, 8), 0.0), "wavelength"),
    ],
)
def test_bad_input(call, fragment: str) -> None:
    with pytest.raises(PerlinError, match=fragment):
        call()
