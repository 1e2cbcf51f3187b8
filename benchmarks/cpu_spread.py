"""How far do the pipeline's numbers move on another CPU, compared with another seed?

    python -m benchmarks.cpu_spread --out results/cpu-spread --docs docs/benchmarks/cpu_spread.md

We have one kind of machine. Another CPU changes the float rounding of XLA's kernels
(vector width, fused multiply-add, reduction order); ``--xla_cpu_max_isa`` makes XLA on
this CPU compile for an older instruction set, which does the same. The script runs one
small pipeline (the offline preset cut to fog: θ_init, θ_std, θ_rob,fog, RWS_fog, TA/RA
of the three models) in a fresh process per setting:

- ``default``: this CPU's native instruction set (``XLA_FLAGS`` unset);
- ``AVX2`` (and any ``--isa``): ``XLA_FLAGS=--xla_cpu_max_isa=AVX2``, an AVX2-only CPU;
- ``default, repeat`` (``--repeat``): the default again, to show runs are repeatable;
- ``training seed 1``: the default with another fine-tuning seed.

It writes every accuracy and the largest difference from ``default`` per setting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine_info, write_outputs

OVERRIDES = ["corruptions=[fog]", "transfer_dataset=null", "update_backbone_epochs=0", "mixture=false",
             "quant_bits=[]", "merge_methods=[]", "alpha_search=false", "robust_replicates=1",
             "composition_rows=false", "alphas=[1.0]"]
ROWS = (("θ_std", "standard"), ("θ_rob,fog", "robust/fog"), ("θ_std + RWS_fog", "patched/fog/alpha=1"))


def run_setting(out: Path, name: str, xla_flags: str | None, extra: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    d = out / name.replace(" ", "_").replace(",", "")
    cmd = [sys.executable, "-m", "rws_jax", "run", "--preset", "offline", "--out", str(d), "--quiet",
           *sum((["--set", o] for o in OVERRIDES + extra), [])]
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    acc = json.loads((d / "metrics" / "accuracy.json").read_text())
    return {"name": name, "xla_flags": xla_flags, "extra": extra, "seconds": time.time() - t0,
            "accuracy": {label: {t: acc[key][t] for t in ("clean", "fog")} for label, key in ROWS}}


def to_markdown(result: dict, command: str) -> str:
    lines = ["# Numbers on another CPU vs. another seed", "",
             f"Written by `{command}` on {result['date']} (wall time {result['wall_s']:.0f} s), on "
             f"{result['cpu']}.", "",
             "The offline preset cut to one corruption (fog): TA / RA (%) of θ_std, θ_rob,fog and θ_std + RWS_fog, "
             "each setting in a fresh process. `XLA_FLAGS=--xla_cpu_max_isa=…` makes XLA compile for an older "
             "instruction set, i.e. behave as on another CPU.", "",
             "| setting | " + " | ".join(f"{label} TA | {label} RA" for label, _ in ROWS)
             + " | largest |Δ| vs default (pp) |", "|---|" + "---|---|" * len(ROWS) + "---|"]
    for s in result["settings"]:
        a = s["accuracy"]
        cells = " | ".join(f"{100 * a[label]['clean']:.2f} | {100 * a[label]['fog']:.2f}" for label, _ in ROWS)
        lines.append(f"| {s['name']} | {cells} | {100 * s['max_abs_diff']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/cpu-spread")
    p.add_argument("--docs", default=None, help="also write the Markdown table (and .json beside it) here")
    p.add_argument("--isa", action="append", help="older instruction sets to try (default AVX2)")
    p.add_argument("--repeat", action="store_true", help="also rerun the default setting (repeatability)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    settings = [run_setting(out, "default", None, [])]
    for isa in args.isa or ["AVX2"]:
        settings.append(run_setting(out, isa, f"--xla_cpu_max_isa={isa}", []))
    if args.repeat:
        settings.append(run_setting(out, "default, repeat", None, []))
    settings.append(run_setting(out, "training seed 1", None, ["training_seed=1"]))
    base = settings[0]["accuracy"]
    for s in settings:
        s["max_abs_diff"] = max(abs(s["accuracy"][r][t] - base[r][t]) for r in base for t in base[r])
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": machine_info().get("cpu_model", "?"), "settings": settings, "wall_s": time.time() - t0}
    command = "python -m benchmarks.cpu_spread " + " ".join(sys.argv[1:] if argv is None else argv)
    md = to_markdown(result, command.strip())
    write_outputs(out, "cpu_spread", result, md, args.docs)
    print(md)
    return result


if __name__ == "__main__":
    main()
