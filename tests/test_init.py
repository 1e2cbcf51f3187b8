"""θ_init kinds of the pipeline (PipelineConfig.init): a generic θ_init that never saw the
fine-tuning labels. Rotation prediction and other classes run end to end in tests/test_study.py;
here: the config's refusals, the imported ImageNet-style checkpoint, and the CIFAR presets'
refusal to start without it."""

import numpy as np
import pytest

from rws_jax import cli
from rws_jax.models import get_model
from rws_jax.models.torch_layout import vgg_feature_indices
from rws_jax.pipeline import Run, preset
from rws_jax.pipeline.model_store import InitSourceError, check_init_source


def test_init_config_is_checked():
    assert preset("tiny").init_kind == "supervised"
    with pytest.raises(ValueError, match="kind one of"):
        preset("tiny", init={"kind": "imagenet"})
    with pytest.raises(ValueError, match="overlap the classes the run fine-tunes on"):
        preset("tiny", init={"kind": "classes", "classes": [5, 6]})  # the run fine-tunes on all 10
    with pytest.raises(ValueError, match="overlap"):
        preset("tiny", classes=[0, 1, 2], transfer_dataset="fashion_mnist", transfer_classes=[3, 4],
               init={"kind": "classes", "classes": [4, 5]})  # the same-domain pair's other side
    with pytest.raises(ValueError, match="takes only"):
        preset("tiny", init={"kind": "rotation", "classes": [1, 2]})
    ok = preset("tiny", classes=[0, 1, 2, 3, 4], init={"kind": "classes", "classes": [5, 6, 7, 8, 9]})
    assert ok.init_kind == "classes"


def test_cifar_presets_start_from_imagenet_weights_and_refuse_without_them(tmp_path, capsys):
    for name in ("cifar10_vgg16", "cifar100_vgg16"):
        cfg = preset(name)
        assert cfg.init == {"kind": "torch", "path": None, "head": "drop"}
        with pytest.raises(InitSourceError, match="vgg16-397923af.pth.*--set init.path=FILE"):
            check_init_source(cfg)
    assert preset("cifar10_vgg16_colab").init_kind == "rotation"  # no download in a Colab session
    out = tmp_path / "run"
    rc = cli.main(["demo", "--preset", "cifar10_vgg16", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "init.path is not set" in err[0]
    assert not (out / "checkpoints").exists()  # refused before any training
    with pytest.raises(InitSourceError, match="does not exist"):
        check_init_source(preset("cifar10_vgg16", init={"kind": "torch", "path": str(tmp_path / "nope.pth")}))


def test_imported_theta_init_drops_the_head_and_sums_rgb_for_gray(tmp_path):
    """A torchvision-layout VGG-16 state dict (features.*, classifier.0/3/6) as θ_init of a
    grayscale run: convs imported (the first summed over RGB), the head the task's own."""
    width = 0.0625
    rgb = get_model("vgg16", 10, width=width)
    rng = np.random.default_rng(0)
    sd, cin = {}, 3
    for idx, cout in zip(vgg_feature_indices(rgb.cfg), [c for c in rgb.cfg if c != "M"]):
        c = int(cout * width)
        sd[f"features.{idx}.weight"] = rng.normal(0, 0.1, (c, cin, 3, 3)).astype(np.float32)
        sd[f"features.{idx}.bias"] = rng.normal(0, 0.1, (c,)).astype(np.float32)
        cin = c
    for i, (o, n) in enumerate([(64, 32 * 7 * 7), (64, 64), (1000, 64)]):  # an ImageNet head, dropped
        sd[f"classifier.{3 * i}.weight"] = rng.normal(size=(o, n)).astype(np.float32)
        sd[f"classifier.{3 * i}.bias"] = np.zeros(o, np.float32)
    path = tmp_path / "vgg16_imagenet.npz"
    np.savez(path, **sd)
    cfg = preset("tiny", init={"kind": "torch", "path": str(path), "head": "drop"}, pretrain_examples=64,
                 finetune_examples=64)
    run = Run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    v = run.models.theta_init
    first = sd["features.0.weight"].sum(axis=1, keepdims=True)  # [O, 1, 3, 3]
    np.testing.assert_allclose(v["params"]["conv_0"]["kernel"], first.transpose(2, 3, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(v["params"]["conv_5"]["kernel"], sd["features.12.weight"].transpose(2, 3, 1, 0))
    assert v["params"]["head"]["kernel"].shape[-1] == 10  # the task's head, not ImageNet's 1000
    assert len(run.data.halves[1]) == 64 and not (run.dir / "checkpoints" / "init").exists()  # nothing pre-trained
