"""Markdown tables and the targets table from the results dict."""

from __future__ import annotations

import math

from rws_jax.pipeline.markdown_blocks import read_block, write_block


def _ms(s):
    return "—" if s is None else f"{s * 1e3:.2f} ms"


def _x(r, nd=1):
    return "—" if r is None or (isinstance(r, float) and not math.isfinite(r)) else f"{r:.{nd}f}×"


def _pct(f):
    return "—" if f is None else f"{100 * f:.0f}%"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


PATCH_COLS = [
    ("bound_numpy_1t", "numpy add, 1 thread"),
    ("bound_numpy_mt", "numpy add, all cores"),
    ("bound_device", "device bound: jitted donated a + s·b"),
    ("ours_donated", "**ours: jit, donated**"),
    ("ours_plan_donated", "**ours: patch_plan, donated**"),
    ("ours_donated_checked", "ours, donated, checks on"),
    ("ours_jit_copy", "ours, jit, not donated"),
    ("ours_int8", "ours: int8 fused dequant+patch"),
    ("naive_tree_map", "naive un-jitted tree_map"),
    ("torch_loop", "torch state_dict loop (reference)"),
    ("torch_add_", "torch in-place add_ loop"),
    ("torch_foreach_add_", "torch._foreach_add_ (torch's fastest)"),
    ("torch_cuda_loop", "torch CUDA state_dict loop"),
    ("torch_cuda_foreach_add_", "torch CUDA _foreach_add_"),
]


def patch_md(res: dict) -> list[str]:
    lines = ["## 1. Patch latency vs. model size", "",
             "Median wall time per patch of a signature covering every parameter (float32), all variants "
             "interleaved in one loop. Timed with `check_values=False, check_base=False` except the "
             "'checks on' row. GB/s = logical bytes (12 B/param: read θ, read Δ, write θ; 9 B/param for "
             "int8) / time. Bound: on CPU the faster numpy in-place add over the same bytes; on GPU/TPU a jitted, "
             "donated `a + s·b` on that device. Device: " + ", ".join(sorted({c.get("device", "?") for c in res.get("cases", [])})) + ".", ""]
    cases = res.get("cases", [])
    if cases:
        header = ["variant"] + [f"{c['label']} ({c['num_params_patched'] / 1e6:.1f}M)" for c in cases]
        rows = []
        for key, name in PATCH_COLS:
            if not any(key in c["variants"] for c in cases):
                continue
            row = [name]
            for c in cases:
                v = c["variants"].get(key)
                row.append("—" if v is None else f"{_ms(v['median_s'])} · {v['gbps']:.1f} GB/s · {_pct(v['fraction_of_bound'])}")
            rows.append(row)
        lines += _table(header, rows)
        lines += ["", "Ratios (same loop):", ""]
        ratio_rows = [
            ("ours / bound (fraction of measured bandwidth)", "ours_fraction_of_bound", _pct),
            ("patch_plan / bound", "plan_fraction_of_bound", _pct),
            ("patch_plan time / bound time", "plan_over_bound", lambda r: _x(r, 2)),
            ("torch _foreach_add_ time / ours", "torch_foreach_over_ours", lambda r: _x(r, 2)),
            ("torch _foreach_add_ time / patch_plan", "torch_foreach_over_plan", lambda r: _x(r, 2)),
            ("torch CUDA _foreach_add_ time / ours (best)", "torch_cuda_foreach_over_ours", lambda r: _x(r, 2)),
            ("torch CUDA loop time / ours (best)", "torch_cuda_loop_over_ours", lambda r: _x(r, 2)),
            ("int8 fused / bound", "int8_fraction_of_bound", _pct),
            ("naive tree_map time / ours", "naive_over_ours", _x),
            ("torch loop (reference) time / ours", "torch_loop_over_ours", _x),
            ("torch add_ loop time / ours", "torch_add__over_ours", _x),
            ("not donated / donated", "jit_copy_over_ours", lambda r: _x(r, 2)),
            ("checks on / checks off", "checked_over_ours", lambda r: _x(r, 2)),
            ("int8 fused / float32", "int8_over_ours", lambda r: _x(r, 2)),
        ]
        rows = []
        for name, key, fmt in ratio_rows:
            if any(key in c["ratios"] for c in cases):
                rows.append([name] + [fmt(c["ratios"].get(key)) for c in cases])
        rows.append(["bound (GB/s)"] + [f"{c['bound_gbps']:.1f}" for c in cases])
        rows.append(["donated patch really in place"] + [str(c.get("donated_in_place")) for c in cases])
        rows.append(["first call (compile) of ours"] + [f"{c['compile_s_ours_donated']:.2f} s" for c in cases])
        lines += _table(["ratio"] + [c["label"] for c in cases], rows)
        notes = [f"- {c['label']}: {c['phased_note']}" for c in cases if c.get("phased_note")]
        notes += [f"- {c['label']}: {c['torch_skipped']}" for c in cases if c.get("torch_skipped")]
        if notes:
            lines += [""] + notes
    for s in res.get("skipped", []):
        lines += ["", f"- skipped {s['label']}: {s['reason']}"]
    return lines + [""]


