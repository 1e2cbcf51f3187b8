"""Importing reference-layout PyTorch state dicts (rws_jax.models.from_torch_state_dict).

Parity: state dicts are made here in PyTorch layout (numpy arrays, OIHW kernels, the
reference's key names), imported, and our logits compared with an independent numpy
forward of the reference networks (NCHW, float64), written from the PyTorch code of
``models/vgg.py`` / ``models/resnet.py`` of the reference and akamaster's CIFAR ResNet.
"""

from __future__ import annotations

import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rws_jax.errors import NonFiniteError
from rws_jax.models import (
    VGG_CFGS,
    ImportedModel,
    Normalization,
    TorchImportError,
    from_torch_state_dict,
    get_model,
    load_torch_checkpoint,
)
from rws_jax.models.torch_layout import vgg_feature_indices

REL_TOL = 1e-5
# The reference's cfgs (models/vgg.py): no trailing 'M'.
REF_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


# ----------------------------------------------------------- numpy reference ops (NCHW)


def np_conv2d(x, w, b=None, stride=1, pad=0):
    """x [N, C, H, W], w [O, C, kH, kW] -> [N, O, H', W'] (PyTorch Conv2d, zero padding)."""
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    assert c == c2, (x.shape, w.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def np_max_pool(x, k, stride, pad=0):
    """PyTorch MaxPool2d(k, stride, padding=pad) (floor mode, -inf padding)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride])
    return out


def np_bn(x, sd, prefix, eps=1e-5):
    """BatchNorm2d in eval mode (running statistics)."""
    g, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    m, v = sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + eps) * g[None, :, None, None] \
        + b[None, :, None, None]


def relu(x):
    return np.maximum(x, 0)


def np_linear(x, sd, prefix):
    return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def _f64(sd):
    return {k: np.asarray(v, np.float64) for k, v in sd.items()}


def vgg_reference_forward(sd, cfg, x):
    """The reference's VGG.forward after normalize: features, AdaptiveAvgPool2d(1), Linear."""
    sd, i = _f64(sd), 0
    for v in cfg:
        if v == "M":
            x = np_max_pool(x, 2, 2)
            i += 1
        else:
            x = relu(np_conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], 1, 1))
            i += 2  # conv, ReLU
    x = x.mean(axis=(2, 3))
    return np_linear(x, sd, "classifier")


