"""benchmarks.train_profile's HLO reading and benchmarks.study_epoch's study arithmetic
(the parts that need neither torch nor a profile)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from benchmarks import study_epoch, train_profile


def _compiled_conv_text(n=2, h=8, w=8, cin=3, cout=5, k=3) -> str:
    x = jnp.ones((n, h, w, cin))
    kern = jnp.ones((k, k, cin, cout))
    f = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return f.lower(x, kern).compile().as_text()


def test_conv_flops_counts_a_convolution_by_hand():
    txt = _compiled_conv_text()
    insts, shapes = train_profile.parse_hlo(txt), train_profile.shapes_of(txt)
    total = sum(train_profile.conv_flops(i["body"], shapes) for i in insts.values()
                if "convolution(" in i["body"] and i["op"] in ("fusion", "convolution"))
    # 2 x output elements (2*8*8*5) x window (3*3) x input channels (3)
    assert total == pytest.approx(2 * (2 * 8 * 8 * 5) * 9 * 3)


def test_categories_of_conv_instructions():
    conv = {"op": "fusion", "out": [128, 8, 8, 16], "body": "convolution(%a, %b)"}
    assert train_profile._category("ynn_fusion.1", conv, True, 128) == "conv forward"
    assert train_profile._category("ynn_fusion.1", conv, False, 128) == "conv input grad"
    kgrad = {"op": "fusion", "out": [16, 3, 3, 16], "body": "convolution(%a, %b)"}
    assert train_profile._category("ynn_fusion.2", kgrad, False, 128) == "conv kernel grad"
    tr = {"op": "fusion", "out": [16, 32, 32, 128], "body": "add(%a, %b)"}
    assert train_profile._category("transpose_copy_fusion.3", tr, False, 128) == "layout transposes"
    opt = {"op": "fusion", "out": [3, 3], "body": 'op_name="jit(train_step)/add"'}
    assert train_profile._category("multiply_add_fusion", opt, False, 128) == "optimizer"
    bn = {"op": "fusion", "out": [128], "body": 'op_name="jit(train_step)/transpose(jvp(ResNetCifar))/stem/bn/mul"'}
    assert train_profile._category("reduce_fusion", bn, False, 128) == "BatchNorm"


def test_study_image_epochs_follow_the_presets():
    runs = study_epoch.finetune_image_epochs(premise=True)
    before = study_epoch.finetune_image_epochs(premise=False)
    seed0 = runs["vgg16_seed0"]
    # θ_std twice (premise), 8 θ_rob,c, the mixture model, the updated backbone's θ_std
    assert seed0["models"] == 2 + 8 + 1 + 1 and seed0["image_epochs"] == seed0["models"] * seed0["finetune_examples"]
    assert before["vgg16_seed0"]["models"] == seed0["models"] - 1
    # the same-domain transfer run also fine-tunes its 1 + 8 transfer models with the study's recipe
    cls = runs["vgg16_classes"]
    assert cls["image_epochs"] > cls["models"] * cls["finetune_examples"]
    assert runs["resnet20"]["network"] == "resnet20"