def compose_md(res: dict) -> list[str]:
    lines = ["## 2. Composition of K signatures", "",
             "One fused `patch(v, [sig_1..sig_K])` vs. the same through `patch_plan` vs. K sequential patches vs. "
             "one signature; donated, checks off, interleaved with the bound. A fused pass moves K + 2 streams "
             "(θ, K deltas, θ): *% of bound* = its GB/s over 4·N·(K+2) bytes / the bound's GB/s. "
             "`compose ahead` = `rws.compose(sigs)` (fold K into one, once).", ""]
    rows = []
    for c in res.get("cases", []):
        for k, r in c["per_k"].items():
            v = r["variants"]
            rows.append([c["label"], k, _ms(v["one"]["median_s"]), _ms(v["fused"]["median_s"]),
                         _ms(v["sequential"]["median_s"]), _x(r["fused_over_one"], 2),
                         _x(r["sequential_over_fused"], 2), _ms(v["compose_ahead"]["median_s"]),
                         f"{r['compile_s_fused']:.2f} s",
                         _ms(v["plan_fused"]["median_s"]) if "plan_fused" in v else "—",
                         _pct(r.get("fused_fraction_of_bound")), _pct(r.get("plan_fraction_of_bound")),
                         f"{r['bound_gbps']:.1f}" if "bound_gbps" in r else "—", c.get("device", "—")])
    lines += _table(["selection", "K", "one signature", "fused K", "K sequential", "fused / one",
                     "sequential / fused", "compose ahead", "first fused call", "plan fused K",
                     "fused % of bound", "plan % of bound", "bound GB/s", "device"], rows)
    return lines + [""]


def extract_md(res: dict) -> list[str]:
    lines = ["## 3. Extraction and quantization throughput", "",
             f"Model: {res.get('model')}. Extraction reads three float32 trees (12 B/element); quantization "
             "reads one (4 B/element).", ""]
    rows = []
    for s in res.get("selections", []):
        for name, v in list(s["extraction"].items()) + list(s["quantization"].items()):
            rows.append([s["selection"], f"{s['num_elements'] / 1e6:.1f}M", name, _ms(v["median_s"]),
                         f"{v['elements_per_s'] / 1e6:.0f} M/s", f"{v['input_gbps']:.2f}"])
    lines += _table(["selection", "elements", "operation", "median", "elements/s", "input GB/s"], rows)
    for s in res.get("selections", []):
        extra = f"numpy per-tensor projection is {s['numpy_over_ours']:.1f}× our time"
        if "torch_over_ours" in s:
            extra += f", torch per-tensor projection {s['torch_over_ours']:.1f}×"
        lines += ["", f"- {s['selection']}: {extra}."]
    return lines + [""]