def torchvision_resnet_forward(sd, block, layers, x, stem_kernel=7):
    """torchvision ResNet (the reference's models/resnet.py) in eval mode."""
    sd = _f64(sd)
    if stem_kernel == 7:
        x = relu(np_bn(np_conv2d(x, sd["conv1.weight"], stride=2, pad=3), sd, "bn1"))
        x = np_max_pool(x, 3, 2, pad=1)
    else:
        x = relu(np_bn(np_conv2d(x, sd["conv1.weight"], stride=1, pad=1), sd, "bn1"))
    for s, n in enumerate(layers):
        for i in range(n):
            p, stride = f"layer{s + 1}.{i}", (2 if s > 0 and i == 0 else 1)
            if block == "basic":
                out = relu(np_bn(np_conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, pad=1), sd, f"{p}.bn1"))
                out = np_bn(np_conv2d(out, sd[f"{p}.conv2.weight"], pad=1), sd, f"{p}.bn2")
            else:
                out = relu(np_bn(np_conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                out = relu(np_bn(np_conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, pad=1), sd, f"{p}.bn2"))
                out = np_bn(np_conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                identity = np_bn(np_conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            else:
                identity = x
            x = relu(out + identity)
    return np_linear(x.mean(axis=(2, 3)), sd, "fc")


def cifar_resnet_forward(sd, n, x):
    """akamaster's pytorch_resnet_cifar10 ResNet (option A shortcut) in eval mode."""
    sd = _f64(sd)
    x = relu(np_bn(np_conv2d(x, sd["conv1.weight"], pad=1), sd, "bn1"))
    for s in range(3):
        for i in range(n):
            p, stride = f"layer{s + 1}.{i}", (2 if s > 0 and i == 0 else 1)
            planes = sd[f"{p}.conv1.weight"].shape[0]
            out = relu(np_bn(np_conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, pad=1), sd, f"{p}.bn1"))
            out = np_bn(np_conv2d(out, sd[f"{p}.conv2.weight"], pad=1), sd, f"{p}.bn2")
            if f"{p}.shortcut.0.weight" in sd:  # option B
                shortcut = np_bn(np_conv2d(x, sd[f"{p}.shortcut.0.weight"], stride=stride), sd, f"{p}.shortcut.1")
            elif stride != 1 or x.shape[1] != planes:
                # LambdaLayer: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))
                q = planes // 4
                shortcut = np.pad(x[:, :, ::2, ::2], ((0, 0), (q, q), (0, 0), (0, 0)))
            else:
                shortcut = x
            x = relu(out + shortcut)
    x = x.mean(axis=(2, 3))  # F.avg_pool2d(out, out.size()[3])
    return np_linear(x, sd, "linear" if "linear.weight" in sd else "fc")


# ------------------------------------------------------- reference-layout state dicts


class _Maker:
    """Builds a state dict in PyTorch layout with random (or zero) float32 values."""

    def __init__(self, seed=0, zeros=False):
        self.rng, self.zeros, self.sd = np.random.default_rng(seed), zeros, {}

    def _arr(self, shape, f):
        return np.zeros(shape, np.float32) if self.zeros else np.asarray(f(shape), np.float32)

    def conv(self, name, o, i, k, bias=False):
        std = np.sqrt(2.0 / (i * k * k))
        self.sd[f"{name}.weight"] = self._arr((o, i, k, k), lambda s: self.rng.normal(0, std, s))
        if bias:
            self.sd[f"{name}.bias"] = self._arr((o,), lambda s: self.rng.normal(0, 0.05, s))

    def bn(self, name, c):
        self.sd[f"{name}.weight"] = self._arr((c,), lambda s: self.rng.uniform(0.5, 1.5, s))
        self.sd[f"{name}.bias"] = self._arr((c,), lambda s: self.rng.normal(0, 0.1, s))
        self.sd[f"{name}.running_mean"] = self._arr((c,), lambda s: self.rng.normal(0, 0.1, s))
        self.sd[f"{name}.running_var"] = self._arr((c,), lambda s: self.rng.uniform(0.5, 1.5, s))
        self.sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    def linear(self, name, o, i):
        self.sd[f"{name}.weight"] = self._arr((o, i), lambda s: self.rng.normal(0, 1 / np.sqrt(i), s))
        self.sd[f"{name}.bias"] = self._arr((o,), lambda s: self.rng.normal(0, 0.1, s))


def vgg_state_dict(cfg, in_ch=3, num_classes=10, seed=0, zeros=False):
    """The reference's VGG state dict (make_layers indices) for a channel list ``cfg``."""
    m, c, i = _Maker(seed, zeros), in_ch, 0
    for v in cfg:
        if v == "M":
            i += 1
            continue
        m.conv(f"features.{i}", v, c, 3, bias=True)
        c, i = v, i + 2
    m.linear("classifier", num_classes, c)
    return m.sd


def torchvision_resnet_state_dict(block, layers, base, num_classes=10, in_ch=3, stem_kernel=7, seed=0,
                                  zeros=False):
    """torchvision ResNet state dict with ``base`` stem channels (64 at full width)."""
    m, expansion = _Maker(seed, zeros), (1 if block == "basic" else 4)
    m.conv("conv1", base, in_ch, stem_kernel)
    m.bn("bn1", base)
    inplanes = base
    for s, n in enumerate(layers):
        planes = base * 2**s
        for i in range(n):
            p, stride = f"layer{s + 1}.{i}", (2 if s > 0 and i == 0 else 1)
            if block == "basic":
                m.conv(f"{p}.conv1", planes, inplanes, 3), m.bn(f"{p}.bn1", planes)
                m.conv(f"{p}.conv2", planes, planes, 3), m.bn(f"{p}.bn2", planes)
            else:
                m.conv(f"{p}.conv1", planes, inplanes, 1), m.bn(f"{p}.bn1", planes)
                m.conv(f"{p}.conv2", planes, planes, 3), m.bn(f"{p}.bn2", planes)
                m.conv(f"{p}.conv3", planes * 4, planes, 1), m.bn(f"{p}.bn3", planes * 4)
            if i == 0 and (stride != 1 or inplanes != planes * expansion):
                m.conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                m.bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    m.linear("fc", num_classes, inplanes)
    return m.sd


def cifar_resnet_state_dict(n, base=16, num_classes=10, in_ch=3, seed=0, projection=False):
    """akamaster's CIFAR ResNet (6n+2) state dict with ``base`` stem channels.

    Option A (no shortcut parameters), or option B (``shortcut.0`` conv, ``shortcut.1`` BN)
    with ``projection=True``.
    """
    m = _Maker(seed)
    m.conv("conv1", base, in_ch, 3), m.bn("bn1", base)
    inplanes = base
    for s in range(3):
        planes = base * 2**s
        for i in range(n):
            p = f"layer{s + 1}.{i}"
            m.conv(f"{p}.conv1", planes, inplanes, 3), m.bn(f"{p}.bn1", planes)
            m.conv(f"{p}.conv2", planes, planes, 3), m.bn(f"{p}.bn2", planes)
            if projection and i == 0 and s > 0:
                m.conv(f"{p}.shortcut.0", planes, inplanes, 1), m.bn(f"{p}.shortcut.1", planes)
            inplanes = planes
    m.linear("linear", num_classes, inplanes)
    return m.sd


def _images(channels=3, n=2, size=32, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (n, channels, size, size)).astype(np.float32)


def _ours(imported: ImportedModel, x_nchw):
    return np.asarray(imported.model.apply(imported.variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)),
                                           train=False))


