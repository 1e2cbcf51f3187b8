"""Training as pure functions: optax SGD, jitted steps with on-device corruption and
augmentation, best-on-validation selection, orbax checkpoints with exact resume, and data
parallelism over a ``jax.sharding.Mesh``. See docs/guides/training.md."""

from .augment import (augment_batch, build_corrupt_fn, mixture_corrupt_fn, normalize_images,
                      prepare_inputs, random_crop, random_flip)
from .config import COMPUTE_DTYPES, TrainConfig, compute_dtype_of, make_optimizer, make_schedule, steps_per_epoch
from .loop import epoch_permutation, fit, load_best_variables, run_keys
from .parallel import (make_data_mesh, prefetch_to_device, replicate, resolve_mesh, shard_batch)
from .shrink import weight_decay_shrink
from .state import TrainState, create_train_state, init_variables, with_compute_dtype
from .steps import cross_entropy, evaluate, make_eval_step, make_train_step

__all__ = [
    "COMPUTE_DTYPES", "TrainConfig", "TrainState", "compute_dtype_of", "prefetch_to_device",
    "with_compute_dtype", "augment_batch", "build_corrupt_fn", "create_train_state",
    "cross_entropy", "epoch_permutation", "evaluate", "fit", "init_variables",
    "load_best_variables", "make_data_mesh", "make_eval_step", "make_optimizer",
    "make_schedule", "make_train_step", "mixture_corrupt_fn", "normalize_images",
    "prepare_inputs", "random_crop", "random_flip", "replicate", "resolve_mesh", "run_keys",
    "shard_batch", "steps_per_epoch", "weight_decay_shrink",
]
