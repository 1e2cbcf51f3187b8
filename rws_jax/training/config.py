"""Training configuration and the optax optimizer / learning-rate schedule built from it."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple, Union

import jax.numpy as jnp
import optax

Corruption = Union[None, str, Tuple[str, ...]]

# Valid TrainConfig.compute_dtype values.
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (hashable, so it can be a static jit argument).

    Epoch-based quantities (``milestones``, ``warmup_epochs``) are converted to optimizer
    steps with ``steps_per_epoch = len(train) // batch_size`` (the last partial training
    batch is dropped).
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    # 'l2': wd * params added to the gradients before SGD+momentum (reference / PyTorch SGD).
    # 'decoupled': SGDW-style, params decay by lr * wd outside the momentum buffer.
    weight_decay_mode: str = "l2"
    schedule: str = "step"  # 'step' | 'cosine' | 'constant'
    milestones: Tuple[float, ...] = (20, 40)  # epochs (may be fractional) at which lr *= lr_decay ('step')
    lr_decay: float = 0.1
    warmup_epochs: float = 0.0  # linear warmup from 0 to lr, in epochs (may be fractional)
    seed: int = 0
    # Augmentation (on device, inside the jitted step): random crop with zero padding + flip.
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    # Input normalisation after x / 255: (x - mean) / std per channel, or None for [0, 1].
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    # Training-time corruption: None (clean), a name, or a tuple of names (per-image mixture).
    corruption: Corruption = None
    severity: int = 5
    corruption_preset: str = "cifar10"
    # Validate on the same corruption as training (fixed keys), so that the best-validation
    # checkpoint of a robust model is chosen for robustness to its corruption.
    val_corrupted: bool = True
    eval_every: int = 1  # validate every N epochs (and always after the last one)
    eval_batch_size: int = 500
    keep_checkpoints: int = 1  # latest states kept for resume
    # Mixed precision: the dtype of activations and matmuls/convs ('float32' or 'bfloat16').
    # Parameters, optimizer state, BatchNorm statistics, loss/softmax and therefore the
    # signatures stay float32. 'bfloat16' needs a model with a ``dtype`` attribute (all of
    # rws_jax.models); it is the TPU default of the notebooks. Not part of the resume check:
    # the stored state is float32 either way.
    compute_dtype: str = "float32"
    # Host-to-device prefetch depth of ``fit``: batch k+1 is put on the device(s) while step
    # k runs (2 = double buffering; 0 or 1 = no prefetch). Never changes results.
    prefetch: int = 2

    def __post_init__(self):
        # Normalise list-valued fields to tuples so the config stays hashable.
        for name in ("milestones", "mean", "std"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        c = self.corruption
        if c is not None and not isinstance(c, str):
            c = tuple(c)
            object.__setattr__(self, "corruption", c[0] if len(c) == 1 else c)
        if self.schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.weight_decay_mode not in ("l2", "decoupled"):
            raise ValueError(f"unknown weight_decay_mode {self.weight_decay_mode!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            hint = (" (float16 would need loss scaling; use 'bfloat16')"
                    if str(self.compute_dtype) == "float16" else "")
            raise ValueError(f"unknown compute_dtype {self.compute_dtype!r}; valid: "
                             f"{', '.join(COMPUTE_DTYPES)}{hint}")
        if int(self.prefetch) < 0:
            raise ValueError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.batch_size <= 0 or self.epochs <= 0:
            raise ValueError("batch_size and epochs must be positive")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def reference_cifar(cls, **overrides) -> "TrainConfig":
        """The reference recipe (Cai et al. 2023, CIFAR, VGG-16).

        SGD lr 0.01, momentum 0.9, weight decay 5e-4 (L2), batch 128, 50 epochs,
        lr x0.1 at epochs 20 and 40, random crop 32 pad 4 + horizontal flip. Train on a
        45k/5k train/validation split (see ``rws_jax.data``), severity 5 corruptions.
        """
        base = cls(
            epochs=50, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4,
            weight_decay_mode="l2", schedule="step", milestones=(20, 40), lr_decay=0.1,
            augment=True, crop_padding=4, flip=True, severity=5, corruption_preset="cifar10",
        )
        return base.replace(**overrides)


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning-rate schedule (a function of the optimizer step count)."""
    spe = max(int(steps_per_epoch), 1)
    total = config.epochs * spe
    warmup = int(round(config.warmup_epochs * spe))
    if config.schedule == "constant":
        main = optax.constant_schedule(config.lr)
    elif config.schedule == "step":
        bounds: dict[int, float] = {}
        for m in config.milestones:  # epochs, possibly fractional (2.4 = 40% into the third)
            b = int(round(float(m) * spe)) - warmup
            if b > 0:
                bounds[b] = bounds.get(b, 1.0) * config.lr_decay
        main = optax.piecewise_constant_schedule(config.lr, bounds)
    else:  # cosine
        main = optax.cosine_decay_schedule(config.lr, max(total - warmup, 1))
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, config.lr, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """SGD (+momentum) with L2 or decoupled weight decay and the configured schedule."""
    schedule = make_schedule(config, steps_per_epoch)
    momentum = config.momentum if config.momentum else None
    if config.weight_decay_mode == "l2":
        parts = []
        if config.weight_decay:
            parts.append(optax.add_decayed_weights(config.weight_decay))
        parts.append(optax.sgd(schedule, momentum=momentum, nesterov=config.nesterov))
        return optax.chain(*parts)
    # Decoupled (SGDW): momentum on the raw gradient, decay added after, both scaled by lr.
    parts = []
    if momentum is not None:
        parts.append(optax.trace(decay=momentum, nesterov=config.nesterov))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Number of full training batches per epoch (the partial last batch is dropped)."""
    n = int(num_train) // int(batch_size)
    if n == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({num_train})")
    return n


def compute_dtype_of(config: TrainConfig):
    """The jnp dtype of ``config.compute_dtype`` (``jnp.float32`` or ``jnp.bfloat16``)."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]

