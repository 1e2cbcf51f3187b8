"""Corruption throughput: our batched JAX corruptions vs. ``imagecorruptions``, at 32, 64
and 224 pixels, on real photographs.

For every image size the same batch of uint8 photographs (the photographs of
:mod:`benchmarks.corruption_reference`, repeated to fill the batch) goes to both:

- ours: ``rws_jax.corruptions.corrupt(batch, name, severity, key, preset='imagenet')``
  — one jitted, vmapped call for the whole batch, ``block_until_ready``; the first call
  (compilation, plus the frost field the first time) is reported as *compile* and
  excluded from the throughput;
- ``imagecorruptions.corrupt(image, corruption_name=name, severity=severity)`` — numpy,
  one image at a time in a Python loop (its intended use), on the first
  ``reference_images`` images of the batch (its cost per image does not depend on the
  batch), made to run on current numpy / scikit-image by the shims of
  :mod:`benchmarks.corruption_reference`.

The two are run interleaved, ``repeats`` times each, medians compared per image.
*Flatness*: our time per image at 4× the batch divided by our time per image at the
batch (1.0 = perfectly flat; the target is ≤ 1.25).

Run alone (``python -m benchmarks.corruption --help``) it can time a subset
(``--sizes 224 --only pixelate,defocus_blur,spatter``) and, with ``--baseline REV``, a
second copy of ``rws_jax/corruptions`` taken from git revision ``REV`` in the same
interleaved loop ("before" beside "after"), writing a focused table (``--docs PATH``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved, json_safe, loadavg, machine_info
from benchmarks.corruption_reference import load_imagecorruptions, photographs

# compatibility name used by other benchmark modules and tests
__all__ = ["run", "load_imagecorruptions", "make_images", "TARGETS"]

TARGETS = {"min_speedup": 1.0, "geomean_speedup_224": 5.0, "max_flatness": 1.25, "max_compile_s": 10.0}
FULL = {"sizes": (32, 64, 224), "batch": {32: 128, 64: 64, 224: 16},
        "reference_images": {32: 32, 64: 16, 224: 4}, "repeats": 3}
QUICK = {"sizes": (32, 64), "batch": {32: 16, 64: 8}, "reference_images": {32: 8, 64: 4}, "repeats": 2}


def make_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``uint8[n, size, size, 3]``: the benchmark photographs, repeated to ``n``."""
    ph = photographs(size)
    reps = -(-n // len(ph))
    return np.concatenate([ph] * reps)[:n]


def _measure(name, images, ref_images, ic_corrupt, severity, repeats, key, baseline=None):
    from rws_jax.corruptions import corrupt

    n = len(images)
    batch = jnp.asarray(images)
    big = jnp.asarray(np.concatenate([images] * 4))
    rec: dict = {}
    state = {"key": key}

    def ours(b=batch):
        state["key"], k = jax.random.split(state["key"])
        return corrupt(b, name, severity, k, preset="imagenet")

    variants = {"ours": ours, "ours_4x": lambda: ours(big)}
    if baseline is not None:
        def before(b=batch):
            state["key"], k = jax.random.split(state["key"])
            return baseline.corrupt(b, name, severity, k, preset="imagenet")

        variants["baseline"] = before
    if ic_corrupt is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ic_corrupt(ref_images[0], corruption_name=name, severity=severity)

            def theirs():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for im in ref_images:
                        ic_corrupt(im, corruption_name=name, severity=severity)
                return 0

            variants["imagecorruptions"] = theirs
        except Exception as e:
            rec["imagecorruptions_error"] = f"fails in imagecorruptions: {type(e).__name__}: {str(e)[:120]}"
    try:
        res = interleaved(variants, repeats)
    except Exception as e:  # ours failing must not stop the suite: record it
        rec["ours_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return rec
    rec["ours_compile_s"] = res["ours"]["first_s"]
    per = {"ours": n, "ours_4x": 4 * n, "baseline": n, "imagecorruptions": len(ref_images)}
    for k, v in res.items():
        v["images"] = per[k]
        v["ms_per_image"] = 1e3 * v["median_s"] / per[k]
        v["images_per_s"] = per[k] / v["median_s"]
    rec["variants"] = res
    rec["flatness"] = res["ours_4x"]["ms_per_image"] / res["ours"]["ms_per_image"]
    if "imagecorruptions" in res:
        rec["speedup"] = res["imagecorruptions"]["ms_per_image"] / res["ours"]["ms_per_image"]
    if "baseline" in res:
        rec["baseline_compile_s"] = res["baseline"]["first_s"]
        rec["speedup_over_baseline"] = res["baseline"]["ms_per_image"] / res["ours"]["ms_per_image"]
        if "imagecorruptions" in res:
            rec["baseline_speedup"] = res["imagecorruptions"]["ms_per_image"] / res["baseline"]["ms_per_image"]
    return rec


def run(quick: bool = False, log=print, severity: int = 3, sizes=None, names=None, repeats=None,
        baseline=None) -> dict:
    """The benchmark (see the module doc). ``sizes``/``names``/``repeats`` narrow or
    override the full (or ``quick``) configuration; ``baseline`` (a module with a
    ``corrupt`` function, e.g. :func:`load_baseline`) is timed beside ours."""
    from rws_jax.corruptions import CORRUPTIONS

    cfg = dict(QUICK if quick else FULL)
    if sizes:
        unknown = [sz for sz in sizes if sz not in FULL["sizes"]]
        if unknown:
            raise ValueError(f"sizes must be among {FULL['sizes']}, got {unknown}")
        cfg["sizes"] = tuple(sizes)
        cfg["batch"] = {**FULL["batch"], **QUICK["batch"]} if quick else FULL["batch"]
        cfg["reference_images"] = ({**FULL["reference_images"], **QUICK["reference_images"]} if quick
                                   else FULL["reference_images"])
    if repeats:
        cfg["repeats"] = int(repeats)
    if names:
        unknown = [nm for nm in names if nm not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")
        names = tuple(names)
    else:
        names = ("gaussian_noise", "contrast", "pixelate") if quick else tuple(CORRUPTIONS)
    ic_corrupt, ic_reason = load_imagecorruptions()
    out = {"severity": severity, "preset": "imagenet", "repeats": cfg["repeats"], "sizes": list(cfg["sizes"]),
           "batch": {str(s): cfg["batch"][s] for s in cfg["sizes"]},
           "reference_images": {str(s): cfg["reference_images"][s] for s in cfg["sizes"]},
           "imagecorruptions": ic_reason or "ok", "targets": TARGETS, "per_size": {}}
    key = jax.random.key(0)
    for size in cfg["sizes"]:
        images = make_images(cfg["batch"][size], size)
        ref_images = images[:cfg["reference_images"][size]]
        per = {}
        for name in names:
            rec = _measure(name, images, ref_images, ic_corrupt, severity, cfg["repeats"], key, baseline)
            per[name] = rec
            if "ours_error" in rec:
                log(f"  {size:>3} px {name}: ours failed: {rec['ours_error']}")
                continue
            sp = f"{rec['speedup']:.1f}x" if "speedup" in rec else rec.get("imagecorruptions_error", "")[:40]
            if "speedup_over_baseline" in rec:
                sp += (f", baseline {rec['variants']['baseline']['ms_per_image']:.3f} ms/img "
                       f"(ours {rec['speedup_over_baseline']:.2f}x faster)")
            log(f"  {size:>3} px {name:<18} ours {rec['variants']['ours']['ms_per_image']:.3f} ms/img "
                f"(compile {rec['ours_compile_s']:.1f} s, flatness {rec['flatness']:.2f}), vs imagecorruptions: {sp}")
        summary = {"per_corruption": per}
        speedups = [r["speedup"] for r in per.values() if "speedup" in r]
        if speedups:
            summary["geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
            summary["min_speedup"] = float(min(speedups))
            summary["num_compared"] = len(speedups)
            summary["num_at_least_1x"] = int(sum(s >= TARGETS["min_speedup"] for s in speedups))
        flat = [r["flatness"] for r in per.values() if "flatness" in r]
        comp = [r["ours_compile_s"] for r in per.values() if "ours_compile_s" in r]
        if flat:
            summary["max_flatness"] = float(max(flat))
            summary["max_compile_s"] = float(max(comp))
        out["per_size"][str(size)] = summary
    return out



# ----------------------------------------------------------------------------- command line


def load_baseline(rev: str):
    """``rws_jax/corruptions`` as of git revision ``rev`` (``git archive`` into a temporary
    folder), imported as a separate package, so that it runs beside the working tree's."""
    root = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=root, check=True,
                         capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix=f"corruptions-{sha}-"))
    archive = subprocess.run(["git", "archive", sha, "rws_jax/corruptions"], cwd=root, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    pkg = tmp / "rws_jax" / "corruptions"
    name = f"rws_jax_corruptions_{sha}"
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    mod.__dict__["__revision__"] = sha
    return mod


def render_focused(res: dict) -> str:
    """A focused Markdown table: per size and corruption, ours (and the baseline) against
    imagecorruptions."""
    base = res.get("baseline_revision")
    lines = [f"# Corruption speed against `imagecorruptions` ({', '.join(str(s) for s in res['sizes'])} px)",
             "",
             f"Written by `{res['command']}` on {res['date']} ({res['machine']['device']}; "
             f"load average {res.get('loadavg_start')} at the start, {res.get('loadavg_end')} at the end; "
             f"jax {res['machine']['jax']}, imagecorruptions {res['machine'].get('imagecorruptions')}).",
             "",
             f"Severity {res['severity']}, preset `{res['preset']}`, uint8 photographs "
             f"(`benchmarks.corruption_reference`). Ours: one jitted batched call per batch, "
             f"compilation excluded; `imagecorruptions`: numpy, one image at a time. "
             f"All variants timed interleaved in one loop, {res['repeats']} repeats, medians per image; "
             f"speed-up = imagecorruptions' time / ours.",
             ""]
    if base:
        lines += [f"*Before* is `rws_jax/corruptions` at git revision `{base}` (loaded beside the "
                  "working tree by `--baseline`), *after* the working tree, in the same loop.", ""]
        head = ("| corruption | batch | imagecorruptions ms/img | before ms/img | after ms/img | "
                "before vs imagecorruptions | after vs imagecorruptions | after / before speed-up |")
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    else:
        head = "| corruption | batch | imagecorruptions ms/img | ours ms/img | speed-up | flatness |"
        sep = "|---|---:|---:|---:|---:|---:|"
    for size in res["sizes"]:
        summ = res["per_size"][str(size)]
        lines += [f"## {size} px", "", head, sep]
        for name, rec in summ["per_corruption"].items():
            if "ours_error" in rec:
                lines.append(f"| {name} | | | failed: {rec['ours_error']} | | |")
                continue
            v = rec["variants"]
            ic = v.get("imagecorruptions", {}).get("ms_per_image")
            ic_s = f"{ic:.2f}" if ic is not None else rec.get("imagecorruptions_error", "n/a")
            batch = res["batch"][str(size)]
            if base:
                lines.append(
                    f"| {name} | {batch} | {ic_s} | {v['baseline']['ms_per_image']:.2f} | "
                    f"{v['ours']['ms_per_image']:.2f} | {rec.get('baseline_speedup', float('nan')):.2f}× | "
                    f"**{rec.get('speedup', float('nan')):.2f}×** | {rec['speedup_over_baseline']:.2f}× |")
            else:
                lines.append(f"| {name} | {batch} | {ic_s} | {v['ours']['ms_per_image']:.2f} | "
                             f"**{rec.get('speedup', float('nan')):.2f}×** | {rec['flatness']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:

    ap = argparse.ArgumentParser(prog="python -m benchmarks.corruption", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and batches (seconds)")
    ap.add_argument("--sizes", default=None,
                    help=f"comma-separated image sides, among {','.join(map(str, FULL['sizes']))}")
    ap.add_argument("--only", default=None, help="comma-separated corruption names (default: all 19)")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=None, help=f"timed repeats (default {FULL['repeats']})")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also time rws_jax/corruptions as of this git revision, beside the working tree")
    ap.add_argument("--out", default="results/bench", help="writes corruption.json / corruption.md here")
    ap.add_argument("--docs", default=None, help="also write this Markdown file and the JSON beside it")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    names = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    baseline = load_baseline(args.baseline) if args.baseline else None
    start = loadavg()
    res = run(quick=args.quick, severity=args.severity, sizes=sizes, names=names, repeats=args.repeats,
              baseline=baseline)
    res["loadavg_start"], res["loadavg_end"] = start, loadavg()
    res["command"] = "python -m benchmarks.corruption " + " ".join(argv if argv is not None else sys.argv[1:])
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["machine"] = machine_info()
    if baseline is not None:
        res["baseline_revision"] = baseline.__revision__
    res = json_safe(res)
    md = render_focused(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corruption.json").write_text(json.dumps(res, indent=1))
    (out / "corruption.md").write_text(md)
    if args.docs:
        Path(args.docs).write_text(md)
        Path(args.docs).with_suffix(".json").write_text(json.dumps(res, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
