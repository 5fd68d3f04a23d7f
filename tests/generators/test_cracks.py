"""The crack generator: contract, labels, geometry measured back from the mask, spaces, the loop."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import skimage.data
import tomli_w
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from generators import GeneratorError, get_generator
from generators.cracks import (
    DEFAULTS,
    SPACE,
    CrackGenerator,
    CrackShape,
    CrackSpaceError,
    crack_generator_from_file,
    crack_shape,
    rasterize_crack,
)
from generators.registry import fit_space
from generators.space import ParamSpace
from policies import PolicyView, get_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen() -> CrackGenerator:
    return CrackGenerator()


def params(**overrides) -> dict:
    """A clean crack: no noise, blur or shading; a fully covered crack darkens by 0.3."""
    base = {"crack_probability": 1.0, "segments_mean": 3.0, "segment_length": 0.15, "length_spread": 0.2,
            "bend_sigma": 30.0, "width": 0.02, "width_variation": 0.1, "roughness": 0.0,
            "centre_spread": 0.6, "intensity": 0.3,
            "texture": "gravel", "texture_scale": 1.0, "texture_mean": 0.6, "texture_contrast": 0.05,
            "shading": 0.0, "noise_sigma": 0.0, "blur_sigma": 0.0}
    return {**base, **overrides}


def test_registered_under_cracks_with_the_classification_task() -> None:
    g = get_generator("cracks")
    assert isinstance(g, CrackGenerator)
    assert (g.name, g.task, g.version) == ("cracks", "classification", "1.1")
    assert g.space == SPACE
    assert g.space["texture"].options == ("brick", "gravel", "grass")


def test_render_contract_and_determinism(gen) -> None:
    p = gen.space.sample(np.random.default_rng(0), 1)[0]
    a, b = gen.render(p, 11, 96), CrackGenerator().render(p, 11, 96)
    assert a.image.dtype == np.uint8 and a.image.shape == (96, 96)
    assert a.mask.dtype == np.uint8 and a.mask.shape == (96, 96) and set(np.unique(a.mask)) <= {0, 1}
    assert a.label in (0, 1) and bool(a.mask.any()) == bool(a.label)
    assert (a.image.tobytes(), a.mask.tobytes(), a.label) == (b.image.tobytes(), b.mask.tobytes(), b.label)
    c = gen.render(p, 12, 96)
    assert not np.array_equal(a.image, c.image)


def test_same_bytes_in_a_fresh_process(gen) -> None:
    """The texture bank is rebuilt in every process; a fresh one must give the same image."""
    p = params(texture="brick", noise_sigma=0.02, blur_sigma=0.5, shading=0.1, roughness=0.01)
    sample = gen.render(p, 5, 64)
    here = hashlib.sha256(sample.image.tobytes() + sample.mask.tobytes()).hexdigest()
    code = textwrap.dedent(f"""
        import hashlib
        from generators.cracks import CrackGenerator
        s = CrackGenerator().render({p!r}, 5, 64)
        print(hashlib.sha256(s.image.tobytes() + s.mask.tobytes()).hexdigest())
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here


def test_centre_spread_at_its_default_renders_the_bytes_of_version_1_0(gen) -> None:
    """The sha256 of these six renders by version 1.0 (crack midpoints fixed in the middle 0.2-0.8)."""
    digest = hashlib.sha256()
    for i, texture in enumerate(["brick", "gravel", "grass"] * 2):
        p = params(texture=texture, roughness=0.01 * (i % 2), noise_sigma=0.01, blur_sigma=0.4, segments_mean=1 + i,
                   centre_spread=DEFAULTS["centre_spread"])
        s = gen.render(p, 20 + i, 64 if i < 3 else 96)
        digest.update(s.image.tobytes() + s.mask.tobytes() + bytes([s.label]))
    assert digest.hexdigest() == "67498547c294ecaf13dd23972470fa2916f5b8b76aff4b42f807d5b115280a74"


def test_centre_spread_moves_cracks_towards_the_edges(gen) -> None:
    """Midpoints uniform in the central square of side s: the mean offset of a crack's midpoint
    from the image centre is s/4 per axis; at 1 some cracks run out of the image."""
    def midpoint_offsets(spread: float) -> np.ndarray:
        rng = np.random.default_rng(5)
        out = []
        for _ in range(400):
            shape = crack_shape(rng, params(segments_mean=1.0, centre_spread=spread), 64)
            out.append(np.abs(shape.vertices.mean(axis=0) / 64 - 0.5))  # one segment: its midpoint
        return np.array(out)

    centred, spread = midpoint_offsets(0.6), midpoint_offsets(1.0)
    assert centred.max() <= 0.3 + 1e-9 and spread.max() > 0.45
    assert centred.mean() == pytest.approx(0.15, abs=0.01)
    assert spread.mean() == pytest.approx(0.25, abs=0.015)


