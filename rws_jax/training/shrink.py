"""The factor by which weight decay alone shrinks every weight over a training run.

``make_optimizer`` applies weight decay to every parameter (no mask: kernels, biases, BN
scales and offsets). With ``weight_decay_mode='l2'`` (the reference's recipe, PyTorch's
``SGD(weight_decay=...)``) the decay is *coupled*: ``optax.add_decayed_weights(wd)`` adds
``wd·θ`` to the gradient before ``optax.sgd`` (momentum trace, then ``−lr_t``)::

    m_t     = μ·m_{t−1} + g_t + wd·θ_t
    θ_{t+1} = θ_t − lr_t·m_t

With the loss gradient left out (``g = 0``), this is a linear recurrence in θ alone:
``θ_{t+1} − θ_t = μ·(θ_t − θ_{t−1})·(lr_t/lr_{t−1}) − lr_t·wd·θ_t``. Its slow mode decays
by ``z = 1 − ε`` per step with ``ε(1 − μ) = lr·wd + O(ε²)`` (put ``θ_t ∝ z^t`` into the
recurrence at a constant lr: ``z² − (1 + μ − lr·wd)·z + μ = 0``), i.e. the momentum
buffer multiplies the decay by ``1/(1 − μ)`` once it has filled (about ``1/(1 − μ)``
steps: 10 for μ = 0.9). Nesterov momentum has the same steady state. Hence::

    shrink = Π_t (1 − lr_t·wd/(1 − μ))      over the T optimizer steps, lr_t from make_schedule

(``'decoupled'``: the decay ``lr_t·wd·θ_t`` is added after the momentum trace, so it is not
amplified: ``Π_t (1 − lr_t·wd)``). The buffer holds ``wd·θ``, not ``lr·wd·θ``, so a drop of
the learning rate takes effect at once; what the formula leaves out is the first
~1/(1 − μ) steps, while the buffer fills (it overstates the decay by about
``lr_0·wd·μ/(1 − μ)²``), and O((lr·wd)²) per step: 4.5e-4 relative for the reference recipe
(tests/test_shrink.py runs optax itself on a weight with no loss gradient).

A fine-tuned model is then ``shrink·θ_init + (what the gradients did)``: the part of
``θ_std − θ_init`` (and of a signature) that is ``(shrink − 1)·θ_init`` is weight decay, not
learning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax.errors import RWSError

from .config import TrainConfig, make_schedule
from .config import steps_per_epoch as full_batches


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> np.ndarray:
    """``f64[epochs · steps_per_epoch]``: the learning rate of each optimizer step, as
    :func:`~rws_jax.training.make_schedule` gives it (step t uses ``schedule(t)``)."""
    schedule = make_schedule(config, steps_per_epoch)
    total = int(config.epochs) * int(steps_per_epoch)
    return np.asarray(jax.vmap(schedule)(jnp.arange(total)), np.float64)


def weight_decay_shrink(
    config: TrainConfig,
    *,
    steps_per_epoch: int | None = None,
    num_steps: int | None = None,
    num_examples: int | None = None,
) -> float:
    """Π_t (1 − lr_t·wd/(1 − momentum)): how much weight decay alone shrinks every weight.

    The derivation is in the module docstring: coupled (``'l2'``) weight decay through SGD
    with momentum μ decays each weight by ``lr_t·wd/(1 − μ)`` per step once the momentum
    buffer has filled; ``'decoupled'`` by ``lr_t·wd``. ``lr_t`` is the configured schedule
    (warmup, step milestones at epochs, cosine), over ``config.epochs`` epochs.

    Args:
      config: the run's :class:`~rws_jax.training.TrainConfig` (lr, schedule, milestones,
        warmup, momentum, weight_decay, weight_decay_mode, epochs, batch_size).
      steps_per_epoch: optimizer steps per epoch; or
      num_steps: the run's total number of steps (a multiple of ``config.epochs``); or
      num_examples: training examples, giving ``num_examples // config.batch_size`` steps
        per epoch as ``fit`` does (the partial batch dropped). Give exactly one.

    Returns:
      The factor (1.0 without weight decay), e.g. ≈ 0.649 = exp(−0.43) for the reference
      recipe (SGD lr 0.01, ×0.1 at epochs 20 and 40 of 50, 391 steps an epoch, μ = 0.9,
      wd 5e-4) and ≈ 0.98 for the same recipe cut to 4 epochs of 214 steps.

    Raises:
      RWSError: not exactly one of the three sizes, a size that is not positive, a
        ``num_steps`` that is not a multiple of ``config.epochs``, or momentum ≥ 1.
    """
    given = [n for n, v in (("steps_per_epoch", steps_per_epoch), ("num_steps", num_steps),
                            ("num_examples", num_examples)) if v is not None]
    if len(given) != 1:
        raise RWSError(f"give exactly one of steps_per_epoch, num_steps, num_examples; got {given or 'none'}")
    epochs = int(config.epochs)
    if num_steps is not None:
        if int(num_steps) <= 0 or int(num_steps) % epochs:
            raise RWSError(f"num_steps must be a positive multiple of the {epochs} epochs, got {num_steps}")
        spe = int(num_steps) // epochs
    elif num_examples is not None:
        try:
            spe = full_batches(int(num_examples), config.batch_size)
        except ValueError as e:
            raise RWSError(str(e)) from e
    else:
        spe = int(steps_per_epoch or 0)
        if spe <= 0:
            raise RWSError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    mu = float(config.momentum or 0.0)
    if not 0.0 <= mu < 1.0:
        raise RWSError(f"momentum must be in [0, 1) for the decay to have a steady state, got {mu}")
    wd = float(config.weight_decay or 0.0)
    amplification = 1.0 / (1.0 - mu) if config.weight_decay_mode == "l2" else 1.0
    return float(np.prod(1.0 - learning_rates(config, spe) * wd * amplification))