def corruption_md(res: dict) -> list[str]:
    sizes = res.get("sizes", [])
    lines = ["## 4. Corruption throughput", "",
             f"uint8 photographs, severity {res.get('severity')}, preset `{res.get('preset')}` (ImageNet-C "
             "constants, as `imagecorruptions`), at each image size side by side. Ours: one jitted batched call "
             f"(batch {res.get('batch')}; compile time excluded, shown separately). imagecorruptions: numpy, one "
             f"image at a time ({res.get('reference_images')} images). Time per image; speed-up = theirs / ours; "
             "flatness = our time per image at 4× the batch / at the batch. imagecorruptions status: "
             f"{res.get('imagecorruptions')}.", ""]
    per_size = res.get("per_size", {})
    names = []
    for s in sizes:
        for n in per_size.get(str(s), {}).get("per_corruption", {}):
            if n not in names:
                names.append(n)
    rows = []
    for name in names:
        row = [name]
        for s in sizes:
            r = per_size.get(str(s), {}).get("per_corruption", {}).get(name, {})
            v = r.get("variants", {})
            if "ours" not in v:
                row.append(f"ours failed: {r.get('ours_error', '—')}")
                continue
            ours = f"{v['ours']['ms_per_image']:.2f}"
            ref = f"{v['imagecorruptions']['ms_per_image']:.2f}" if "imagecorruptions" in v else "—"
            row.append(f"{ours} / {ref} ms · **{_x(r.get('speedup'))}** · flat {r['flatness']:.2f} · "
                       f"compile {r['ours_compile_s']:.1f} s")
        rows.append(row)
    lines += _table(["corruption"] + [f"{s} px: ours / theirs, speed-up, flatness, compile" for s in sizes], rows)
    lines += [""]
    for s in sizes:
        sm = per_size.get(str(s), {})
        if "geomean_speedup" in sm:
            lines.append(f"- {s} px: geometric mean speed-up {sm['geomean_speedup']:.1f}× over "
                         f"{sm['num_compared']} corruptions, minimum {sm['min_speedup']:.2f}×, "
                         f"{sm['num_at_least_1x']} of {sm['num_compared']} at least as fast; largest flatness "
                         f"{sm['max_flatness']:.2f}; slowest compile {sm['max_compile_s']:.1f} s.")
    errs = {f"{n} ({s} px)": r["imagecorruptions_error"] for s in sizes
            for n, r in per_size.get(str(s), {}).get("per_corruption", {}).items() if r.get("imagecorruptions_error")}
    if errs:
        lines += [""] + [f"- {n}: {e}" for n, e in errs.items()]
    return lines + [""]


def corruption_targets(cr: dict) -> list[dict]:
    """The corruption targets (issue: corruptions as strong as and faster than the
    reference): per size every corruption at least as fast, geometric mean ≥ 5× at
    224 px, flat per-image cost, compile ≤ 10 s."""
    out = []
    tg = cr.get("targets", {})
    per_size = cr.get("per_size", {})

    def add(name, goal, measured, met):
        out.append({"target": name, "goal": goal, "measured": measured,
                    "status": "not measured" if met is None else ("met" if met else "not met"), "note": ""})

    for s in cr.get("sizes", []):
        sm = per_size.get(str(s), {})
        if "num_compared" not in sm:
            add(f"corruptions vs. imagecorruptions, {s} px", "every corruption ≥ 1×",
                cr.get("imagecorruptions", "not run"), None)
            continue
        slow = [f"{n} {r['speedup']:.2f}×" for n, r in sm["per_corruption"].items()
                if r.get("speedup", 1e9) < tg.get("min_speedup", 1.0)]
        add(f"corruptions vs. imagecorruptions, {s} px", "every corruption ≥ 1×",
            f"{sm['num_at_least_1x']} of {sm['num_compared']}; min {sm['min_speedup']:.2f}×"
            + (f" ({', '.join(slow)})" if slow else ""), not slow)
        if s == 224:
            add("corruptions, geometric mean at 224 px", f"≥ {tg.get('geomean_speedup_224', 5.0):g}×",
                f"{sm['geomean_speedup']:.1f}×", sm["geomean_speedup"] >= tg.get("geomean_speedup_224", 5.0))
        if "max_flatness" in sm:
            worst = max(sm["per_corruption"].items(), key=lambda kv: kv[1].get("flatness", 0))[0]
            add(f"corruptions, per-image cost flat in batch, {s} px",
                f"time/image at 4× batch ≤ {tg.get('max_flatness', 1.25):g}× time/image at batch",
                f"max {sm['max_flatness']:.2f} ({worst})", sm["max_flatness"] <= tg.get("max_flatness", 1.25))
            worst = max(sm["per_corruption"].items(), key=lambda kv: kv[1].get("ours_compile_s", 0))[0]
            add(f"corruptions, compile time, {s} px", f"≤ {tg.get('max_compile_s', 10.0):g} s per corruption",
                f"max {sm['max_compile_s']:.1f} s ({worst})", sm["max_compile_s"] <= tg.get("max_compile_s", 10.0))
    return out


