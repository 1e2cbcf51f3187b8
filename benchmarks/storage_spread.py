"""How much the bytes on disk of one signature file move from one write to the next.

``python -m benchmarks.storage_spread [--signature results/offline/signatures/fog.rws]
[--writes 5] [--docs docs/benchmarks/storage_spread.md]``: writes the same signature (fp32 and
quantized to 8/4/2/1 bit) ``--writes`` times with ``rws.save_signature`` and records the
smallest and largest ``rws.bytes_on_disk``. orbax's OCDBT layout does not give the same
bytes for the same arrays on every write, so the demo's storage ratios (claim 7) move by
this much between two runs whose accuracies are identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import rws_jax as rws

BITS = (None, 8, 4, 2, 1)


def measure(signature: str | Path, writes: int = 5) -> dict:
    sig = rws.load_signature(signature)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="rws_storage_spread_"))
    try:
        for bits in BITS:
            s = sig if bits is None else rws.quantize(sig, bits)
            sizes = []
            for i in range(writes):
                sizes.append(rws.bytes_on_disk(rws.save_signature(tmp / f"{bits}_{i}.rws", s)))
            rows.append({"bits": 32 if bits is None else bits, "bytes": sizes, "min": min(sizes), "max": max(sizes),
                         "spread_pct": 100.0 * (max(sizes) - min(sizes)) / min(sizes)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"signature": str(signature), "writes": writes, "rows": rows}


def markdown(res: dict) -> str:
    lines = [f"# Bytes on disk of one signature, written {res['writes']} times", "",
             f"`python -m benchmarks.storage_spread --signature {res['signature']} --writes {res['writes']}`", "",
             "| bits | smallest | largest | spread |", "|---|---|---|---|"]
    lines += [f"| {r['bits']} | {r['min']:,} | {r['max']:,} | {r['spread_pct']:.1f}% |" for r in res["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signature", default="results/offline/signatures/fog.rws")
    ap.add_argument("--writes", type=int, default=5)
    ap.add_argument("--docs", default=None, help="write the Markdown table and a .json beside it")
    args = ap.parse_args(argv)
    res = measure(args.signature, args.writes)
    text = markdown(res)
    print(text, end="")
    if args.docs:
        Path(args.docs).write_text(text)
        Path(args.docs).with_suffix(".json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
