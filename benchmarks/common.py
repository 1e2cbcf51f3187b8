"""Shared helpers: interleaved timing, parameter trees, machine facts.

Timing rule of the whole suite: every compared variant is warmed up first (which
compiles the jitted ones), then the variants are run *interleaved* (A, B, C, A, B,
C, ...) ``repeats`` times, each call ending in ``jax.block_until_ready`` (or the
numpy/torch equivalent: those are synchronous), and the **median** of each variant's
wall times is reported. Noise on a shared machine then hits all variants alike, and
ratios of medians measured in the same loop are the numbers to trust.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import tree_paths
from rws_jax.signature import Signature, SignatureMeta, leaf_specs_for

# ----------------------------------------------------------------------------- timing


def json_safe(x: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "shape", None) == ():
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Runs the variants interleaved; returns ``{name: stats}`` (seconds).

    ``stats`` has ``median_s``, ``min_s``, ``max_s``, ``repeats`` and ``first_s``
    (the first warm-up call, i.e. including compilation for jitted variants).
    """
    first = {}
    for name, fn in variants.items():
        for i in range(max(1, warmup)):
            t = timed(fn)
            if i == 0:
                first[name] = t
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return {name: stats(ts, first=first[name]) for name, ts in times.items()}


def stats(ts: list[float], first: float | None = None) -> dict:
    out = {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "repeats": len(ts),
    }
    if first is not None:
        out["first_s"] = first
    return out


# ----------------------------------------------------------------------------- memory


def available_bytes() -> int:
    """Memory available to new allocations (psutil, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency of our deps
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return 0


# ----------------------------------------------------------------------------- trees


def fill_like(shapes: Any, seed: int = 0, kind: str = "normal", scale: float = 1.0) -> Any:
    """A tree of float32 jax arrays with the shapes of ``shapes`` (a tree of
    ``ShapeDtypeStruct``), filled without running any initializer.

    ``kind``: ``'normal'`` (standard normal × scale), ``'const'`` (all ``scale``:
    cheap for huge trees; an add costs the same whatever the values) or ``'zeros'``.
    Integer leaves (none in our models) are zero-filled.
    """
    rng = np.random.default_rng(seed)

    def make(s):
        dtype = np.dtype(s.dtype)
        if not np.issubdtype(dtype, np.floating):
            return jnp.zeros(s.shape, dtype)
        if kind == "normal":
            x = rng.standard_normal(s.shape, dtype=np.float32) * np.float32(scale)
        elif kind == "const":
            x = np.full(s.shape, scale, np.float32)
        else:
            x = np.zeros(s.shape, np.float32)
        return jnp.array(x.astype(dtype, copy=False))

    return jax.tree.map(make, shapes)


def model_shapes(name: str, num_classes: int = 1000, image: int = 224, **kwargs) -> tuple[Any, Any]:
    """``(model, variable shapes)`` of one of our models, via ``jax.eval_shape``."""
    from rws_jax.models import get_model

    model = get_model(name, num_classes, **kwargs)
    x = jax.ShapeDtypeStruct((1, image, image, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    return model, jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), shapes)


def vit_b16_shapes(num_classes: int = 1000, depth: int = 12, dim: int = 768, mlp: int = 3072,
                   patch: int = 16, tokens: int = 197) -> dict:
    """Parameter shapes of a ViT-B/16 (86.6M parameters with the defaults)."""
    f32 = jnp.float32
    S = lambda *shape: jax.ShapeDtypeStruct(shape, f32)  # noqa: E731
    p: dict[str, Any] = {
        "embedding": {"kernel": S(patch, patch, 3, dim), "bias": S(dim)},
        "cls": S(1, 1, dim),
        "pos_embedding": S(1, tokens, dim),
    }
    for i in range(depth):
        p[f"block_{i}"] = {
            "ln_1": {"scale": S(dim), "bias": S(dim)},
            "qkv": {"kernel": S(dim, 3 * dim), "bias": S(3 * dim)},
            "proj": {"kernel": S(dim, dim), "bias": S(dim)},
            "ln_2": {"scale": S(dim), "bias": S(dim)},
            "mlp_1": {"kernel": S(dim, mlp), "bias": S(mlp)},
            "mlp_2": {"kernel": S(mlp, dim), "bias": S(dim)},
        }
    p["encoder_norm"] = {"scale": S(dim), "bias": S(dim)}
    p["head"] = {"kernel": S(dim, num_classes), "bias": S(num_classes)}
    return {"params": p}


def synthetic_shapes(num: int = 64, rows: int = 4096, cols: int = 4096) -> dict:
    """``num`` tensors of ``rows × cols`` float32 (default 1.07B parameters, 4.3 GB)."""
    return {"params": {f"w_{i}": jax.ShapeDtypeStruct((rows, cols), jnp.float32) for i in range(num)}}


def floating_param_paths(variables: Any) -> list[str]:
    """Every floating leaf of the ``params`` collection (head included)."""
    flat, _ = tree_paths.flatten(variables)
    return [p for p, x in flat.items() if p.split("/")[0] == "params" and jnp.issubdtype(x.dtype, jnp.floating)]


def make_signature(variables: Any, paths: list[str], seed: int = 1, kind: str = "normal",
                   scale: float = 1e-3, name: str = "bench") -> Signature:
    """A float32 signature over ``paths`` of ``variables``, with given delta values
    (random normal by default: the patch cost does not depend on the values)."""
    flat, _ = tree_paths.flatten(variables)
    shapes = {p: jax.ShapeDtypeStruct(flat[p].shape, flat[p].dtype) for p in paths}
    deltas = fill_like(shapes, seed=seed, kind=kind, scale=scale)
    meta = SignatureMeta(
        base_fingerprint=tree_paths.fingerprint(variables),
        leaf_specs=leaf_specs_for(flat, paths),
        name=name,
        kind="difference",
    )
    return Signature(deltas=dict(deltas), meta=meta)


def num_elements(tree_or_flat: Any, paths: list[str] | None = None) -> int:
    flat, _ = tree_paths.flatten(tree_or_flat)
    keys = flat if paths is None else paths
    return int(sum(int(np.prod(flat[p].shape)) for p in keys))


# ----------------------------------------------------------------------------- machine


def device_label() -> str:
    """The device JAX computes on, in words: ``'cpu (Intel Xeon, 2 cores)'``, ``'gpu (NVIDIA H200)'``."""
    d = jax.devices()[0]
    if d.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
        except OSError:
            pass
        return f"cpu ({model}, {os.cpu_count()} cores)"
    return f"{d.platform} ({getattr(d, 'device_kind', d)})"


def torch_cuda(torch) -> bool:
    """Whether torch sees a CUDA GPU (its GPU baselines then run too)."""
    try:
        return torch is not None and bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def write_outputs(out, stem: str, result: dict, markdown: str, docs=None) -> None:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``; with ``docs`` (a .md path) also that
    file and the JSON beside it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out / f"{stem}.md").write_text(markdown)
    if docs:
        Path(docs).write_text(markdown)
        Path(docs).with_suffix(".json").write_text(json.dumps(result, indent=1))


def machine_info() -> dict:
    info = {
        "device": device_label(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        "available_memory_gb": round(available_bytes() / 1e9, 1),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import flax

        info["flax"] = flax.__version__
    except Exception:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch_cuda(torch) else "not available"
    except Exception as e:
        info["torch"] = f"not available ({type(e).__name__})"
    try:
        from importlib.metadata import version

        info["imagecorruptions"] = version("imagecorruptions")
    except Exception:
        info["imagecorruptions"] = "not installed"
    return info


def gbps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")