def storage_md(res: dict) -> list[str]:
    lines = ["## 5. Storage", "",
             f"{res.get('model')}: {res.get('num_params', 0) / 1e6:.1f}M parameters, full model file "
             f"{res.get('full_model_bytes', 0) / 1e6:.2f} MB on disk (`save_variables`, orbax). Signatures of the "
             f"first k conv layers (`save_signature`, same format); deltas: {res.get('deltas')}. "
             "Ratio = full model bytes / signature bytes.", ""]
    rows = []
    for r in res.get("rows", []):
        rows.append([r["k"], f"{r['num_params'] / 1e6:.2f}M ({100 * r['fraction_of_params']:.1f}%)"]
                    + [f"{r[f'bytes_{b}'] / 1e6:.2f} MB · {r[f'ratio_{b}']:.1f}×" for b in ("fp32", 8, 4, 2)])
    lines += _table(["k convs", "params", "fp32", "8-bit", "4-bit", "2-bit"], rows)
    return lines + [""]


# ----------------------------------------------------------------------------- targets


def targets(results: dict) -> list[dict]:
    """The issue's targets, each with the measured value and met / not met."""
    out = []

    def add(name, target, measured, met, note=""):
        out.append({"target": name, "goal": target, "measured": measured,
                    "status": "not measured" if met is None else ("met" if met else "not met"), "note": note})

    out += patch_compose_targets(results)
    out += corruption_targets(results.get("corruption", {}))
    st = results.get("storage", {})
    row7 = [r for r in st.get("rows", []) if r["k"] == 7]
    if row7 and "width 1.0" in st.get("model", ""):
        add("8-bit signature, default selection (7 convs) vs. full VGG-16", "≥ 13× smaller",
            f"{row7[0]['ratio_8']:.1f}× (fp32: {row7[0]['ratio_fp32']:.1f}×)", row7[0]["ratio_8"] >= 13,
            "bytes on disk of the two orbax files (docs/design.md, storage)")
    elif row7:
        add("8-bit signature, default selection (7 convs) vs. full VGG-16", "≥ 13× smaller",
            f"{row7[0]['ratio_8']:.1f}× on a width-0.25 VGG-16 (quick mode)", None, "run the full mode")
    return out


PATCH_BOUND_GOAL = 0.85   # patch ≥ 85% of the bound, trees ≥ 25M parameters
COMPOSE_BOUND_GOAL = 0.80  # fused composition ≥ 80% of the bound for its K + 2 streams
SMALL_PLAN_GOAL = 2.0      # small patch through patch_plan ≤ 2× the bound's time for its bytes


