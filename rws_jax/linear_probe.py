"""How good is a θ_init? A linear probe of its frozen penultimate features.

The features are the input of the model's classifier (the submodule named ``'head'``),
taken with :func:`flax.linen.intercept_methods` from one jitted forward pass per batch, in
evaluation mode. A multinomial logistic regression (scikit-learn, L-BFGS) is fitted on the
features of a training split and scored on a test split; the same probe on a randomly
initialised network of the same architecture is the floor a pre-training must beat.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rws_jax.errors import RWSError
from rws_jax.types import Variables

HEAD = "head"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A linear probe's scores.

    Attributes:
      train_accuracy: accuracy of the fitted probe on its training features.
      test_accuracy: accuracy on the test features.
      feature_dim: D, the width of the penultimate features.
      train_examples / test_examples: N_train, N_test.
    """

    train_accuracy: float
    test_accuracy: float
    feature_dim: int
    train_examples: int
    test_examples: int


def penultimate_features(model: nn.Module, variables: Variables, images: np.ndarray, *,
                         preprocess: Callable[[jax.Array], jax.Array] | None = None,
                         batch_size: int = 500) -> np.ndarray:
    """``f32[N, D]``: the input of ``model``'s ``'head'`` for each image of ``images``
    (``[N, H, W, C]``, uint8 or float; ``preprocess`` maps a batch to the model's input)."""

    def features(v: Variables, x: jax.Array) -> jax.Array:
        captured: list[jax.Array] = []

        def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
            if context.module.name == HEAD and context.method_name == "__call__":
                captured.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            model.apply(v, x if preprocess is None else preprocess(x), train=False)
        if not captured:
            raise RWSError(f"{type(model).__name__} has no submodule named {HEAD!r}: no penultimate features")
        return jnp.reshape(captured[0], (x.shape[0], -1)).astype(jnp.float32)

    step = jax.jit(features)
    out = [np.asarray(step(variables, jnp.asarray(images[i:i + batch_size])))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fit_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
              test_labels: np.ndarray, *, max_iter: int = 1000) -> ProbeResult:
    """Multinomial logistic regression on standardised features (mean and std of the training
    features), fitted on ``train_*`` (``f32[N, D]``, ``int[N]``) and scored on ``test_*``."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - scikit-learn costs ~1.7 s to import

    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise RWSError("features and labels differ in length")
    if not (np.all(np.isfinite(train_features)) and np.all(np.isfinite(test_features))):
        raise RWSError("the features hold NaN or inf: the network diverged?")
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    clf = LogisticRegression(max_iter=max_iter)
    clf.fit((train_features - mean) / std, train_labels)
    return ProbeResult(train_accuracy=float(clf.score((train_features - mean) / std, train_labels)),
                       test_accuracy=float(clf.score((test_features - mean) / std, test_labels)),
                       feature_dim=int(train_features.shape[1]), train_examples=len(train_labels),
                       test_examples=len(test_labels))


def linear_probe(model: nn.Module, variables: Variables, train: tuple[np.ndarray, np.ndarray | Sequence[int]],
                 test: tuple[np.ndarray, np.ndarray | Sequence[int]], *,
                 preprocess: Callable[[jax.Array], jax.Array] | None = None) -> ProbeResult:
    """The linear probe of ``variables``: penultimate features of ``train = (images, labels)``
    and ``test = (images, labels)``, a logistic regression fitted on the first, scored on the second."""
    tr = penultimate_features(model, variables, train[0], preprocess=preprocess)
    te = penultimate_features(model, variables, test[0], preprocess=preprocess)
    return fit_probe(tr, np.asarray(train[1]), te, np.asarray(test[1]))
