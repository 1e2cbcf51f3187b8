"""Our corruptions against the reference package ``imagecorruptions`` on real photographs.

Runs only when ``imagecorruptions`` is installed (``pip install -e '.[bench]'``); CI
installs ``.[test]`` and skips it. The full table (every corruption x severity x
{224, 64, 32} px) is ``python -m benchmarks.corruption_fidelity``; it takes minutes
(the reference's glass blur is a Python loop), so it is marked slow.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from benchmarks.corruption_reference import load_imagecorruptions

IC, REASON = load_imagecorruptions()
pytestmark = pytest.mark.skipif(IC is None, reason=f"imagecorruptions not installed: {REASON}")


@pytest.mark.slow
def test_every_corruption_and_severity_within_1p5_db_at_224_64_32():
    from benchmarks.corruption_fidelity import TOLERANCE_DB, measure

    res = measure(sizes=(224, 64, 32), seeds=2, log=lambda *_: None)
    assert res["num_cells"] == 19 * 5 * 3
    missed = [(r["corruption"], r["size"], r["severity"], round(r["diff_db"], 2))
              for r in res["rows"] if abs(r["diff_db"]) > TOLERANCE_DB]
    assert not missed, missed


@pytest.mark.parametrize("name", ["frost", "spatter", "glass_blur", "shot_noise", "pixelate"])
def test_reworked_corruptions_within_1p5_db_at_64(name):
    from benchmarks.corruption_fidelity import TOLERANCE_DB, measure

    res = measure(sizes=(64,), seeds=2, names=(name,), log=lambda *_: None, small_seeds=6)
    diffs = [round(r["diff_db"], 2) for r in res["rows"]]
    assert all(abs(d) <= TOLERANCE_DB for d in diffs), diffs


def test_frost_statistics_table_matches_the_reference_photographs():
    """REFERENCE_FROST in the code is what benchmarks/frost_reference_stats.py measures."""
    from benchmarks.frost_reference_stats import measure

    ft = importlib.import_module("rws_jax.corruptions.frost_texture")
    rows = measure()
    assert len(rows) == len(ft.REFERENCE_FROST) == 5
    for row, (mean_rgb, stds) in zip(rows, ft.REFERENCE_FROST):
        np.testing.assert_allclose(row["mean_rgb"], mean_rgb, atol=1e-3)
        np.testing.assert_allclose(row["crop_std"], stds, atol=1e-3)


def test_canny_equals_opencv_on_liquid_layers_and_photographs():
    cv2 = pytest.importorskip("cv2")
    import jax
    import jax.numpy as jnp
    from skimage.filters import gaussian

    from benchmarks.corruption_reference import photographs
    from rws_jax.corruptions.canny import canny, distance_to_edges

    rng = np.random.default_rng(0)
    imgs = []
    for size, sigma in ((32, 1), (64, 2), (64, 3), (96, 4)):
        layer = gaussian(rng.normal(0.65, 0.3, (size, size)), sigma=sigma)
        layer[layer < 0.68] = 0
        imgs.append((layer * 255).astype(np.uint8))
    gray = [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in photographs(64)]
    f = jax.jit(canny)
    for im in imgs + gray:
        ours = np.asarray(f(jnp.asarray(im)))
        ref = cv2.Canny(im, 50, 150) > 0
        np.testing.assert_array_equal(ours, ref)
        dref = np.minimum(cv2.distanceTransform((255 * ~ref).astype(np.uint8), cv2.DIST_L2, 5), 20)
        dours = np.asarray(distance_to_edges(jnp.asarray(ref)))
        # OpenCV's 5x5 mask approximates the Euclidean distance that we compute exactly
        assert np.abs(dours - dref).max() < 0.5
