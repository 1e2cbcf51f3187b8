"""The recipe's shrink factor Π_t (1 − lr_t·wd/(1 − μ)), against hand computations and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rws_jax.errors import RWSError
from rws_jax.training import TrainConfig, make_optimizer, weight_decay_shrink

# The reference's fine-tuning recipe: SGD lr 0.01, momentum 0.9, wd 5e-4 (coupled), ×0.1 at
# epochs 20 and 40 of 50 (40% and 80%), 391 steps an epoch (50,000 images, batch 128).
REFERENCE = TrainConfig.reference_cifar()
# The study's 4-epoch cut (rws_jax.pipeline.presets: ×0.1 at 40% and 80%), on its 27,500
# fine-tuning images: 214 steps an epoch.
FOUR_EPOCHS = REFERENCE.replace(epochs=4, milestones=(1.6, 3.2))


def test_constant_lr():
    # The schedule gives float32 learning rates: 0.1 is 0.1 to 1e-8.
    c = TrainConfig(epochs=3, lr=0.1, momentum=0.9, weight_decay=1e-3, schedule="constant")
    assert weight_decay_shrink(c, steps_per_epoch=10) == pytest.approx((1 - 0.1 * 1e-3 / 0.1) ** 30, rel=1e-8)
    # No momentum: no amplification; decoupled decay: none either.
    assert weight_decay_shrink(c.replace(momentum=0.0), num_steps=30) == pytest.approx((1 - 1e-4) ** 30, rel=1e-8)
    assert weight_decay_shrink(c.replace(weight_decay_mode="decoupled"), steps_per_epoch=10) == pytest.approx(
        (1 - 1e-4) ** 30, rel=1e-8)
    assert weight_decay_shrink(c.replace(weight_decay=0.0), steps_per_epoch=10) == 1.0


def test_warmup_ramps_the_decay():
    c = TrainConfig(epochs=2, lr=0.1, momentum=0.5, weight_decay=1e-2, schedule="constant", warmup_epochs=1)
    k = 1e-2 / 0.5
    want = np.prod([1 - 0.1 * t / 5 * k for t in range(5)]) * (1 - 0.1 * k) ** 5
    assert weight_decay_shrink(c, steps_per_epoch=5) == pytest.approx(want, rel=1e-6)


def test_reference_recipe_by_hand():
    # 7,820 steps at 0.01, 7,820 at 0.001, 3,910 at 0.0001; wd/(1 − μ) = 5e-3.
    want = (1 - 0.01 * 5e-3) ** 7820 * (1 - 0.001 * 5e-3) ** 7820 * (1 - 0.0001 * 5e-3) ** 3910
    got = weight_decay_shrink(REFERENCE, num_steps=19_550)
    assert got == pytest.approx(want, rel=1e-6)
    assert got == pytest.approx(np.exp(-0.43), abs=0.005) and got == pytest.approx(0.649, abs=5e-4)
    assert weight_decay_shrink(REFERENCE, steps_per_epoch=391) == got
    # fit drops the partial batch: 50,000 images give 390 steps an epoch, not the reference's 391.
    assert weight_decay_shrink(REFERENCE, num_examples=50_000) == weight_decay_shrink(REFERENCE, steps_per_epoch=390)


def test_four_epoch_recipe_by_hand():
    # 856 steps; milestones at round(1.6 · 214) = 342 and round(3.2 · 214) = 685.
    want = (1 - 0.01 * 5e-3) ** 342 * (1 - 0.001 * 5e-3) ** 343 * (1 - 0.0001 * 5e-3) ** 171
    got = weight_decay_shrink(FOUR_EPOCHS, num_examples=27_500)
    assert got == pytest.approx(want, rel=1e-6) and got == pytest.approx(0.98, abs=0.002)
    assert weight_decay_shrink(FOUR_EPOCHS, steps_per_epoch=214) == got


def _optax_shrink(config, steps_per_epoch):
    """A weight of 1 after the whole run of make_optimizer's SGD with no loss gradient."""
    tx = make_optimizer(config, steps_per_epoch)

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jnp.zeros_like(p), s, p)
        return (optax.apply_updates(p, u), s), None

    p = jnp.ones((), jnp.float32)
    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=config.epochs * steps_per_epoch)[0][0])
    return float(run(p))


@pytest.mark.parametrize("config,spe", [(REFERENCE, 391), (FOUR_EPOCHS, 214),
                                        (REFERENCE.replace(weight_decay_mode="decoupled"), 391)],
                         ids=["reference", "four_epochs", "decoupled"])
def test_factor_is_what_optax_does(config, spe):
    # The formula misses the momentum buffer filling up (~lr·wd·μ/(1 − μ)² = 4.5e-4) and float32 rounding.
    assert weight_decay_shrink(config, steps_per_epoch=spe) == pytest.approx(_optax_shrink(config, spe), rel=1e-3)


def test_bad_sizes_are_refused():
    with pytest.raises(RWSError, match="exactly one"):
        weight_decay_shrink(REFERENCE)
    with pytest.raises(RWSError, match="exactly one"):
        weight_decay_shrink(REFERENCE, steps_per_epoch=391, num_steps=19_550)
    with pytest.raises(RWSError, match="multiple of the 50 epochs"):
        weight_decay_shrink(REFERENCE, num_steps=19_551)
    with pytest.raises(RWSError, match="positive"):
        weight_decay_shrink(REFERENCE, steps_per_epoch=0)
    with pytest.raises(RWSError, match="larger than the training set"):
        weight_decay_shrink(REFERENCE, num_examples=100)
    with pytest.raises(RWSError, match="momentum"):
        weight_decay_shrink(REFERENCE.replace(momentum=1.0), steps_per_epoch=391)
