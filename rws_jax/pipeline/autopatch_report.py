"""The report's auto-patching tables, written from ``metrics/autopatch.json``
(:mod:`rws_jax.pipeline.autopatch_eval` computes it)."""

from __future__ import annotations

import numpy as np

from rws_jax.pipeline.autopatch_targets import mean_over
from rws_jax.pipeline.tables import pct


def autopatch_markdown(m: dict) -> list[str]:
    """The report's tables for metrics/autopatch.json."""
    cs, held, srcs = m["corruptions"], m["heldout"], m["sources"]
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
    mixed = mixed_markdown(m)
    return lines + (["", *mixed] if mixed else [])


def _label(key: str) -> str:
    det, mode, bs = key.split("/")
    return f"auto-patch, detector {det}, {mode.replace('_', '-')} mode, batch {bs}"


def mixed_markdown(m: dict) -> list[str]:
    """The tables of the mixed-batch stream (``metrics/autopatch.json['mixed']``)."""
    x = m.get("mixed")
    if not x:
        return []
    cs, srcs, held = x["corruptions"], x["sources"], [s for s in x["sources"] if s != "clean" and s not in x["corruptions"]]
    sevs = [f"sev{s}" for s in x["severities"]]
    dets = ", ".join(f"{k} (trained at severities {', '.join(map(str, d['severities']))})"
                     for k, d in x["detectors"].items())
    rows = [("θ_std", x["standard"]), ("per-image oracle (each image patched with its own corruption's RWS)",
                                        x["oracle"])] + [(_label(k), v) for k, v in x["auto"].items()]

    def over_sev(by_sev, keys):
        return float(np.mean([mean_over(by_sev[s], keys) for s in sevs]))

    lines = [f"Mixed batches: at each severity ({', '.join(map(str, x['severities']))}) the first {x['examples']} test "
             f"images of every source (clean, {len(cs)} corruptions with a signature, held out: {', '.join(held) or 'none'}) "
             f"are shuffled together and cut into batches of {', '.join(map(str, x['batch_sizes']))}, so a batch mixes "
             f"clean images and several corruptions. Detectors: {dets}. Patching: {m.get('bn', 'pure weight patch')}.",
             "", "Means over the severities:", "",
             "| model | TA (clean images) | mean RA (" + f"{len(cs)} corruptions) | " + " | ".join(f"RA {h} (held out)" for h in held)
             + " |", "|---|---|---|" + "---|" * len(held)]
    for label, by_sev in rows:
        lines.append(f"| {label} | {pct(over_sev(by_sev, ['clean']))} | {pct(over_sev(by_sev, cs))} | "
                     + " | ".join(pct(over_sev(by_sev, [h])) for h in held) + " |")
    lines += ["", "Per severity, mean RA over the corruptions with a signature:", "",
              "| model | " + " | ".join(f"severity {s}" for s in x["severities"]) + " |", "|---|" + "---|" * len(sevs)]
    for label, by_sev in rows:
        lines.append(f"| {label} | " + " | ".join(pct(mean_over(by_sev[s], cs)) for s in sevs) + " |")
    if held:
        lines += ["", "Held-out corruptions (no signature) per severity: θ_std → each per-image auto-patcher at the "
                      "largest batch size:", "",
                  "| held out | model | " + " | ".join(f"severity {s}" for s in x["severities"]) + " |",
                  "|---|---|" + "---|" * len(sevs)]
        big = max(x["batch_sizes"])
        for h in held:
            lines.append(f"| {h} | θ_std | " + " | ".join(pct(x["standard"][s][h]) for s in sevs) + " |")
            for k, v in x["auto"].items():
                if k.endswith(f"per_image/{big}"):
                    lines.append(f"| {h} | {_label(k)} | " + " | ".join(pct(v[s][h]) for s in sevs) + " |")
    lines += ["", "Targets (means over the stream): mean RA within 2 pp of the per-image oracle; TA on clean images "
                  "within 0.5 pp of θ_std; at no severity a mean accuracy over all sources more than 1 pp below "
                  "θ_std's. The targets are meant for the per-image rows at batch 64 (a batch may mix sources); the others are shown too.", "",
              "| stream | mean RA − oracle | TA − θ_std | worst severity − θ_std | met |", "|---|---|---|---|---|"]
    for t in m.get("mixed_targets", []):
        ok = "all" if all(t["met"].values()) else "missed: " + ", ".join(k for k, v in t["met"].items() if not v)
        lines.append(f"| {_label(t['stream'])} | {100 * t['mean_ra_minus_oracle']:+.1f} pp | "
                     f"{100 * t['ta_minus_standard']:+.1f} pp | {t['worst_severity']}: "
                     f"{100 * t['worst_severity_minus_standard']:+.1f} pp | {ok} |")
    return lines