def _rel_err(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _report(name, rel):
    print(f"\n[parity] {name}: max relative logit error {rel:.2e}")
    assert rel <= REL_TOL, f"{name}: relative logit error {rel:.2e} > {REL_TOL}"


# ----------------------------------------------------------------------------- VGG


def test_our_vgg_cfgs_are_the_reference_cfgs():
    for name, cfg in REF_CFGS.items():
        assert list(VGG_CFGS[name]) == cfg
    assert vgg_feature_indices(REF_CFGS["vgg16"]) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_vgg_parity_with_numpy_reference(name):
    cfg = [v if v == "M" else v // 8 for v in REF_CFGS[name]]  # width 0.125: 8..64 channels
    sd = vgg_state_dict(cfg, num_classes=10, seed=3)
    imported = from_torch_state_dict(name, sd, width=0.125)
    assert imported.normalization is None and imported.model.num_classes == 10
    x = _images()
    _report(f"{name} width 0.125", _rel_err(_ours(imported, x), vgg_reference_forward(sd, cfg, x)))


def test_vgg16_parity_one_channel_input():
    # Fashion-MNIST is fed as 32x32x1 in this project.
    cfg = [v if v == "M" else v // 8 for v in REF_CFGS["vgg16"]]
    sd = vgg_state_dict(cfg, in_ch=1, num_classes=7, seed=4)
    imported = from_torch_state_dict("vgg16", sd, width=0.125)
    x = _images(channels=1)
    _report("vgg16 width 0.125, 1 channel", _rel_err(_ours(imported, x), vgg_reference_forward(sd, cfg, x)))


def test_vgg16_full_width_shapes():
    sd = vgg_state_dict(REF_CFGS["vgg16"], num_classes=10, zeros=True)
    assert sd["classifier.weight"].shape == (10, 512)
    imported = from_torch_state_dict("vgg16", sd)
    expected = jax.eval_shape(get_model("vgg16", 10).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.tree_util.tree_structure(imported.variables) == jax.tree_util.tree_structure(expected)
    chex.assert_trees_all_equal_shapes(imported.variables, expected)
    chex.assert_trees_all_equal_dtypes(imported.variables, expected)
    assert imported.num_params == 14_719_818
    assert imported.variables["params"]["head"]["kernel"].shape == (512, 10)


# -------------------------------------------------------------------------- ResNets


@pytest.mark.parametrize("block,layers,name,stem", [
    ("basic", (2, 2, 2, 2), "resnet18", 7),
    ("basic", (2, 2, 2, 2), "resnet18", 3),
    pytest.param("bottleneck", (3, 4, 6, 3), "resnet50", 7, marks=pytest.mark.slow),
], ids=["resnet18", "resnet18_small_input", "resnet50"])
def test_torchvision_resnet_parity(block, layers, name, stem):
    sd = torchvision_resnet_state_dict(block, layers, base=8, num_classes=10, stem_kernel=stem, seed=5)
    imported = from_torch_state_dict(name, sd, width=0.125)
    assert imported.model.small_input == (stem == 3)
    assert imported.model_kwargs["small_input"] == (stem == 3)
    x = _images()
    ref = torchvision_resnet_forward(sd, block, layers, x, stem_kernel=stem)
    _report(f"{name} width 0.125 stem {stem}x{stem}", _rel_err(_ours(imported, x), ref))


@pytest.mark.parametrize("name,block,layers,count", [
    ("resnet18", "basic", (2, 2, 2, 2), 11_689_512),
    ("resnet50", "bottleneck", (3, 4, 6, 3), 25_557_032),
])
def test_torchvision_resnet_full_width_shapes(name, block, layers, count):
    # torchvision's ImageNet models: 11,689,512 / 25,557,032 parameters (BN running stats not counted).
    sd = torchvision_resnet_state_dict(block, layers, base=64, num_classes=1000, zeros=True)
    imported = from_torch_state_dict(name, sd)
    assert imported.model.small_input is False and imported.model.num_classes == 1000
    expected = jax.eval_shape(get_model(name, 1000).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    chex.assert_trees_all_equal_shapes(imported.variables, expected)
    assert jax.tree_util.tree_structure(imported.variables) == jax.tree_util.tree_structure(expected)
    assert imported.num_params == count


@pytest.mark.parametrize("width,base", [(0.5, 8), (1.0, 16)])
def test_cifar_resnet20_option_a_parity(width, base):
    sd = cifar_resnet_state_dict(3, base=base, num_classes=10, seed=6)
    imported = from_torch_state_dict("resnet20", sd, width=width)
    assert imported.model.shortcut == "pad"
    x = _images()
    _report(f"resnet20 option A width {width}", _rel_err(_ours(imported, x), cifar_resnet_forward(sd, 3, x)))


def test_cifar_resnet_projection_shortcut_and_fc_parity():
    # akamaster's option B: shortcut = Sequential(conv1x1(stride), BN); classifier named 'fc'.
    sd = cifar_resnet_state_dict(3, base=8, num_classes=10, seed=7, projection=True)
    sd["fc.weight"], sd["fc.bias"] = sd.pop("linear.weight"), sd.pop("linear.bias")
    assert "layer2.0.shortcut.0.weight" in sd and "layer1.0.shortcut.0.weight" not in sd
    imported = from_torch_state_dict("resnet20", sd, width=0.5)
    assert imported.model.shortcut == "projection"
    assert imported.variables["params"]["block_1_0"]["proj_conv"]["kernel"].shape == (1, 1, 8, 16)
    x = _images()
    _report("resnet20 option B ('fc') width 0.5", _rel_err(_ours(imported, x), cifar_resnet_forward(sd, 3, x)))


def test_resnet_pad_shortcut_pads_like_akamaster():
    # Our 'pad' shortcut == F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4)).
    from rws_jax.models import BasicBlock

    x = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)  # NHWC, 4 -> 8 channels
    block = BasicBlock(8, stride=2, shortcut="pad")
    shapes = jax.eval_shape(block.init, jax.random.key(0), x)
    variables = {"params": jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), shapes["params"]),  # residual = 0
                 "batch_stats": jax.tree_util.tree_map(lambda s: jnp.ones(s.shape), shapes["batch_stats"])}
    out = np.asarray(block.apply(variables, x))
    ref = np.pad(x.transpose(0, 3, 1, 2)[:, :, ::2, ::2], ((0, 0), (2, 2), (0, 0), (0, 0)))
    np.testing.assert_array_equal(out, np.maximum(ref, 0).transpose(0, 2, 3, 1))


# ------------------------------------------------------ checkpoint forms and errors


def _small_vgg_sd(**kw):
    cfg = [v if v == "M" else v // 8 for v in REF_CFGS["vgg16"]]
    return vgg_state_dict(cfg, **kw)


def test_checkpoint_wrapper_prefix_and_normalization():
    sd = _small_vgg_sd(seed=2)
    bare = from_torch_state_dict("vgg16", sd, width=0.125)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}
               | {"module.normalize.mean": np.array(mean), "module.normalize.std": np.array(std)},
               "epoch": 3, "optimizer": {}}
    imported = from_torch_state_dict("VGG16", wrapped, width=0.125)
    chex.assert_trees_all_equal(imported.variables, bare.variables)
    assert isinstance(imported.normalization, Normalization)
    np.testing.assert_allclose(imported.normalization.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(imported.normalization.std, std, rtol=1e-6)
    x = np.ones((1, 2, 2, 3), np.float32)
    np.testing.assert_allclose(imported.normalization.apply(x)[0, 0, 0], (1 - np.array(mean)) / std, rtol=1e-6)


def test_num_batches_tracked_ignored_and_dtypes_float32():
    sd = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8, stem_kernel=3)
    assert any(k.endswith("num_batches_tracked") for k in sd)
    sd = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in sd.items()}
    imported = from_torch_state_dict("resnet18", sd, width=0.125)
    assert set(imported.variables) == {"params", "batch_stats"}
    assert {x.dtype for x in jax.tree_util.tree_leaves(imported.variables)} == {jnp.dtype(jnp.float32)}


