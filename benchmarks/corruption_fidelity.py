"""Fidelity of our corruptions against ``imagecorruptions`` on real photographs.

``python -m benchmarks.corruption_fidelity --out DIR [--sizes 224,64,32] [--seeds 2]``
writes ``DIR/corruption_fidelity.json`` and ``DIR/corruption_fidelity.md``.

Strength of a corruption = mean PSNR (dB) of the corrupted photograph against the clean
one, over the photographs of :func:`benchmarks.corruption_reference.photographs` and
``seeds`` random draws each at 224 px and ``small_seeds`` below (a draw is cheap there, and
on small images one draw varies more: spatter's water at 32 px needs hundreds of draws to
pin its mean PSNR to 0.5 dB); one draw for the deterministic corruptions. Ours runs with
``preset='imagenet'`` (the constants ``imagecorruptions`` uses); the difference
``ours - reference`` is reported per corruption, severity and image size, and the
target is ``|difference| <= 1.5 dB`` everywhere.

One event is excluded from both sides and counted: spatter's water on a draw whose liquid
layer is empty (no pixel above the threshold; a few percent of draws at 32 px). The
reference then divides 0 by 0 and returns a black image; ours returns the image unchanged.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rws_jax.pipeline.markdown_blocks import write_block

TOLERANCE_DB = 1.5


def measure(sizes=(224, 64, 32), seeds: int = 2, names=None, severities=(1, 2, 3, 4, 5),
            log=print, small_seeds: int = 16) -> dict:
    import jax

    from benchmarks.corruption_reference import (load_imagecorruptions, photo_names, photographs, psnr,
                                                 reference_corrupt)
    from rws_jax.corruptions import CORRUPTIONS, DETERMINISTIC, corrupt

    ic, reason = load_imagecorruptions()
    if ic is None:
        raise RuntimeError(reason)
    names = tuple(names or CORRUPTIONS)
    out = {"photographs": photo_names(), "seeds": seeds, "small_seeds": small_seeds,
           "tolerance_db": TOLERANCE_DB, "sizes": list(sizes),
           "rows": []}
    for size in sizes:
        photos = photographs(size)
        for name in names:
            t0 = time.perf_counter()
            for sev in severities:
                n_seeds = 1 if name in DETERMINISTIC else (seeds if size >= 224 else small_seeds)
                ours, ref = [], []
                excluded_ours = excluded_ref = 0
                for s in range(n_seeds):
                    key = jax.random.key(1000 * s + 17)
                    o = psnr(np.asarray(corrupt(photos, name, sev, key, preset="imagenet")), photos)
                    pairs = [reference_corrupt(ic, im, name, sev, seed=1000 * s + i, return_invalid=True)
                             for i, im in enumerate(photos)]
                    r = psnr(np.stack([p[0] for p in pairs]), photos)
                    if name == "spatter":  # empty liquid layer: see the module doc
                        unchanged = o > 100.0
                        invalid = np.asarray([p[1] for p in pairs])
                        excluded_ours += int(unchanged.sum())
                        excluded_ref += int(invalid.sum())
                        o, r = o[~unchanged], r[~invalid]
                    ours.append(o)
                    ref.append(r)
                ours_db = float(np.mean(np.concatenate(ours)))
                ref_db = float(np.mean(np.concatenate(ref)))
                row = {"size": size, "corruption": name, "severity": sev, "draws": n_seeds * len(photos),
                       "ours_db": ours_db, "reference_db": ref_db, "diff_db": ours_db - ref_db,
                       "within": bool(abs(ours_db - ref_db) <= TOLERANCE_DB)}
                if excluded_ours or excluded_ref:
                    row["excluded_empty_liquid"] = {"ours": excluded_ours, "reference": excluded_ref}
                out["rows"].append(row)
            diffs = [r["diff_db"] for r in out["rows"] if r["size"] == size and r["corruption"] == name]
            log(f"  {size:>3} px {name:<18} diff dB " + " ".join(f"{d:+.2f}" for d in diffs)
                + f"  ({time.perf_counter() - t0:.1f} s)")
    rows = out["rows"]
    out["num_cells"] = len(rows)
    out["num_within"] = int(sum(r["within"] for r in rows))
    out["max_abs_diff_db"] = float(max(abs(r["diff_db"]) for r in rows)) if rows else None
    return out


def render(res: dict) -> str:
    sizes = res["sizes"]
    lines = ["# Corruption fidelity against imagecorruptions", "",
             "Written by `python -m benchmarks.corruption_fidelity --out docs/benchmarks --docs docs/guides/corruptions.md` "
             "(needs `pip install -e '.[bench]'`; minutes on 2 CPU cores).", "",
             f"Strength = mean PSNR (dB) of corrupted vs. clean photograph over {len(res['photographs'])} "
             f"photographs ({', '.join(res['photographs'])}) and {res['seeds']} random draws each at 224 px, "
             f"{res['small_seeds']} below (one for deterministic corruptions); ours with "
             "`preset='imagenet'`. Each cell is "
             "ours − imagecorruptions in dB for severities 1..5; target |diff| ≤ "
             f"{res['tolerance_db']} dB. Cells within target: **{res['num_within']} / {res['num_cells']}**, "
             f"largest |diff| {res['max_abs_diff_db']:.2f} dB.", ""]
    by = {}
    for r in res["rows"]:
        by.setdefault(r["corruption"], {}).setdefault(r["size"], []).append(r)
    header = ["corruption"] + [f"{s} px: diff (dB), sev 1..5" for s in sizes] + [f"ref PSNR {sizes[0]} px"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, per in by.items():
        cells = [name]
        for s in sizes:
            rs = per.get(s, [])
            cells.append(" ".join(("**" if not r["within"] else "") + f"{r['diff_db']:+.1f}"
                                  + ("**" if not r["within"] else "") for r in rs))
        cells.append(" ".join(f"{r['reference_db']:.1f}" for r in per.get(sizes[0], [])))
        lines.append("| " + " | ".join(cells) + " |")
    excl = [r for r in res["rows"] if r.get("excluded_empty_liquid")]
    if excl:
        lines += ["", "Draws excluded because spatter's liquid layer was empty (the reference returns a black "
                      "image, ours the image unchanged), ours / reference, of the draws per cell: " + ", ".join(
                          f"{r['size']} px sev {r['severity']}: {r['excluded_empty_liquid']['ours']} / "
                          f"{r['excluded_empty_liquid']['reference']} of {r['draws']}" for r in excl) + "."]
    missed = [r for r in res["rows"] if not r["within"]]
    if missed:
        lines += ["", "Outside the target (bold above): " + ", ".join(
            f"{r['corruption']} {r['size']} px sev {r['severity']} ({r['diff_db']:+.2f} dB)" for r in missed) + "."]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- corruption-fidelity:begin -->", "<!-- corruption-fidelity:end -->"


def splice(doc: Path, table_md: str) -> None:
    """Replace the text between the fidelity markers of ``doc`` by ``table_md``."""
    body = table_md.split("\n", 2)[2]  # drop the title line of the standalone file
    write_block(doc, BEGIN, END, "\n" + body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.corruption_fidelity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/fidelity")
    ap.add_argument("--sizes", default="224,64,32")
    ap.add_argument("--seeds", type=int, default=2, help="random draws per photograph at 224 px and above")
    ap.add_argument("--small-seeds", type=int, default=16, help="random draws per photograph below 224 px")
    ap.add_argument("--only", default=None, help="comma-separated corruption names")
    ap.add_argument("--docs", default=None, help="also write the table between the markers of this Markdown file")
    ap.add_argument("--from-json", default=None, help="render an existing corruption_fidelity.json instead of measuring")
    args = ap.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    names = tuple(s.strip() for s in args.only.split(",")) if args.only else None
    res = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(sizes, args.seeds, names,
                                                                                       small_seeds=args.small_seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corruption_fidelity.json").write_text(json.dumps(res, indent=1))
    (out / "corruption_fidelity.md").write_text(render(res))
    if args.docs:
        splice(Path(args.docs), render(res))
    print(f"wrote {out / 'corruption_fidelity.md'}: {res['num_within']}/{res['num_cells']} within "
          f"{TOLERANCE_DB} dB")
    return 0 if res["num_within"] == res["num_cells"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
