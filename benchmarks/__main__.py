"""``python -m benchmarks [--quick] [--out DIR] [--only patch,compose,extract,corruption,storage]``

Writes ``DIR/results.json`` and ``DIR/results.md``. See docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import json_safe, loadavg

SECTIONS = ("patch", "compose", "extract", "corruption", "storage")


def run(quick: bool = False, out: str | os.PathLike = "results/bench", only=None, log=print) -> dict:
    from benchmarks import common, compose, corruption, extract_quant, patch, report, storage

    modules = {"patch": patch, "compose": compose, "extract": extract_quant, "corruption": corruption,
               "storage": storage}
    only = tuple(only) if only else SECTIONS
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"mode": "quick" if quick else "full", "machine": common.machine_info(),
                     "loadavg_start": loadavg(), "sections_run": list(only)}
    t0 = time.perf_counter()
    for name in SECTIONS:
        if name not in only:
            continue
        log(f"[{name}] ({time.perf_counter() - t0:.0f} s)")
        ts = time.perf_counter()
        try:
            results[name] = modules[name].run(quick=quick, log=log)
        except Exception as e:  # one failing section must not lose the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["section_s"] = time.perf_counter() - ts
    results["total_s"] = time.perf_counter() - t0
    results["loadavg_end"] = loadavg()
    results["targets"] = report.targets(results)
    results = json_safe(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report.render(results))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} in {results['total_s']:.0f} s")
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds (CI)")
    ap.add_argument("--out", default=None, help="output directory (default results/bench or results/bench-quick)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    out = args.out or ("results/bench-quick" if args.quick else "results/bench")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    res = run(quick=args.quick, out=out, only=only)
    failed = [k for k in SECTIONS if isinstance(res.get(k), dict) and "error" in res[k]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