def test_a_run_frozen_by_version_1_0_keeps_its_placement() -> None:
    """A frozen 1.0 space (no centre_spread) is completed with the 1.0 value, fixed."""
    old = ParamSpace([d for d in SPACE if d.name != "centre_spread"])
    _, space = fit_space(CrackGenerator(), old)
    assert (space["centre_spread"].low, space["centre_spread"].high) == (0.6, 0.6)
    assert space.names == SPACE.names


def test_half_the_samples_have_a_crack_by_default(gen) -> None:
    rows = gen.space.sample(np.random.default_rng(1), 200)
    labels = [gen.render(p, i, 32).label for i, p in enumerate(rows)]
    assert 0.4 < np.mean(labels) < 0.6
    assert all(gen.render(params(), s, 32).label == 1 for s in range(10))
    empty = [gen.render(params(crack_probability=0.0), s, 32) for s in range(10)]
    assert all(s.label == 0 and not s.mask.any() for s in empty)


def test_the_crack_only_darkens_its_own_pixels_by_the_intensity(gen) -> None:
    """Same seed with and without a crack: same texture (separate random streams); the crack darkens
    fully covered pixels by ``intensity`` and partly covered ones by less (anti-aliasing)."""
    with_crack = gen.render(params(width=0.04), 3, 128)
    without = gen.render(params(crack_probability=0.0, width=0.04), 3, 128)
    diff = without.image.astype(float) - with_crack.image.astype(float)
    near = ndimage.binary_dilation(with_crack.mask.astype(bool), iterations=2)
    assert np.all(diff[~near] == 0)
    core = ndimage.binary_erosion(with_crack.mask.astype(bool), iterations=1)
    assert np.median(diff[core]) == pytest.approx(0.3 * 255, abs=2)
    edge = (diff > 2) & (diff < 0.3 * 255 - 10)
    assert edge.sum() > 20  # anti-aliased edge pixels


def test_rasterized_geometry_matches_the_polyline() -> None:
    """A known 2-segment crack: mask area = length × width, skeleton length = polyline length."""
    vertices = np.array([[20.0, 30.0], [70.0, 40.0], [100.0, 95.0]])
    widths = np.array([4.0, 4.0, 4.0])
    shape = CrackShape(vertices=vertices, widths=widths, path=vertices, path_widths=widths)
    coverage, mask = rasterize_crack(shape, 128)
    length = shape.segment_lengths.sum()
    assert coverage.sum() == pytest.approx(length * 4.0, rel=0.06)
    assert mask.sum() == pytest.approx(length * 4.0, rel=0.12)
    assert skeletonize(mask.astype(bool)).sum() == pytest.approx(length, rel=0.15)
    assert shape.turns == pytest.approx([np.degrees(np.arctan2(55, 30) - np.arctan2(10, 50))])


def test_drawn_cracks_follow_their_parameters(gen) -> None:
    """Over many cracks the polylines follow the distributions, and masks agree with the polylines."""
    p = params(segments_mean=4.0, segment_length=0.1, length_spread=0.3, bend_sigma=25.0, width=0.02,
               width_variation=0.2)
    size = 256
    shapes = [crack_shape(np.random.default_rng(s), p, size) for s in range(300)]
    counts = np.array([len(s.segment_lengths) for s in shapes])
    lengths = np.concatenate([s.segment_lengths for s in shapes]) / size
    turns = np.concatenate([s.turns for s in shapes])
    widths = np.concatenate([s.widths for s in shapes]) / size
    assert counts.mean() == pytest.approx(4.0, abs=0.3)
    assert np.median(lengths) == pytest.approx(0.1, rel=0.1)
    assert np.std(np.log(lengths)) == pytest.approx(0.3, rel=0.12)
    assert np.std(turns) == pytest.approx(25.0, rel=0.12)
    assert np.median(widths) == pytest.approx(0.02, rel=0.1)
    assert np.std(np.log(widths)) == pytest.approx(0.2, rel=0.12)
    for shape in shapes[:20]:
        coverage, mask = rasterize_crack(shape, size)
        inside = np.all((shape.vertices >= 0) & (shape.vertices < size - 1))
        if inside:
            band = sum(l * (a + b) / 2 for l, a, b in zip(shape.segment_lengths, shape.widths[:-1], shape.widths[1:]))
            assert coverage.sum() == pytest.approx(band, rel=0.12)


def test_roughness_bends_the_path_but_keeps_the_vertices(gen) -> None:
    straight = crack_shape(np.random.default_rng(0), params(roughness=0.0), 128)
    rough = crack_shape(np.random.default_rng(0), params(roughness=0.015), 128)
    assert np.allclose(straight.vertices, rough.vertices)
    assert np.array_equal(straight.path[0], rough.path[0]) and np.allclose(straight.path[-1], rough.path[-1])
    assert np.abs(straight.path - rough.path).max() > 0.5


