"""Shared fixtures: small but real Flax variable trees (Linen CNN with BatchNorm)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import rws_jax as rws


class TinyCNN(nn.Module):
    """conv_0 -> bn_0 -> conv_1 -> conv_2 -> head; units in forward order."""

    num_classes: int = 10
    width: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), name="conv_0")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn_0")(x)
        for i in (1, 2):
            x = nn.relu(nn.Conv(self.width, (3, 3), name=f"conv_{i}")(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def perturb(variables, key, scale=0.05):
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


@pytest.fixture(scope="session")
def tiny_models():
    """(model, init, standard, robust_fog, robust_snow) variable dicts."""
    model = TinyCNN()
    init = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    std = perturb(init, jax.random.key(1))
    fog = perturb(init, jax.random.key(2))
    snow = perturb(init, jax.random.key(3))
    return model, init, std, fog, snow


@pytest.fixture(scope="session")
def sigs(tiny_models):
    """(fog, snow): signatures of the first 2 and first 3 units of the tiny models
    (a test module may define its own ``sigs``, which then takes precedence)."""
    _, init, std, fog, snow = tiny_models
    return (
        rws.extract(init, std, fog, rws.first_k(2), name="fog"),
        rws.extract(init, std, snow, rws.first_k(3), name="snow"),
    )