def test_unknown_model_name():
    with pytest.raises(TorchImportError, match=r"unknown model 'vgg17'; valid names: vgg11.*vgg16.*resnet20.*resnet50"):
        from_torch_state_dict("vgg17", _small_vgg_sd())


def test_missing_and_unexpected_keys():
    sd = _small_vgg_sd()
    del sd["features.2.weight"]
    with pytest.raises(TorchImportError, match=r"1 missing key\(s\): features\.2\.weight"):
        from_torch_state_dict("vgg16", sd, width=0.125)
    sd = _small_vgg_sd() | {"features.1.running_mean": np.zeros(8, np.float32)}
    with pytest.raises(TorchImportError, match=r"1 unexpected key\(s\): features\.1\.running_mean"):
        from_torch_state_dict("vgg16", sd, width=0.125)
    # A torchvision ResNet checkpoint given the name of a VGG: both lists, a few keys each.
    sd = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8)
    with pytest.raises(TorchImportError, match=r"missing key\(s\): .*features.*unexpected key\(s\): .*more\)"):
        from_torch_state_dict("vgg16", sd, num_classes=10, width=0.125)


def test_shape_mismatch_names_key_and_both_shapes():
    sd = _small_vgg_sd(num_classes=10)
    with pytest.raises(TorchImportError, match=r"classifier\.weight has shape \(10, 64\) but "
                                               r"vgg16\(num_classes=100, width=0\.125\) expects \(100, 64\)"):
        from_torch_state_dict("vgg16", sd, num_classes=100, width=0.125)
    with pytest.raises(TorchImportError, match=r"features\.0\.weight has shape \(8, 3, 3, 3\) but .* expects \(64, 3, 3, 3\)"):
        from_torch_state_dict("vgg16", sd)  # full width


