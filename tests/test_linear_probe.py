"""The linear probe of a θ_init: penultimate features and a logistic regression on them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax.models import get_model


def _vgg():
    model = get_model("vgg11", 3, width=0.125)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)


def test_features_are_the_head_input():
    model, v = _vgg()
    x = np.random.default_rng(0).integers(0, 255, (7, 32, 32, 1), dtype=np.uint8)
    f = rws.penultimate_features(model, v, x, preprocess=lambda b: b.astype(jnp.float32) / 255.0, batch_size=3)
    assert f.shape == (7, v["params"]["head"]["kernel"].shape[0]) and f.dtype == np.float32
    # the head applied to the features gives the model's logits
    logits = model.apply(v, jnp.asarray(x, jnp.float32) / 255.0, train=False)
    head = v["params"]["head"]
    np.testing.assert_allclose(f @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), logits, rtol=1e-4, atol=1e-4)


def test_probe_separates_separable_features_and_not_random_labels():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 4
    y = rng.integers(0, 4, 800)
    x = centers[y] + rng.normal(size=(800, 16))
    good = rws.fit_probe(x[:600], y[:600], x[600:], y[600:])
    assert good.test_accuracy > 0.95 and good.feature_dim == 16 and good.train_examples == 600
    shuffled = rws.fit_probe(x[:600], rng.permutation(y[:600]), x[600:], y[600:])
    assert shuffled.test_accuracy < 0.45  # chance is 0.25


def test_bad_input_is_refused():
    class NoHead(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3, name="classifier")(x.reshape(x.shape[0], -1))

    m = NoHead()
    v = m.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(rws.RWSError, match="no submodule named 'head'"):
        rws.penultimate_features(m, v, np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(rws.RWSError, match="NaN"):
        rws.fit_probe(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.array([0, 1]))
    with pytest.raises(rws.RWSError, match="length"):
        rws.fit_probe(np.zeros((4, 2)), np.array([0, 1]), np.zeros((2, 2)), np.array([0, 1]))
