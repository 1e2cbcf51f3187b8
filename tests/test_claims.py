"""The claim rules (rws_jax/pipeline/claims.py) on crafted metrics: for each rule a case
that must pass, one that must fail and one that is partly; the cases a rule drops are
named in its numbers."""

import pytest

from rws_jax.pipeline import RunMetrics, preset, seed_mean
from rws_jax.pipeline.claims import (CLAIMS, NOT_MEASURED, NOT_REPRODUCED, PARTLY, REPRODUCED, alpha_scales,
                                     claim_verdicts, discriminative, patch_recovers, quantization_lossless,
                                     shallow_layers, signatures_compose, signatures_transfer)

CS = ["fog", "contrast"]


def metrics(acc: dict, corruptions=CS, files=None, **cfg) -> RunMetrics:
    c = preset("tiny", corruptions=corruptions, **cfg)
    m = RunMetrics(cfg=c, accuracies=acc, metrics=files or {})
    return RunMetrics(cfg=c, accuracies=acc, metrics=files or {}, transfer_targets=seed_mean([m]).transfer_targets)


def main_rows(std_ta, rows: dict) -> dict:
    """rows: {c: (std RA, robust TA, robust RA, patched TA, patched RA)}."""
    acc = {"standard": {"clean": std_ta}}
    for c, (s, r_ta, r, p_ta, p) in rows.items():
        acc["standard"][c] = s
        acc[f"robust/{c}"] = {"clean": r_ta, c: r}
        acc[f"patched/{c}/alpha=1"] = {"clean": p_ta, c: p}
    return acc


# ----------------------------------------------------------------------------- claim 3

def test_claim3_pass_fail_partly_and_the_second_column():
    ok = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.895, 0.77), "contrast": (0.40, 0.88, 0.70, 0.893, 0.67)})
    r = patch_recovers(metrics(ok))
    assert r.verdict == REPRODUCED and r.second_verdict == REPRODUCED
    bad = main_rows(0.90, {"fog": (0.50, 0.80, 0.80, 0.80, 0.60), "contrast": (0.40, 0.80, 0.70, 0.80, 0.45)})
    r = patch_recovers(metrics(bad))
    assert r.verdict == NOT_REPRODUCED and r.second_verdict == NOT_REPRODUCED  # < 80% of the gap closed
    # fog: closes 90% but loses 10 pp TA against θ_std, as much as its robust model does -> the second
    # rule (cost against θ_rob,c) passes it; contrast passes both
    mixed = main_rows(0.90, {"fog": (0.50, 0.80, 0.80, 0.80, 0.77), "contrast": (0.40, 0.89, 0.70, 0.895, 0.67)})
    r = patch_recovers(metrics(mixed))
    assert r.verdict == PARTLY and r.second_verdict == REPRODUCED
    assert "fog: 90% closed, TA -10.0 pp vs θ_std, +0.0 pp vs θ_rob,c" in r.evidence


def test_claim3_lists_the_corruptions_it_drops():
    acc = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.895, 0.77), "contrast": (0.60, 0.89, 0.61, 0.89, 0.61)})
    r = patch_recovers(metrics(acc, corruptions=["fog", "contrast", "pixelate"]))
    assert r.verdict == REPRODUCED
    assert "not judged (θ_rob,c − θ_std RA gap < 2 pp): contrast" in r.evidence
    assert "not measured: pixelate" in r.evidence


# ----------------------------------------------------------------------------- claim 4

def _alpha(acc, c, seq, alphas=(0.0, 0.5, 1.0)):
    for a, v in zip(alphas, seq):
        acc.setdefault(f"patched/{c}/alpha={a:g}", {"clean": 0.9})[c] = v
    return acc


def test_claim4_must_rise_not_merely_not_fall():
    base = main_rows(0.9, {"fog": (0.50, 0.9, 0.80, 0.9, 0.75), "contrast": (0.40, 0.9, 0.70, 0.9, 0.65)})
    rising = _alpha(_alpha(dict(base), "fog", (0.50, 0.62, 0.75)), "contrast", (0.40, 0.55, 0.65))
    assert alpha_scales(metrics(rising)).verdict == REPRODUCED
    flat = _alpha(_alpha(dict(base), "fog", (0.50, 0.505, 0.51)), "contrast", (0.40, 0.40, 0.41))
    assert alpha_scales(metrics(flat)).verdict == NOT_REPRODUCED  # never falls, but does not rise by 2 pp
    one_falls = _alpha(_alpha(dict(base), "fog", (0.50, 0.70, 0.65)), "contrast", (0.40, 0.55, 0.65))
    assert alpha_scales(metrics(one_falls)).verdict == PARTLY  # fog rises overall but falls 5 pp on the way


