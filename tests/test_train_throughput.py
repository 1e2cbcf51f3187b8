"""benchmarks/train_throughput.py: the torch twins match our models, and quick mode writes
sane JSON and Markdown."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import train_throughput as tt  # noqa: E402
from rws_jax.models import get_model  # noqa: E402


def _count_ours(model) -> int:
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0))
    return int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes["params"])))


@pytest.mark.parametrize("name,ours,twin", [
    ("vgg16", lambda: get_model("vgg16", 10), lambda: tt.torch_vgg()),
    ("vgg16_w0.125", lambda: get_model("vgg16", 10, width=0.125), lambda: tt.torch_vgg(width=0.125)),
    ("resnet20", lambda: get_model("resnet20", 10), lambda: tt.torch_resnet_cifar(20)),
    ("resnet56", lambda: get_model("resnet56", 10), lambda: tt.torch_resnet_cifar(56)),
])
def test_torch_twins_have_our_parameter_counts(name, ours, twin):
    net = twin()
    assert sum(p.numel() for p in net.parameters()) == _count_ours(ours()), name


def test_only_rejects_unknown_case(tmp_path):
    with pytest.raises(SystemExit, match="unknown case"):
        tt.main(["--out", str(tmp_path), "--quick", "--only", "nope"])


@pytest.mark.slow
def test_quick_mode_writes_json_and_markdown(tmp_path):
    docs = tmp_path / "doc.md"
    res = tt.main(["--out", str(tmp_path), "--quick", "--docs", str(docs)])
    js = json.loads((tmp_path / "train_throughput.json").read_text())
    assert js["quick"] and set(js["cases"]) == {"vgg16_w0.125"}
    case = js["cases"]["vgg16_w0.125"]
    assert case["batch"] == 16 and case["repeats"] == 2 and case["rounds"] == 1
    for v in ("torch", "ours", "ours_tuned"):
        assert case["variants"][v]["images_per_s"] > 0
    # the tuned group ran in a process with the tuned flags, the others without them
    from rws_jax.cpu_tuning import EIGEN_CONVOLUTIONS

    assert EIGEN_CONVOLUTIONS in case["tuned_xla_flags"] and EIGEN_CONVOLUTIONS in js["tuned_xla_flags"]
    assert case["ratio_tuned_over_torch"] == pytest.approx(
        case["variants"]["ours_tuned"]["images_per_s"] / case["variants"]["torch"]["images_per_s"], rel=1e-2)
    assert json.loads(docs.with_suffix(".json").read_text())["cases"] == js["cases"]
    assert case["ratio_ours_over_torch"] == pytest.approx(
        case["variants"]["ours"]["images_per_s"] / case["variants"]["torch"]["images_per_s"], rel=1e-2)
    assert js["threads"]["torch_num_threads"] >= 1
    md = (tmp_path / "train_throughput.md").read_text()
    assert "python -m benchmarks.train_throughput" in md and "vgg16_w0.125" in md
    assert docs.read_text() == md and res["cases"] == js["cases"]