def patch_compose_targets(results: dict) -> list[dict]:
    """The patch and composition targets, one row per target and device."""
    out = []

    def add(name, target, measured, met, note=""):
        out.append({"target": name, "goal": target, "measured": measured,
                    "status": "not measured" if met is None else ("met" if met else "not met"), "note": note})

    p = results.get("patch", {})
    cases = p.get("cases", [])
    devices = sorted({c.get("device", "?") for c in cases}) or ["?"]
    for dev in devices:
        dc = [c for c in cases if c.get("device", "?") == dev]
        big = [c for c in dc if c["num_params_patched"] >= 25e6]
        name = f"patch ≥ 25M params vs. bandwidth bound [{dev}]"
        goal = f"≥ {100 * PATCH_BOUND_GOAL:.0f}% of the bound (best of ours: rws.patch or patch_plan, donated)"
        if big:
            best = {c["label"]: max(c["ratios"]["ours_fraction_of_bound"], c["ratios"]["plan_fraction_of_bound"])
                    for c in big}
            add(name, goal, ", ".join(f"{k}: {100 * v:.0f}%" for k, v in best.items()),
                all(v >= PATCH_BOUND_GOAL for v in best.values()),
                "rws.patch: " + ", ".join(f"{c['label']}: {100 * c['ratios']['ours_fraction_of_bound']:.0f}%"
                                          for c in big) + f"; bound {big[0].get('bound_kind', 'numpy')}")
        else:
            add(name, goal, "no case ≥ 25M params in this run", None, "run the full mode")
        name = f"patch vs. torch._foreach_add_ (torch's fastest loop) [{dev}]"
        goal = "as fast or faster (foreach time / ours ≥ 1), every tree"
        keys = ("torch_cuda_foreach_over_ours",) if any("torch_cuda_foreach_over_ours" in c["ratios"] for c in dc) \
            else ("torch_foreach_over_ours",)
        tc = [c for c in dc if keys[0] in c["ratios"]]
        if tc:
            def best(c):  # foreach time / the faster of rws.patch and patch_plan
                r = c["ratios"][keys[0]]
                return r if keys[0].startswith("torch_cuda") else max(r, c["ratios"]["torch_foreach_over_plan"])
            r = {c["label"]: best(c) for c in tc}
            add(name, goal, ", ".join(f"{k}: {v:.2f}×" for k, v in r.items()), all(v >= 1 for v in r.values()),
                ("torch on the GPU" if keys[0].startswith("torch_cuda") else "torch on the CPU")
                + "; reference-style dict loop / ours: "
                + ", ".join(f"{c['label']}: {c['ratios'].get('torch_cuda_loop_over_ours', c['ratios'].get('torch_loop_over_ours', float('nan'))):.1f}×"
                            for c in tc))
        else:
            add(name, goal, "torch not available", None)
        small = [c for c in dc if c["num_params_patched"] < 5e6 and "default selection" in c["label"]]
        name = f"small patch (default 7-unit selection) through patch_plan vs. bound [{dev}]"
        goal = f"≤ {SMALL_PLAN_GOAL:.0f}× the bound's time for its bytes"
        if small:
            r = {c["label"]: c["ratios"]["plan_over_bound"] for c in small}
            add(name, goal, ", ".join(f"{k}: {v:.2f}× ({_ms(c['variants']['ours_plan_donated']['median_s'])} vs. "
                                      f"{_ms(c['bound_s'])})" for (k, v), c in zip(r.items(), small)),
                all(v <= SMALL_PLAN_GOAL for v in r.values()),
                "rws.patch: " + ", ".join(f"{1 / c['ratios']['ours_fraction_of_bound']:.2f}×" for c in small))
        else:
            add(name, goal, "default selection not run", None, "run the full mode")
    c = results.get("compose", {})
    ccases = c.get("cases", [])
    for dev in sorted({cs.get("device", "?") for cs in ccases}) or ["?"]:
        name = f"compose K signatures (fused) vs. its bound (K + 2 streams) [{dev}]"
        goal = f"≥ {100 * COMPOSE_BOUND_GOAL:.0f}% of the bound for its bytes at the largest K (best of fused, plan)"
        rows = []
        for cs in ccases:
            if cs.get("device", "?") != dev or not cs["per_k"]:
                continue
            k = max(cs["per_k"], key=int)
            r = cs["per_k"][k]
            if "fused_fraction_of_bound" in r:
                rows.append((cs["label"], k, max(r["fused_fraction_of_bound"], r["plan_fraction_of_bound"]),
                             r["fused_over_one"]))
        if rows:
            add(name, goal, ", ".join(f"{lab} K={k}: {100 * f:.0f}%" for lab, k, f, _ in rows),
                all(f >= COMPOSE_BOUND_GOAL for _, _, f, _ in rows) if any(int(k) >= 19 for _, k, _, _ in rows) else None,
                "fused / one: " + ", ".join(f"{lab} K={k}: {x:.2f}×" for lab, k, _, x in rows)
                + ("" if any(int(k) >= 19 for _, k, _, _ in rows) else "; judged at K = 19 (full mode)"))
        else:
            add(name, goal, "not run", None, "run the full mode")
    return out


