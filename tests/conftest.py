"""Shared fixtures: small but real Flax variable trees (Linen CNN with BatchNorm).

Session set-up, done when this file is imported (before jax starts, so every process of the
session sees it: xdist workers, notebook kernels and subprocess tests inherit the variables):

- **One XLA compilation cache per test session.** The first process of a session (the
  xdist controller, or plain pytest) makes an empty temporary directory and exports it as
  ``JAX_COMPILATION_CACHE_DIR``. A program compiled once (the tiny VGG's train step, say) is
  then loaded, not recompiled, by every later test and process of the session. The directory
  starts empty every session, so a fresh clone pays exactly what CI pays.
- **Source locations out of compiled programs** (``JAX_TRACEBACK_IN_LOCATIONS_LIMIT=0``):
  they are part of a program and of its cache key, so without them a step compiled for one
  call site is found again from another one.
- **LLVM at level 1** (``--xla_backend_optimization_level=1``): the suite is bound by
  compiling many small programs, not by running them; level 1 compiles about a fifth faster
  and gives the same results in every test. ``RWS_TEST_XLA_OPT=default`` keeps XLA's own level.
- **Heavy modules first**, for pytest-xdist (see ``HEAVY_FIRST``).
- **Counting assertions.** With ``-o enable_assertion_pass_hook=true`` every passing plain
  ``assert`` is counted and, when ``RWS_ASSERT_COUNT_FILE`` is set, each process appends its
  count to that file at the end (``make test-count``): the measure that a faster suite did
  not check less.
"""

import os
import shutil
import tempfile


def _session_environment() -> list:
    """Exports the session's JAX settings; returns the cache directory this process made."""
    made = []
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        made.append(tempfile.mkdtemp(prefix="rws_jax_xla_cache_"))
        os.environ["JAX_COMPILATION_CACHE_DIR"] = made[0]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("JAX_TRACEBACK_IN_LOCATIONS_LIMIT", "0")
    level = os.environ.get("RWS_TEST_XLA_OPT", "1")
    flags = os.environ.get("XLA_FLAGS", "")
    if level != "default" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level={level}".strip()
    return made


_OWN_CACHE_DIR = _session_environment()

import flax.linen as nn  # noqa: E402  (after the environment: jax reads it)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

import rws_jax as rws  # noqa: E402

_ASSERTS_PASSED = [0]


# Modules that build a pipeline run, train or start 8-device subprocesses, longest first.
# pytest-xdist (--dist loadfile) hands out modules in collection order: starting these first
# keeps one of them from being the last thing left running on one core.
HEAVY_FIRST = ("test_study.py", "test_pipeline_batch_norm.py", "test_pipeline.py", "test_notebooks.py",
               "test_sharding.py", "test_training.py", "test_colab.py", "test_training_multidevice.py",
               "test_autopatch.py", "test_benchmarks.py", "test_fast_conv.py", "test_models.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


def pytest_assertion_pass(item, lineno, orig, expl):
    _ASSERTS_PASSED[0] += 1


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RWS_ASSERT_COUNT_FILE")
    if path and _ASSERTS_PASSED[0]:
        with open(path, "a") as f:
            f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {_ASSERTS_PASSED[0]}\n")


def pytest_unconfigure(config):
    for d in _OWN_CACHE_DIR:
        shutil.rmtree(d, ignore_errors=True)


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
