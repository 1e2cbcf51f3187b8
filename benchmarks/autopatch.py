"""What auto-patching adds to a forward pass (issue target: ≤ 20% on a batch of 64, CPU).

    python -m benchmarks.autopatch --out results/bench-autopatch --docs docs/benchmarks/autopatch_overhead_cpu.md

The model is the `reproduce` study's: VGG-16 at width 1/8 on 32×32×1 Fashion-MNIST
images, 8 signatures over its first 7 units (random deltas of the right shapes: the cost
does not depend on their values) and a detector trained on real Fashion-MNIST images
(needs the Debian files). Variants, timed interleaved in one process (median of
``--repeats``):

- ``forward``: θ_std's jitted forward pass alone;
- ``detect``: the detector alone (statistics + MLP + out-of-distribution test);
- ``auto, same corruption``: ``AutoPatcher(images)`` on a batch whose coefficients are in
  the cache (a stream of one corruption): detection + forward;
- ``auto, new coefficients``: the cache emptied before every call, so every call also
  patches (the worst case: the corruption changes every batch);
- ``auto, clean``: a clean batch (no patch, θ_std).

Overhead = variant / forward − 1.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved, machine_info, write_outputs

CORRUPTIONS = ("gaussian_noise", "impulse_noise", "defocus_blur", "motion_blur",
               "fog", "contrast", "pixelate", "jpeg_compression")


def setup(batch: int, detector_examples: int, seed: int = 0):
    import rws_jax as rws
    from rws_jax import corruptions as C
    from rws_jax.data import load_dataset
    from rws_jax.models import get_model, unit_order

    ds = load_dataset("fashion_mnist", val_size=1000)
    model = get_model("vgg16", 10, width=0.125, init_scheme="he_fan_in")
    x0 = jnp.zeros((1, 32, 32, 1), jnp.float32)
    init = model.init(jax.random.key(seed), x0, train=False)
    leaves, tdef = jax.tree.flatten(init)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    std = jax.tree.unflatten(tdef, [x + 0.01 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    sel = rws.first_k(7, order=unit_order(model))
    sigs = []
    for i, c in enumerate(CORRUPTIONS):
        ks = jax.random.split(jax.random.key(100 + i), len(leaves))
        rob = jax.tree.unflatten(tdef, [x + 0.01 * jax.random.normal(k, x.shape) for x, k in zip(leaves, ks)])
        sigs.append(rws.extract(init, std, rob, sel, name=c))
    t0 = time.perf_counter()
    det = rws.train_detector(ds.train.images[:detector_examples], sigs, key=jax.random.key(seed))
    train_s = time.perf_counter() - t0
    clean = ds.test.images[:batch]
    fogged = np.asarray(C.corrupt(clean, "fog", 5, jax.random.key(7)))
    patcher = rws.AutoPatcher(model, std, sigs, det, mean=(0.286,), std=(0.353,))
    return model, std, sigs, det, patcher, clean, fogged, train_s


def measure(batch: int, repeats: int, detector_examples: int) -> dict:
    from rws_jax.training.augment import normalize_images

    model, std, sigs, det, patcher, clean, fogged, train_s = setup(batch, detector_examples)
    fwd = jax.jit(lambda v, x: model.apply(v, normalize_images(x, (0.286,), (0.353,)), train=False))
    xc, xf = jnp.asarray(clean), jnp.asarray(fogged)
    patcher(xf)  # fill the cache for the fog coefficients

    def new_coefficients():
        patcher._cache.clear()
        return patcher(xf)

    variants = {
        "forward": lambda: fwd(std, xc),
        "detect": lambda: det.scores(xf),
        "auto, same corruption": lambda: patcher(xf),
        "auto, new coefficients": new_coefficients,
        "auto, clean": lambda: patcher(xc),
    }
    res = interleaved(variants, repeats=repeats, warmup=2)
    base = res["forward"]["median_s"]
    return {"batch": batch, "repeats": repeats, "detector_train_s": train_s, "coefficients_fog": patcher.coefficients(xf).tolist(),
            "variants": {k: {**v, "overhead": v["median_s"] / base - 1.0} for k, v in res.items()}}


def to_markdown(result: dict, command: str) -> str:
    m = result["machine"]
    lines = ["# Auto-patching overhead on this CPU", "",
             f"Written by `{command}` on {result['date']} (wall time {result['wall_s']:.0f} s).", "",
             f"Machine: {m.get('cpu_model', '?')} ({m.get('cpu_count', '?')} cores), backend `{m.get('jax_backend', '?')}`, jax {m.get('jax', '?')}.", "",
             "VGG-16 width 1/8 (the `reproduce` model), 32×32×1 images, 8 signatures over 7 units; median of the "
             "interleaved repeats. Overhead = time / forward − 1; target: detection + patch ≤ 20% of the forward "
             "pass of a batch of 64.", "",
             "| batch | variant | median ms | overhead vs forward |", "|---|---|---|---|"]
    for r in result["cases"]:
        for name, v in r["variants"].items():
            lines.append(f"| {r['batch']} | {name} | {1e3 * v['median_s']:.2f} | "
                         + ("–" if name == "forward" else f"{100 * v['overhead']:+.0f}%") + " |")
    t = result["target"]
    lines += ["", f"Target (batch {t['batch']}): worst auto variant {100 * t['worst_overhead']:+.0f}% "
                  f"({t['worst_variant']}) → **{'met' if t['met'] else 'missed'}**."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    import datetime
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench-autopatch")
    p.add_argument("--docs", default=None, help="also write the Markdown table to this file")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8, 64)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--detector-examples", type=int, default=1000)
    args = p.parse_args(argv)
    t0 = time.time()
    cases = [measure(b, args.repeats, args.detector_examples) for b in (args.batch or [1, 8, 64])]
    target_case = next((c for c in cases if c["batch"] == 64), cases[-1])
    autos = {k: v["overhead"] for k, v in target_case["variants"].items() if k.startswith("auto")}
    worst = max(autos, key=autos.get)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine_info(), "cases": cases, "wall_s": time.time() - t0,
              "target": {"batch": target_case["batch"], "worst_variant": worst, "worst_overhead": autos[worst],
                         "met": autos[worst] <= 0.20}}
    command = "python -m benchmarks.autopatch " + " ".join(sys.argv[1:] if argv is None else argv)
    md = to_markdown(result, command.strip())
    write_outputs(args.out, "autopatch", result, md, args.docs)
    print(md)
    return result


if __name__ == "__main__":
    main()
