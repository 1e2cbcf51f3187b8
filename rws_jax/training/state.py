"""Train state pytree and its construction (fresh init or fine-tuning from given variables)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; ``apply_fn`` and ``tx`` are static fields."""

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    if TYPE_CHECKING:  # added by ``flax.struct.dataclass``; declared for type checkers
        def replace(self, **updates: Any) -> TrainState: ...

    @property
    def variables(self) -> dict:
        """Flax variables ``{'params': ..., 'batch_stats': ...}`` (no BN -> no 'batch_stats')."""
        return variables_of(self.params, self.batch_stats)

    def apply_gradients(self, grads: PyTree, batch_stats: Optional[PyTree] = None) -> "TrainState":
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(
            step=self.step + 1,
            params=params,
            batch_stats=self.batch_stats if batch_stats is None else batch_stats,
            opt_state=opt_state,
        )

    def checkpoint_items(self) -> dict:
        """The array part of the state, as a plain pytree (what gets checkpointed)."""
        return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
                "opt_state": self.opt_state}


def variables_of(params: PyTree, batch_stats: PyTree) -> dict:
    out = {"params": params}
    if batch_stats is not None and jax.tree_util.tree_leaves(batch_stats):
        out["batch_stats"] = batch_stats
    return out


def _copy_tree(tree: PyTree) -> PyTree:
    # A real copy: the train step donates the state, which must never invalidate the
    # caller's arrays (e.g. theta_init reused for several fine-tunings).
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def init_variables(model, key: jax.Array, input_shape: Sequence[int]) -> dict:
    """``model.init`` on a zero batch of ``input_shape`` (NHWC, leading batch dim) in eval mode."""
    x = jnp.zeros(tuple(input_shape), jnp.float32)
    variables = model.init(key, x, train=False)
    return flax.core.unfreeze(variables) if isinstance(variables, flax.core.FrozenDict) else dict(variables)


def with_compute_dtype(model, compute_dtype: str = "float32"):
    """``model`` computing in ``compute_dtype`` ('float32' | 'bfloat16'), parameters float32.

    A Flax module with a ``dtype`` field (all of ``rws_jax.models``) is cloned with that
    ``dtype`` (its ``param_dtype`` stays float32, so ``init`` still makes float32 weights);
    an unchanged dtype returns ``model`` itself (bit-identical float32 behaviour). A model
    without a ``dtype`` field is returned as is for 'float32' and refused otherwise.
    """
    target = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(str(compute_dtype))
    if target is None:
        raise ValueError(f"unknown compute_dtype {compute_dtype!r}; valid: float32, bfloat16")
    current = getattr(model, "dtype", None)
    if current is None:
        if target == jnp.float32:
            return model
        raise ValueError(
            f"compute_dtype={compute_dtype!r} needs a model with a 'dtype' attribute (Flax "
            f"modules' computation dtype); {type(model).__name__} has none")
    if jnp.dtype(current) == jnp.dtype(target):
        return model
    return model.clone(dtype=target)


def _is_key(x) -> bool:
    if isinstance(x, Mapping):
        return False
    if isinstance(x, int):
        return True
    try:
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return True
        return x.dtype == jnp.uint32 and x.shape in ((2,), (4,))
    except AttributeError:
        return False


def create_train_state(model, key_or_variables, tx: optax.GradientTransformation,
                       input_shape: Optional[Sequence[int]] = None) -> TrainState:
    """Build a :class:`TrainState`.

    ``key_or_variables`` is either a PRNG key / int seed (the model is initialised on a zero
    batch of ``input_shape``, e.g. ``(1, 32, 32, 3)``) or a Flax variables dict
    ``{'params': ..., 'batch_stats': ...}``: then the state starts at exactly those
    weights (copied, so donation never touches the caller's arrays) with a fresh
    optimizer state and step 0 -- fine-tuning from theta_init.
    """
    if _is_key(key_or_variables):
        if input_shape is None:
            raise ValueError("input_shape is required to initialise a model from a key")
        key = key_or_variables
        if isinstance(key, int):
            key = jax.random.PRNGKey(key)
        variables = init_variables(model, key, input_shape)
    else:
        variables = key_or_variables
        if isinstance(variables, flax.core.FrozenDict):
            variables = flax.core.unfreeze(variables)
        if "params" not in variables:
            raise ValueError("variables must contain a 'params' collection")
        variables = _copy_tree(dict(variables))
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )
