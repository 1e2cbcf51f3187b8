"""The fractal θ_init (FractalDB-style formula-driven pre-training): the IFS codes, their
rendering, the config kind and a tiny run that pre-trains on fractals."""

from __future__ import annotations

import chex
import numpy as np
import pytest

from rws_jax.data import ArraySplit, fractal_splits, ifs_codes, render_fractals
from rws_jax.data.fractals import MAX_MAPS, MIN_FILL
from rws_jax.pipeline import Run, preset


def _distances(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    sq = (flat ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None] - 2.0 * flat @ flat.T, 0.0))


def test_codes_follow_the_sigma_factor_rule():
    codes = ifs_codes(40, seed=0)
    assert codes.shape == (40, MAX_MAPS, 7) and codes.dtype == np.float64
    for code in codes:
        used = code[:, 6] > 0
        n = int(used.sum())
        assert 2 <= n <= MAX_MAPS and used[:n].all()  # the maps first, zero rows after
        assert np.isclose(code[:, 6].sum(), 1.0)
        sv = np.linalg.svd(code[:n, :4].reshape(n, 2, 2), compute_uv=False)  # [n, 2], descending
        assert (sv <= 1.0 + 1e-9).all()
        alpha = (sv[:, 0] + 2.0 * sv[:, 1]).sum()
        assert (5 + n) / 2 - 1e-9 <= alpha <= (6 + n) / 2 + 1e-9
    np.testing.assert_array_equal(codes, ifs_codes(40, seed=0))
    assert not np.array_equal(codes, ifs_codes(40, seed=1))
    np.testing.assert_array_equal(ifs_codes(5, seed=0), ifs_codes(5, seed=0))


def test_same_seed_gives_the_same_images():
    codes = ifs_codes(4, seed=3)
    a = render_fractals(codes, 5, (32, 32, 1), seed=7)
    b = render_fractals(codes, 5, (32, 32, 1), seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, render_fractals(codes, 5, (32, 32, 1), seed=8).images)


@pytest.mark.parametrize("shape", [(32, 32, 1), (32, 32, 3), (28, 24, 1)])
def test_images_are_uint8_of_the_asked_shape_with_content(shape):
    split = render_fractals(ifs_codes(6, seed=0), 4, shape, seed=0)
    assert isinstance(split, ArraySplit)
    assert split.images.shape == (24, *shape) and split.images.dtype == np.uint8
    np.testing.assert_array_equal(split.labels, np.repeat(np.arange(6), 4))
    lit = (split.images.max(-1) > 0).reshape(24, -1).mean(1)
    assert (lit >= MIN_FILL / 2).all() and (lit < 0.95).all()  # a shape on a background, never blank
    assert (split.images.reshape(24, -1).max(1) >= 200).all()  # normalised: the densest pixel is bright
    if shape[-1] == 3:  # coloured, not a gray copy
        assert np.abs(split.images[..., 0].astype(int) - split.images[..., 1]).max() > 50


def test_classes_differ_more_than_the_images_of_a_class():
    k, n = 10, 8
    split = render_fractals(ifs_codes(k, seed=0), n, (32, 32, 1), seed=0)
    dist = _distances(split.images)
    same = split.labels[:, None] == split.labels[None]
    off_diagonal = ~np.eye(k * n, dtype=bool)
    within, between = dist[same & off_diagonal].mean(), dist[~same].mean()
    assert within < 0.6 * between, (within, between)
    # and every image's nearest other image is one of its own class
    nearest = np.where(off_diagonal, dist, np.inf).argmin(1)
    assert (split.labels[nearest] == split.labels).mean() >= 0.95
    assert len({im.tobytes() for im in split.images}) == k * n  # no two images alike


def test_fractal_splits_are_cached_and_disjoint_streams():
    train, val = fractal_splits(3, 6, (32, 32, 1), 0)
    assert len(train) == 18 and len(val) == 6  # default: 2 validation images per class at least
    assert fractal_splits(3, 6, (32, 32, 1), 0)[0] is train
    assert not train.images.flags.writeable
    assert not {im.tobytes() for im in val.images} & {im.tobytes() for im in train.images}


def test_config_accepts_the_fractal_kind_and_refuses_bad_ones():
    cfg = preset("tiny", init={"kind": "fractal", "classes": 10, "images_per_class": 20})
    assert cfg.init_kind == "fractal"
    assert preset("tiny", init={"kind": "fractal"}).init_kind == "fractal"  # the defaults, 100 x 500
    for bad, match in [({"kind": "fractal", "classes": 1}, "classes"),
                       ({"kind": "fractal", "classes": [1, 2]}, "classes"),
                       ({"kind": "fractal", "images_per_class": "many"}, "images_per_class"),
                       ({"kind": "fractal", "images_per_class": True}, "images_per_class"),
                       ({"kind": "fractal", "path": "x.pth"}, "takes only"),
                       ({"kind": "fractals"}, "kind one of")]:
        with pytest.raises(ValueError, match=match):
            preset("tiny", init=bad)


def test_tiny_run_pretrains_on_fractals(tmp_path):
    cfg = preset("tiny", init={"kind": "fractal", "classes": 10, "images_per_class": 20})
    run = Run(cfg, tmp_path, progress=False, log=lambda _: None)
    model, train, val, tc = run.models.pretraining_task
    shape = run.data.main.image_shape
    assert train.image_shape == shape and len(train) == 200 and len(val) == 20
    assert set(np.unique(train.labels)) == set(range(10)) and tc.flip
    # θ_init's task is the fractals alone: the same images as the renderer's, none of the dataset's
    rendered = render_fractals(ifs_codes(10, cfg.seed), 20, shape, (cfg.seed, 1))
    np.testing.assert_array_equal(train.images, rendered.images)
    pre = {im.tobytes() for im in run.data.pretraining_half.images}
    assert not any(im.tobytes() in pre for im in train.images)
    own, theta = run.models.pretrained(), run.models.theta_init
    assert own["params"]["head"]["kernel"].shape[-1] == 10  # the fractal classes' head
    assert theta["params"]["head"]["kernel"].shape[-1] == run.data.main.num_classes  # the task's, fresh
    chex.assert_trees_all_equal(own["params"]["conv_0"], theta["params"]["conv_0"])
    assert (run.dir / "checkpoints" / "init" / "done").is_file()
