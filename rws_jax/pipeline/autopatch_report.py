"""The report's auto-patching tables, written from ``metrics/autopatch.json``
(:mod:`rws_jax.pipeline.autopatch_eval` computes it)."""

from __future__ import annotations

from rws_jax.pipeline.autopatch_eval import mean_over


def autopatch_markdown(m: dict) -> list[str]:
    """The report's tables for metrics/autopatch.json."""
    cs, held, srcs = m["corruptions"], m["heldout"], m["sources"]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"Mixed test stream: the first {m['examples']} test images of each source (clean, {len(cs)} corruptions "
             f"with a signature, held out: {', '.join(held) or 'none'}), severity {m['severity']}, cut into batches "
             "and shuffled into one stream. The detector (22 image statistics, an MLP) was trained on "
             f"{m['detector']['examples']} fine-tuning images per class; threshold {m['threshold']:g}, coefficients "
             f"rounded to {m['step']:g}.", "",
             "| model | TA (clean batches) | mean RA (" + f"{len(cs)} corruptions) | "
             + " | ".join(f"RA {h} (held out)" for h in held) + " |",
             "|---|---|---|" + "---|" * len(held)]
    names = {"standard": "θ_std", "oracle": "oracle patch (true corruption known)",
             "average": "average composition (1/K) Σ RWS_c", "mixture": "mixture-trained model"}
    rows = [(names[k], v) for k, v in m["baselines"].items()]
    rows += [(f"auto-patch, {k.split('/')[0].replace('_', '-')} mode, batch {k.split('/')[1]}", v)
             for k, v in m["auto"].items()]
    for label, acc in rows:
        lines.append(f"| {label} | {pct(acc['clean'])} | {pct(mean_over(acc, cs))} | "
                     + " | ".join(pct(acc[h]) for h in held) + " |")
    lines += ["", "Detection: the share of batches whose strongest coefficient names the true source (clean and "
              "held-out batches: no coefficient at all), and per image (the detector alone; held out: "
              "judged as clean or out of distribution).", "",
              "| source | " + " | ".join(f"batch {b}" for b in m["detection_per_batch"]) + " | per image |",
              "|---|" + "---|" * (len(m["detection_per_batch"]) + 1)]
    for s in srcs:
        lines.append(f"| {s} | " + " | ".join(pct(d[s]) for d in m["detection_per_batch"].values())
                     + f" | {pct(m['detector']['per_image_accuracy'][s])} |")
    lines += ["", "Targets (mean RA within 2 pp of the oracle patch; TA on clean batches within 0.5 pp of θ_std; "
              "held-out RA at most 1 pp below θ_std):", "",
              "| stream | mean RA − oracle | TA − θ_std | worst held-out − θ_std | patches computed / reused | met |",
              "|---|---|---|---|---|---|"]
    for t in m["targets"]:
        p = m["patches"][t["stream"]]
        ok = "all" if all(t["met"].values()) else "missed: " + ", ".join(k for k, v in t["met"].items() if not v)
        lines.append(f"| {t['stream']} | {100 * t['mean_ra_minus_oracle']:+.1f} pp | {100 * t['ta_minus_standard']:+.1f} pp"
                     f" | {100 * t['worst_heldout_minus_standard']:+.1f} pp | {p['computed']} / {p['reused']} | {ok} |")
    return lines