def test_custom_exemplars_and_space_file(tmp_path) -> None:
    folder = tmp_path / "textures"
    folder.mkdir()
    Image.fromarray(skimage.data.brick()[:128, :128]).save(folder / "wall.png")
    Image.fromarray(skimage.data.grass()[:100, :160]).save(folder / "lawn.png")
    custom = CrackGenerator(exemplars=folder)
    assert custom.space["texture"].options == ("lawn", "wall")
    assert custom.version.startswith("1.1+x")
    sample = custom.render({**params(), "texture": "wall"}, 1, 64)
    assert sample.image.shape == (64, 64)

    space = tmp_path / "space.toml"
    space.write_text(tomli_w.dumps({"dimensions": [
        {"name": "width", "kind": "log", "low": 0.01, "high": 0.02, "unit": "side", "description": "fitted"},
        {"name": "texture", "kind": "choice", "options": ["wall"], "unit": "", "description": "one exemplar"},
    ]}))
    fitted = crack_generator_from_file(space, exemplars=folder)
    assert (fitted.space["width"].low, fitted.space["width"].high) == (0.01, 0.02)
    assert fitted.space["texture"].options == ("wall",)
    assert fitted.space["intensity"] == SPACE["intensity"]
    # Written before version 1.1: its cracks stay where 1.0 put them.
    assert (fitted.space["centre_spread"].low, fitted.space["centre_spread"].high) == (0.6, 0.6)
    with pytest.raises(CrackSpaceError, match=r"space file .*space.toml: dimension 'texture' has option\(s\) \['wall'\]"):
        crack_generator_from_file(space)


@pytest.mark.parametrize(("dimension", "problem"), [
    ({"name": "colour", "kind": "continuous", "low": 0, "high": 1}, r"unknown dimension\(s\) \['colour'\]"),
    ({"name": "width", "kind": "log", "low": 0.01, "high": 0.9}, r"dimension 'width' has bounds \[0.01, 0.9\]"),
    ({"name": "intensity", "kind": "choice", "options": ["dark"]}, "'intensity' must be numeric"),
])
def test_bad_space_files_name_the_file_and_dimension(tmp_path, dimension, problem) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps({"dimensions": [{"unit": "", "description": "", **dimension}]}))
    with pytest.raises(CrackSpaceError, match=f"space file {path}: .*{problem}"):
        crack_generator_from_file(path)


def test_unreadable_space_files_are_named(tmp_path) -> None:
    with pytest.raises(CrackSpaceError, match="space file .*nope.toml: not found"):
        crack_generator_from_file(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("dimensions = [ {")
    with pytest.raises(CrackSpaceError, match="space file .*broken.toml: cannot be read as TOML"):
        crack_generator_from_file(broken)


def test_bad_render_inputs(gen) -> None:
    with pytest.raises(GeneratorError, match="seed: expected a non-negative integer"):
        gen.render(params(), -1, 64)
    with pytest.raises(GeneratorError, match="size: expected an integer"):
        gen.render(params(), 0, 8)
    with pytest.raises(ValueError, match="parameter 'width'"):
        gen.render(params(width=1.0), 0, 64)


def test_worst10_ranks_crack_samples_by_loss() -> None:
    """Classification scores have no IoU: the default worst policy ranks by the per-sample loss."""
    rows = SPACE.sample(np.random.default_rng(0), 20)
    table = pa.Table.from_pylist([{"sample_id": i, "split": "val", **r} for i, r in enumerate(rows)])
    loss = np.linspace(0.1, 2.0, 20)
    metrics = pa.table({"sample_id": np.arange(20), "loss": loss, "p_true": np.exp(-loss), "error": loss > 1})
    view = PolicyView(SPACE, table, metrics, 1)
    policy = get_policy("worst10")
    assert policy.metric_for(view) == "loss"
    proposals = policy.propose(view, 20, np.random.default_rng(0))
    assert {p.parent_id for p in proposals} == {19, 18}
    assert get_policy("worst:metric=p_true").metric_for(view) == "p_true"


@pytest.mark.slow
def test_the_adaptive_loop_runs_on_cracks(ray_local, tmp_path) -> None:
    from loop.config.run import RunConfig
    from loop.run.lifecycle import run_status, start_run

    run = str(tmp_path / "run")
    config = RunConfig.for_preset("smoke", generator="cracks", policy="worst10", cycles=1, n_train=8, n_val=10,
                                  n_per_cycle=6, size=64, batch_size=4, workers=1)
    start_run(run, config, say=lambda line: None)
    status = run_status(run)
    assert [c["state"] for c in status["cycles"]] == ["done", "done"]
    assert set(status["cycles"][1]["val"]) == {"error", "loss"}
    assert status["cycles"][1]["samples"] == {"worst:k=0.1,m=10,radius=0.05": 6}
