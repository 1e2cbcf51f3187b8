"""The auto-patching targets, judged on ``metrics/autopatch.json``'s numbers: pure functions
of the metric dicts, shared by the stage that records them
(:mod:`rws_jax.pipeline.autopatch_eval`) and the report that prints them
(:mod:`rws_jax.pipeline.autopatch_report`)."""

from __future__ import annotations

import numpy as np


def mixed_targets(m: dict) -> list[dict]:
    """The targets on the mixed stream, per auto-patcher (means over the stream): mean RA over
    the corruptions with a signature within 2 pp of the per-image oracle, clean TA within 0.5 pp
    of θ_std, and at no severity a mean accuracy over all sources more than 1 pp below θ_std's."""
    cs, srcs, sevs = m["corruptions"], m["sources"], [f"sev{s}" for s in m["severities"]]
    rows = []
    for key, by_sev in m["auto"].items():
        ra_gap = float(np.mean([mean_over(by_sev[s], cs) - mean_over(m["oracle"][s], cs) for s in sevs]))
        ta_gap = float(np.mean([by_sev[s]["clean"] - m["standard"][s]["clean"] for s in sevs]))
        sev_gaps = {s: mean_over(by_sev[s], srcs) - mean_over(m["standard"][s], srcs) for s in sevs}
        worst = min(sev_gaps, key=sev_gaps.__getitem__)
        rows.append({"stream": key, "mean_ra_minus_oracle": ra_gap, "ta_minus_standard": ta_gap,
                     "worst_severity": worst, "worst_severity_minus_standard": sev_gaps[worst],
                     "met": {"ra": ra_gap >= -0.02, "ta": ta_gap >= -0.005, "severity": sev_gaps[worst] >= -0.01}})
    return rows


def mean_over(d: dict, keys) -> float:
    """Mean of ``d[k]`` over ``keys`` (accuracies of a stream over its corruptions)."""
    return float(np.mean([d[k] for k in keys]))


def autopatch_targets(m: dict) -> list[dict]:
    """The issue's targets per batch size and mode: mean RA within 2 pp of the oracle patch,
    TA on clean batches within 0.5 pp of θ_std, held-out RA not below θ_std by > 1 pp."""
    cs, held = m["corruptions"], m["heldout"]
    std, oracle = m["baselines"]["standard"], m["baselines"]["oracle"]
    rows = []
    for key, acc in m["auto"].items():
        ra_gap = mean_over(acc, cs) - mean_over(oracle, cs)
        ta_gap = acc["clean"] - std["clean"]
        held_gap = min((acc[h] - std[h] for h in held), default=0.0)
        rows.append({"stream": key, "mean_ra_minus_oracle": ra_gap, "ta_minus_standard": ta_gap,
                     "worst_heldout_minus_standard": held_gap,
                     "met": {"ra": ra_gap >= -0.02, "ta": ta_gap >= -0.005, "heldout": held_gap >= -0.01}})
    return rows