def test_non_finite_value():
    sd = _small_vgg_sd()
    sd["features.5.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"features\.5\.weight"):
        from_torch_state_dict("vgg16", sd, width=0.125)


def test_bad_inputs():
    sd = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8, stem_kernel=5)
    with pytest.raises(TorchImportError, match=r"conv1\.weight has a \(5, 5\) kernel.*small_input=True"):
        from_torch_state_dict("resnet18", sd, width=0.125)
    with pytest.raises(TorchImportError, match="normalize.std is missing"):
        from_torch_state_dict("vgg16", _small_vgg_sd() | {"normalize.mean": np.zeros(3)}, width=0.125)
    with pytest.raises(TorchImportError, match="not a state dict"):
        from_torch_state_dict("vgg16", {"state_dict": 3})
    with pytest.raises(TorchImportError, match="expected a state dict"):
        from_torch_state_dict("vgg16", [1, 2])
    with pytest.raises(TorchImportError, match=r"does not fit vgg16\(num_classes=\?\): .*missing key\(s\): "
                                               r"classifier\.bias, classifier\.weight"):
        from_torch_state_dict("vgg16", {"features.0.weight": np.zeros((8, 3, 3, 3))})
    # A VGG checkpoint given the name of a CIFAR ResNet: no classifier 'linear', keys listed.
    with pytest.raises(TorchImportError, match=r"resnet20\(num_classes=\?, shortcut='pad'\): \d+ missing key\(s\): bn1\.bias, .*"
                                               r"unexpected key\(s\): "
                                               r"classifier\.bias, classifier\.weight, features\.0\.bias"):
        from_torch_state_dict("resnet20", _small_vgg_sd())


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    sd = _small_vgg_sd(seed=9)
    from_np = from_torch_state_dict("vgg16", sd, width=0.125)
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    tensors["features.0.weight"] = tensors["features.0.weight"].requires_grad_()
    from_torch = from_torch_state_dict("vgg16", tensors, width=0.125)
    chex.assert_trees_all_equal(from_torch.variables, from_np.variables)