def test_claim4_drops_a_corruption_without_a_gap():
    base = main_rows(0.9, {"fog": (0.50, 0.9, 0.80, 0.9, 0.75), "contrast": (0.60, 0.9, 0.61, 0.9, 0.61)})
    acc = _alpha(_alpha(base, "fog", (0.50, 0.62, 0.75)), "contrast", (0.60, 0.60, 0.61))
    r = alpha_scales(metrics(acc))
    assert r.verdict == REPRODUCED and "not judged (θ_rob,c − θ_std RA gap < 2 pp): contrast" in r.evidence


# ----------------------------------------------------------------------------- claim 5

def _composed(gain_share: float, ta_cost: float) -> dict:
    acc = main_rows(0.90, {"fog": (0.50, 0.9, 0.80, 0.9, 0.70), "contrast": (0.40, 0.9, 0.70, 0.9, 0.60)})
    acc["composed_average"] = {"clean": 0.90 - ta_cost, "fog": 0.50 + 0.20 * gain_share,
                               "contrast": 0.40 + 0.20 * gain_share}
    return acc


@pytest.mark.parametrize("share,cost,expect", [(0.8, 0.01, REPRODUCED), (0.8, 0.03, NOT_REPRODUCED),
                                               (0.3, 0.0, NOT_REPRODUCED)])
def test_claim5_needs_both_conditions_in_the_same_case(share, cost, expect):
    assert signatures_compose(metrics(_composed(share, cost))).verdict == expect
    assert signatures_compose(metrics({"standard": {"clean": 0.9}})).verdict == NOT_MEASURED


# ----------------------------------------------------------------------------- claims 1, 2, 6, 7

def test_claim1_shallow_layers():
    units = ["conv_0", "conv_1", "conv_2", "conv_3", "conv_4", "head"]
    lc = {"units": units, "fog": [0.3, 0.3, 0.1, 0.1, 0.1, 0.5], "contrast": [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]}
    r = shallow_layers(metrics({}, files={"layer_change": lc}))
    assert r.verdict == PARTLY and "fog 3.0×" in r.evidence and "contrast 1.0×" in r.evidence


def test_claim2_discriminative():
    names = ["fashion_mnist:fog (seed 1)", "fashion_mnist:fog (seed 2)", "fashion_mnist:contrast (seed 1)",
             "fashion_mnist:contrast (seed 2)"]
    cos = [[1, 0.8, 0.3, 0.2], [0.8, 1, 0.2, 0.1], [0.3, 0.2, 1, 0.25], [0.2, 0.1, 0.25, 1]]
    r = discriminative(metrics({}, files={"similarity": {"names": names, "cosine": cos}}))
    assert r.verdict == PARTLY and "max across corruptions 0.30" in r.evidence  # contrast 0.25 < 0.30


def test_claim6_judges_the_papers_targets_and_shows_the_far_domain():
    acc = {"updated/standard": {"fog": 0.5, "contrast": 0.4}, "updated/patched/fog": {"fog": 0.7},
           "updated/patched/contrast": {"contrast": 0.6},
           "transfer/standard": {"fog": 0.5, "contrast": 0.4}, "transfer/patched/fog": {"fog": 0.5},
           "transfer/patched/contrast": {"contrast": 0.4}}
    r = signatures_transfer(metrics(acc, transfer_dataset="digits"))
    assert r.verdict == REPRODUCED  # digits (far domain) is shown, not judged
    assert "digits (far domain) (beyond the paper, not judged): 45.0 → 45.0" in r.evidence
    same = signatures_transfer(metrics(acc, transfer_dataset="fashion_mnist", classes=[0, 1],
                                       transfer_classes=[2, 3]))
    assert same.verdict == PARTLY  # another task of the same domain is a target of the paper


def test_claim7_quantization():
    acc = main_rows(0.9, {"fog": (0.5, 0.9, 0.8, 0.9, 0.75), "contrast": (0.4, 0.9, 0.7, 0.9, 0.65)})
    for b, d in ((8, 0.0), (4, 0.03)):
        for c in CS:
            acc[f"patched_q{b}/{c}"] = {"clean": 0.9, c: acc[f"patched/{c}/alpha=1"][c] - d}
    r = quantization_lossless(metrics(acc))
    assert r.verdict == PARTLY and "4-bit: RA -3.0 pp" in r.evidence


def test_every_claim_on_empty_metrics_is_not_measured():
    rows = claim_verdicts(metrics({}))
    assert len(rows) == len(CLAIMS) == 7
    assert all(r["verdict"] == NOT_MEASURED for r in rows)