def targets_md(tg: list[dict]) -> list[str]:
    lines = ["## Targets", "", "Shown, not asserted. Measured in this run, on this machine.", ""]
    lines += _table(["target", "goal", "measured", "status", "note"],
                    [[t["target"], t["goal"], t["measured"], f"**{t['status']}**", t["note"]] for t in tg])
    return lines + [""]


def render(results: dict) -> str:
    m = results.get("machine", {})
    lines = [f"# rws_jax benchmarks ({results.get('mode')} mode)", "",
             f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} CPU cores, "
             f"{m.get('available_memory_gb')} GB available at start; JAX {m.get('jax')} on "
             f"{m.get('jax_backend')}, numpy {m.get('numpy')}, torch {m.get('torch')}, imagecorruptions "
             f"{m.get('imagecorruptions')}. Load average at start: {results.get('loadavg_start')}. "
             f"Total run time {results.get('total_s', 0):.0f} s.", "",
             "All compared variants ran interleaved in one loop after a warm-up; medians shown. The machine "
             "is shared, so absolute times are noisy: read the ratios.", ""]
    if "targets" in results:
        lines += targets_md(results["targets"])
    sections = [("patch", patch_md), ("compose", compose_md), ("extract", extract_md),
                ("corruption", corruption_md), ("storage", storage_md)]
    for key, fn in sections:
        if key in results:
            if "error" in results[key]:
                lines += [f"## {key}", "", f"failed: `{results[key]['error']}`", ""]
            else:
                lines += fn(results[key])
    return "\n".join(lines)


# The targets table lives on the results page (docs/results/benchmarks.md), between these markers.
SUMMARY_DOC = "docs/results/benchmarks.md"
SUMMARY_BEGIN = f"<!-- bench-summary:begin (python -m benchmarks.report --splice {SUMMARY_DOC}) -->"
SUMMARY_END = "<!-- bench-summary:end -->"
RESULTS_JSON = "docs/benchmarks/benchmark_results_cpu.json"


def summary_block(results: dict) -> str:
    """The results page's benchmark summary: the machine line and the targets table of a run
    (its link is relative to docs/results/)."""
    m = results.get("machine", {})
    lines = [f"Full mode, `python -m benchmarks --out results/bench` (`make bench`), copied to "
             f"`{RESULTS_JSON}` and [benchmark_results_cpu.md](../benchmarks/benchmark_results_cpu.md): "
             f"{m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} cores, JAX {m.get('jax')} on "
             f"{m.get('jax_backend')}, load average {results.get('loadavg_start')} at the start, "
             f"{results.get('total_s', 0):.0f} s in all.", ""]
    lines += _table(["target", "goal", "measured", "status"],
                    [[t["target"], t["goal"], t["measured"], f"**{t['status']}**"] for t in results.get("targets", [])])
    return "\n".join(lines) + "\n"


def summary_block_in(text: str):
    """The benchmark summary between the bench-summary markers of ``text`` (None without them)."""
    return read_block(text, SUMMARY_BEGIN, SUMMARY_END)


def main(argv=None) -> int:
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                 description="Write the benchmark summary of the results page from a results.json.")
    ap.add_argument("--json", default=RESULTS_JSON)
    ap.add_argument("--splice", default=SUMMARY_DOC, help="Markdown file with the bench-summary markers")
    args = ap.parse_args(argv)
    block = summary_block(json.loads(Path(args.json).read_text()))
    write_block(Path(args.splice), SUMMARY_BEGIN, SUMMARY_END, "\n\n" + block + "\n")
    print(f"wrote the benchmark summary of {args.json} into {args.splice}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