def test_real_torch_vgg_matches():
    """The reference's VGG built with torch.nn (make_layers + AdaptiveAvgPool2d + Linear)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    cfg = [v if v == "M" else v // 8 for v in REF_CFGS["vgg16"]]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    net = nn.Module()
    net.features, net.avgpool, net.classifier = nn.Sequential(*layers), nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(64, 10)
    for m in net.modules():  # non-zero biases so they are checked too
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.bias, 0, 0.05)
    x = _images()
    with torch.no_grad():
        ref = net.classifier(torch.flatten(net.avgpool(net.features(torch.from_numpy(x))), 1)).double().numpy()
    imported = from_torch_state_dict("vgg16", net.state_dict(), width=0.125)
    _report("vgg16 width 0.125 vs torch.nn", _rel_err(_ours(imported, x), ref))
    np.testing.assert_allclose(vgg_reference_forward(_f64(net.state_dict()), cfg, x), ref, rtol=1e-4, atol=1e-5)


# ------------------------------------- generic ImageNet checkpoints: head='drop', first_conv='gray'

# torchvision's vgg16-397923af.pth: the 13 convs at the reference's `features` indices (its
# fifth max-pool, features.30, is the last module and has no parameters) and the ImageNet head.
TORCHVISION_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def torchvision_vgg16_state_dict(width=0.125, in_ch=3, seed=0):
    """torchvision VGG-16's keys; convs at ``width`` (full: 64..512 channels) and the head
    ``classifier.0/3/6`` at ``width`` times its [4096, 25088], [4096, 4096], [1000, 4096]."""
    m, c = _Maker(seed), in_ch
    convs = [v for v in REF_CFGS["vgg16"] if v != "M"]
    for idx, v in zip(TORCHVISION_VGG16_CONVS, convs):
        m.conv(f"features.{idx}", int(v * width), c, 3, bias=True)
        c = int(v * width)
    hidden = int(4096 * width)
    m.linear("classifier.0", hidden, c * 7 * 7)  # after AdaptiveAvgPool2d((7, 7))
    m.linear("classifier.3", hidden, hidden)
    m.linear("classifier.6", 1000, hidden)
    return m.sd


def _init(name, num_classes, seed, in_ch=3, **kwargs):
    model = get_model(name, num_classes, **kwargs)
    return model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, in_ch), jnp.float32))


def test_torchvision_vgg16_head_drop():
    sd = torchvision_vgg16_state_dict(seed=12)
    assert vgg_feature_indices(REF_CFGS["vgg16"]) == list(TORCHVISION_VGG16_CONVS)
    assert sd["classifier.0.weight"].shape == (512, 64 * 49) and sd["classifier.6.weight"].shape == (1000, 512)
    imported = from_torch_state_dict("vgg16", sd, head="drop", num_classes=10, head_seed=3, width=0.125)
    assert imported.normalization is None  # torchvision: no normalize.* buffers
    assert imported.model.num_classes == 10 and imported.model_kwargs == {"width": 0.125}
    params = imported.variables["params"]
    for i, idx in enumerate(TORCHVISION_VGG16_CONVS):
        np.testing.assert_array_equal(params[f"conv_{i}"]["kernel"], sd[f"features.{idx}.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(params[f"conv_{i}"]["bias"], sd[f"features.{idx}.bias"])
    init = _init("vgg16", 10, seed=3, width=0.125)
    chex.assert_trees_all_equal(params["head"], init["params"]["head"])
    assert params["head"]["kernel"].shape == (64, 10)
    assert jax.tree_util.tree_structure(imported.variables) == jax.tree_util.tree_structure(init)
    chex.assert_trees_all_equal_shapes_and_dtypes(imported.variables, init)
    other = from_torch_state_dict("vgg16", sd, head="drop", num_classes=10, head_seed=4, width=0.125)
    assert not np.array_equal(other.variables["params"]["head"]["kernel"], params["head"]["kernel"])
    chex.assert_trees_all_equal(other.variables["params"]["conv_12"], params["conv_12"])
    # The reference's own layout (a single `classifier`) drops the same way, into 100 classes.
    ref = from_torch_state_dict("vgg16", _small_vgg_sd(), head="drop", num_classes=100, width=0.125)
    chex.assert_trees_all_equal(ref.variables["params"]["head"], _init("vgg16", 100, 0, width=0.125)["params"]["head"])


def test_torchvision_vgg16_head_keep_refuses_and_drop_needs_num_classes():
    sd = torchvision_vgg16_state_dict()
    with pytest.raises(TorchImportError, match=r"does not fit vgg16\(num_classes=\?, width=0\.125\): "
                                               r"2 missing key\(s\): classifier\.bias, classifier\.weight; "
                                               r"6 unexpected key\(s\): classifier\.0\.bias, classifier\.0\.weight"):
        from_torch_state_dict("vgg16", sd, width=0.125)  # head='keep' (the default)
    with pytest.raises(TorchImportError, match=r"unexpected key\(s\): classifier\.0\.bias"):
        from_torch_state_dict("vgg16", sd, num_classes=10, head="keep", width=0.125)
    with pytest.raises(TorchImportError) as e:
        from_torch_state_dict("vgg16", sd, head="drop", width=0.125)
    assert str(e.value) == ("head='drop' needs num_classes: the state dict's classifier is ignored, so the number of "
                            "logits cannot be read off it")
    with pytest.raises(TorchImportError, match=r"head must be one of 'keep', 'drop', got 'fresh'"):
        from_torch_state_dict("vgg16", sd, head="fresh", num_classes=10, width=0.125)


def test_head_drop_still_checks_everything_else():
    kw = dict(head="drop", num_classes=10, width=0.125)
    sd = torchvision_vgg16_state_dict()
    del sd["features.28.bias"]
    with pytest.raises(TorchImportError, match=r"\(head='drop': the classifier keys are ignored\): "
                                               r"1 missing key\(s\): features\.28\.bias$"):
        from_torch_state_dict("vgg16", sd, **kw)
    sd = torchvision_vgg16_state_dict() | {"features.30.weight": np.zeros(3, np.float32)}
    with pytest.raises(TorchImportError, match=r"1 unexpected key\(s\): features\.30\.weight$"):
        from_torch_state_dict("vgg16", sd, **kw)
    with pytest.raises(TorchImportError, match=r"features\.0\.weight has shape \(64, 3, 3, 3\) but "
                                               r"vgg16\(num_classes=10, width=0\.125\) expects \(8, 3, 3, 3\)"):
        sd = torchvision_vgg16_state_dict() | {"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)}
        from_torch_state_dict("vgg16", sd, **kw)
    sd = torchvision_vgg16_state_dict()
    sd["features.7.bias"] = sd["features.7.bias"].astype(np.int32)
    with pytest.raises(TorchImportError, match=r"features\.7\.bias has dtype int32"):
        from_torch_state_dict("vgg16", sd, **kw)
    sd = torchvision_vgg16_state_dict()
    sd["features.10.weight"][0, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"features\.10\.weight"):
        from_torch_state_dict("vgg16", sd, **kw)
    sd = torchvision_vgg16_state_dict()
    sd["classifier.6.weight"][0, 0] = np.nan  # an ignored head is not read
    from_torch_state_dict("vgg16", sd, **kw)


@pytest.mark.parametrize("name,classifier", [("resnet18", "fc"), ("resnet20", "linear"), ("resnet20", "fc")])
def test_resnet_head_drop(name, classifier):
    if name == "resnet18":  # torchvision's ImageNet resnet18 at width 0.125: fc [1000, 64]
        sd, width = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8, num_classes=1000, seed=13), 0.125
    else:
        sd, width = cifar_resnet_state_dict(3, base=8, num_classes=100, seed=13), 0.5
        if classifier == "fc":
            sd["fc.weight"], sd["fc.bias"] = sd.pop("linear.weight"), sd.pop("linear.bias")
    imported = from_torch_state_dict(name, sd, head="drop", num_classes=10, head_seed=5, width=width)
    kept = from_torch_state_dict(name, sd, width=width)
    init = _init(name, 10, 5, **imported.model_kwargs)
    chex.assert_trees_all_equal(imported.variables["params"]["head"], init["params"]["head"])
    chex.assert_trees_all_equal(imported.variables["batch_stats"], kept.variables["batch_stats"])
    for unit in imported.model.unit_names:
        chex.assert_trees_all_equal(imported.variables["params"][unit], kept.variables["params"][unit])
    chex.assert_trees_all_equal_shapes_and_dtypes(imported.variables, init)


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_first_conv_gray_equals_rgb_model_on_replicated_gray(name):
    if name == "vgg16":
        sd, key = torchvision_vgg16_state_dict(seed=14), "features.0.weight"
    else:  # torchvision's 7x7 stem
        sd = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8, num_classes=1000, seed=14)
        key = "conv1.weight"
    rgb = from_torch_state_dict(name, sd, head="drop", num_classes=10, width=0.125)
    gray = from_torch_state_dict(name, sd, head="drop", num_classes=10, width=0.125, first_conv="gray")
    params = gray.variables["params"]
    kernel = params["conv_0"]["kernel"] if name == "vgg16" else params["stem"]["conv"]["kernel"]
    np.testing.assert_allclose(kernel, sd[key].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-7)
    assert kernel.shape[2] == 1
    chex.assert_trees_all_equal(gray.variables["params"]["head"], rgb.variables["params"]["head"])
    chex.assert_trees_all_equal_shapes_and_dtypes(gray.variables, _init(name, 10, 0, in_ch=1, **gray.model_kwargs))
    x = np.random.default_rng(15).uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
    ours = np.asarray(gray.model.apply(gray.variables, jnp.asarray(x), train=False))
    ref = np.asarray(rgb.model.apply(rgb.variables, jnp.asarray(np.repeat(x, 3, axis=-1)), train=False))
    rel = _rel_err(ours, ref)
    print(f"\n[gray] {name}: summed first conv vs RGB model on replicated gray, relative logit error {rel:.2e}")
    assert rel <= REL_TOL


def test_first_conv_gray_errors_and_normalization():
    sd = _small_vgg_sd(in_ch=1)
    with pytest.raises(TorchImportError, match=r"first_conv='gray' sums the 3 RGB input channels of "
                                               r"features\.0\.weight, but it has shape \(8, 1, 3, 3\)"):
        from_torch_state_dict("vgg16", sd, width=0.125, first_conv="gray")
    with pytest.raises(TorchImportError, match=r"first_conv must be one of 'keep', 'gray', got 'grey'"):
        from_torch_state_dict("vgg16", sd, width=0.125, first_conv="grey")
    sd = _small_vgg_sd()
    cifar = {"normalize.mean": np.array([0.4914, 0.4822, 0.4465]), "normalize.std": np.array([0.247, 0.2435, 0.2616])}
    with pytest.raises(TorchImportError, match=r"differ per channel; drop the normalize\.\* keys"):
        from_torch_state_dict("vgg16", sd | cifar, width=0.125, first_conv="gray")
    same = {"normalize.mean": np.full(3, 0.5), "normalize.std": np.full(3, 0.25)}
    imported = from_torch_state_dict("vgg16", sd | same, width=0.125, first_conv="gray")
    np.testing.assert_array_equal(imported.normalization.mean, [0.5])
    np.testing.assert_array_equal(imported.normalization.std, [0.25])
    assert imported.model.num_classes == 10  # head='keep' still reads it off the classifier


# ------------------------------------------------------------- load_torch_checkpoint


def test_load_torch_checkpoint_npz_round_trip(tmp_path):
    sd = torchvision_vgg16_state_dict(seed=16)
    path = tmp_path / "vgg16.npz"
    np.savez(path, **{"module." + k: v for k, v in sd.items()},
             **{"module.features.0.num_batches_tracked": np.array(3)})
    loaded = load_torch_checkpoint(path)
    assert sorted(loaded) == sorted(sd)
    for k, v in sd.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)
    a = from_torch_state_dict("vgg16", loaded, head="drop", num_classes=10, width=0.125)
    b = from_torch_state_dict("vgg16", sd, head="drop", num_classes=10, width=0.125)
    chex.assert_trees_all_equal(a.variables, b.variables)
    assert load_torch_checkpoint(str(path)).keys() == loaded.keys()  # str paths too


def test_load_torch_checkpoint_errors(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "vgg16-397923af.pth"
    with pytest.raises(TorchImportError) as e:
        load_torch_checkpoint(missing)
    assert str(e.value) == f"{missing}: no such checkpoint file"
    with pytest.raises(TorchImportError, match="is a directory"):
        load_torch_checkpoint(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(TorchImportError, match=r"unknown checkpoint suffix '\.safetensors'; "
                                               r"expected \.pth, \.pt, \.tar"):
        load_torch_checkpoint(tmp_path / "w.safetensors")
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(TorchImportError) as e:
        load_torch_checkpoint(tmp_path / "bad.npz")
    assert str(e.value).startswith(f"cannot read {tmp_path / 'bad.npz'} with numpy.load") and "\n" not in str(e.value)
    path = tmp_path / "model_best.pth.tar"
    path.write_bytes(b"\x80\x02")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(TorchImportError) as e:
        load_torch_checkpoint(path)
    assert str(e.value) == (f"reading {path} needs PyTorch: pip install -e '.[torch]', or convert it to .npz with "
                            "numpy.savez(path, **state_dict)")


def test_load_torch_checkpoint_pth(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _small_vgg_sd(seed=17)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"module." + k: torch.from_numpy(v) for k, v in sd.items()}, "epoch": 2}, path)
    loaded = load_torch_checkpoint(path)
    assert sorted(loaded) == sorted(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(loaded[k], v)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(TorchImportError, match=r"cannot load .*bad\.pt with torch\.load\(weights_only=True\)"):
        load_torch_checkpoint(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------- CLI


def test_cli_import_torch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from rws_jax import load_variables
    from rws_jax.cli import main

    sd = torchvision_resnet_state_dict("basic", (2, 2, 2, 2), base=8, num_classes=7, stem_kernel=3, seed=11)
    ckpt = {"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
            | {"normalize.mean": torch.tensor([0.5, 0.4, 0.3]), "normalize.std": torch.tensor([0.2, 0.2, 0.25])},
            "epoch": 5}
    path = tmp_path / "model_best.pth.tar"
    torch.save(ckpt, path)
    out = tmp_path / "imported"
    assert main(["import-torch", str(path), "--model", "resnet18", "--width", "0.125", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "resnet18(num_classes=7, small_input=True, width=0.125)" in printed
    assert "mean=[0.5000, 0.4000, 0.3000]" in printed
    imported = from_torch_state_dict("resnet18", sd, width=0.125)
    loaded = load_variables(out, like=imported.variables)
    chex.assert_trees_all_equal(loaded, imported.variables)
    # An existing --out is refused (unchanged), replaced with --overwrite.
    assert main(["import-torch", str(path), "--model", "resnet18", "--width", "0.125", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["import-torch", str(path), "--model", "resnet18", "--width", "0.125", "--out", str(out),
                 "--overwrite"]) == 0
    # A failed conversion writes nothing.
    bad = tmp_path / "bad"
    assert main(["import-torch", str(path), "--model", "resnet18", "--out", str(bad)]) == 2  # full width
    assert "conv1.weight has shape (8, 3, 3, 3)" in capsys.readouterr().err
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))


def _one_refusal(capsys, *argv) -> str:
    """Runs ``rws-jax import-torch ARGV``: a refusal, one stderr line and exit code 2."""
    from rws_jax.cli import main

    assert main(["import-torch", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rws-jax: error: "), err
    return err[0]


def test_cli_import_torch_unknown_model(tmp_path, capsys):
    err = _one_refusal(capsys, tmp_path / "x.pth", "--model", "vgg17", "--out", tmp_path / "o")
    assert "unknown model 'vgg17'; valid names:" in err
    assert not (tmp_path / "o").exists()


def test_cli_import_torch_existing_output_exit_2(tmp_path, capsys):
    """Every refusal exits 2, torch installed or not: an existing --out is refused before torch is needed."""
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("x")
    err = _one_refusal(capsys, tmp_path / "x.pth", "--model", "vgg16", "--out", tmp_path / "o")
    assert "exists; pass --overwrite" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["keep"]


def test_cli_import_torch_without_torch(tmp_path, capsys, monkeypatch):
    from rws_jax.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    rc = main(["import-torch", str(tmp_path / "x.pth"), "--model", "vgg16", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[torch]'" in err
    assert not (tmp_path / "o").exists()
