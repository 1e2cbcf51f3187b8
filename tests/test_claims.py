"""The claim rules (rws_jax/pipeline/claims.py) on crafted metrics: for each rule a case
that must pass and one that must fail (and where it matters one that is partly, one within
noise, one not judged); the cases a rule drops are named in its numbers. The rules before
this change (rws_jax/pipeline/claims_before.py) keep their verdicts on their old cases."""

import pytest

from rws_jax.pipeline import RunMetrics, preset, seed_mean
from rws_jax.pipeline.claims import (CLAIMS, NOT_JUDGED, NOT_MEASURED, NOT_REPRODUCED, PARTLY, REPRODUCED,
                                     WITHIN_NOISE, alpha_scales, claim_verdicts, discriminative, patch_recovers,
                                     quantization_lossless, shallow_layers, signatures_compose, signatures_transfer,
                                     verdict)
from rws_jax.pipeline.claims_before import (alpha_scales_before, claim_verdicts_before, discriminative_before,
                                            patch_recovers_before, quantization_lossless_before,
                                            shallow_layers_before, signatures_compose_before,
                                            signatures_transfer_before)
from rws_jax.pipeline.study_tables import study_verdicts
from rws_jax.pipeline.tables import before_cells, claims_table

CS = ["fog", "contrast"]


def metrics(acc: dict, corruptions=CS, files=None, **cfg) -> RunMetrics:
    c = preset("tiny", corruptions=corruptions, **cfg)
    m = RunMetrics(cfg=c, accuracies=acc, metrics=files or {})
    return RunMetrics(cfg=c, accuracies=acc, metrics=files or {}, transfer_targets=seed_mean([m]).transfer_targets)


def seeds(*runs: RunMetrics) -> RunMetrics:
    """The seed mean of crafted runs (it carries them: the rules read their noise)."""
    return seed_mean(list(runs))


def main_rows(std_ta, rows: dict) -> dict:
    """rows: {c: (std RA, robust TA, robust RA, patched TA, patched RA)}."""
    acc = {"standard": {"clean": std_ta}}
    for c, (s, r_ta, r, p_ta, p) in rows.items():
        acc["standard"][c] = s
        acc[f"robust/{c}"] = {"clean": r_ta, c: r}
        acc[f"patched/{c}/alpha=1"] = {"clean": p_ta, c: p}
    return acc


# ----------------------------------------------------------------------------- verdict and noise

@pytest.mark.parametrize("n_ok,n,noise,expect", [
    (2, 2, 0, REPRODUCED), (1, 2, 0, PARTLY), (0, 2, 0, NOT_REPRODUCED), (0, 0, 0, NOT_MEASURED),
    (1, 2, 1, WITHIN_NOISE),  # partly if the noisy case fails, reproduced if it passes
    (3, 4, 0, PARTLY), (2, 4, 1, PARTLY),  # partly either way: the noise cannot move it
    (0, 3, 1, NOT_REPRODUCED),  # 0/3 or 1/3: not reproduced either way
    (0, 2, 1, WITHIN_NOISE),  # 0/2 or 1/2
])
def test_verdict_counts_the_noisy_cases_both_ways(n_ok, n, noise, expect):
    assert verdict(n_ok, n, noise) == expect


def _claim3_seed(closed: float) -> RunMetrics:
    """fog: θ_std 50, θ_rob 70, the patch closes ``closed`` of the gap at no TA cost."""
    return metrics(main_rows(0.9, {"fog": (0.50, 0.9, 0.70, 0.9, 0.50 + 0.20 * closed)}), corruptions=["fog"])


def test_a_margin_inside_twice_its_seed_std_is_within_noise():
    # seed mean closes 80.3%: 0.07 pp over the 80% mark, seed std of that margin 2.1 pp -> within noise
    noisy = patch_recovers(seeds(*(_claim3_seed(x) for x in (0.70, 0.80, 0.91))))
    assert noisy.verdict == WITHIN_NOISE and "within noise: margin +0.07 pp, seed std 2.10 pp" in noisy.evidence
    # the same mean with a small spread passes; a clear miss with the same spread fails
    assert patch_recovers(seeds(*(_claim3_seed(x) for x in (0.90, 0.91, 0.92)))).verdict == REPRODUCED
    assert patch_recovers(seeds(*(_claim3_seed(x) for x in (0.40, 0.50, 0.61)))).verdict == NOT_REPRODUCED
    # one seed alone: no std, so no noise: decided by the margin's sign
    assert patch_recovers(_claim3_seed(0.79)).verdict == NOT_REPRODUCED


# ----------------------------------------------------------------------------- claim 1

UNITS = ["conv_0", "conv_1", "conv_2", "conv_3", "conv_4", "conv_5", "head"]  # tiny keeps 3 units


def _layers(floor=0.05, **per_c) -> dict:
    return {"units": UNITS, "standard_seeds": [floor] * 6 + [0.5], **{c: [*v, 0.5] for c, v in per_c.items()}}


def test_claim1_judges_the_excess_over_the_seed_floor():
    # fog: kept units 0.25 over the floor, the rest 0.05 -> 0.25 ≥ 1.5 × 0.05; contrast: 0.05 vs 0.05 -> fails
    lc = _layers(fog=[0.3, 0.3, 0.3, 0.1, 0.1, 0.1], contrast=[0.1] * 6)
    r = shallow_layers(metrics({}, files={"layer_change": lc}))
    assert r.verdict == PARTLY and "fog S 0.250, D 0.050" in r.evidence and "contrast S 0.050, D 0.050" in r.evidence
    # deep units below the floor count as 0: any positive excess in the kept units passes
    ok = _layers(fog=[0.06] * 3 + [0.01] * 3, contrast=[0.2] * 3 + [0.05] * 3)
    assert shallow_layers(metrics({}, files={"layer_change": ok})).verdict == REPRODUCED
    # kept units below the seed floor: the robust model differs from θ_std less than two θ_std seeds do
    below = _layers(fog=[0.04] * 3 + [0.01] * 3, contrast=[0.03] * 6)
    assert shallow_layers(metrics({}, files={"layer_change": below})).verdict == NOT_REPRODUCED


def test_claim1_without_a_seed_floor_is_not_measured():
    lc = {"units": UNITS, "fog": [0.3] * 3 + [0.1] * 3 + [0.5], "contrast": [0.3] * 3 + [0.1] * 3 + [0.5]}
    r = shallow_layers(metrics({}, files={"layer_change": lc}))
    assert r.verdict == NOT_MEASURED and "standard_seeds" in r.evidence
    assert shallow_layers_before(metrics({}, files={"layer_change": lc})).verdict == REPRODUCED  # old rule: 3.0×


def test_claim1_noise_over_seeds():
    runs = [metrics({}, files={"layer_change": _layers(fog=[0.05 + e] * 3 + [0.05] * 3, contrast=[0.2] * 3 + [0.05] * 3)})
            for e in (-0.01, 0.0, 0.04)]  # fog: mean excess 0.01 in the kept units, seed std 0.026
    r = shallow_layers(seeds(*runs))
    assert r.verdict == WITHIN_NOISE and "fog S 0.010" in r.evidence


# ----------------------------------------------------------------------------- claim 2

def _sim(cos, reps=2, cs=("fog", "contrast")):
    names = [f"fashion_mnist:{c} (seed {k + 1})" for c in cs for k in range(reps)]
    return {"similarity": {"names": names, "cosine": cos}}


GAPS = main_rows(0.9, {"fog": (0.5, 0.9, 0.8, 0.9, 0.75), "contrast": (0.4, 0.9, 0.7, 0.9, 0.65)})


def test_claim2_per_corruption_against_its_own_nearest_other():
    # fog's seeds 0.8 apart > fog's nearest other 0.3; contrast 0.25 < its nearest other (fog seed 1) 0.3.
    # The old rule compared every corruption with the global maximum; now each with its own nearest other.
    cos = [[1, 0.8, 0.3, 0.2], [0.8, 1, 0.2, 0.1], [0.3, 0.2, 1, 0.25], [0.2, 0.1, 0.25, 1]]
    r = discriminative(metrics(GAPS, files=_sim(cos)))
    assert r.verdict == PARTLY and "fog 0.80 vs 0.30 across" in r.evidence and "contrast 0.25 vs 0.30" in r.evidence
    ok = [[1, 0.8, 0.3, 0.2], [0.8, 1, 0.2, 0.1], [0.3, 0.2, 1, 0.6], [0.2, 0.1, 0.6, 1]]
    assert discriminative(metrics(GAPS, files=_sim(ok))).verdict == REPRODUCED
    # the old rule: contrast 0.6 > the global max across 0.3 too -> reproduced; a case where they differ:
    local = [[1, 0.5, 0.6, 0.2], [0.5, 1, 0.2, 0.1], [0.6, 0.2, 1, 0.7], [0.2, 0.1, 0.7, 1]]
    assert discriminative_before(metrics(GAPS, files=_sim(local))).verdict == PARTLY  # 0.5 < the global 0.6
    assert discriminative(metrics(GAPS, files=_sim(local))).verdict == PARTLY  # fog 0.5 < its own 0.6; contrast ok
    bad = [[1, 0.2, 0.3, 0.2], [0.2, 1, 0.2, 0.1], [0.3, 0.2, 1, 0.1], [0.2, 0.1, 0.1, 1]]
    assert discriminative(metrics(GAPS, files=_sim(bad))).verdict == NOT_REPRODUCED


def test_claim2_shows_without_judging_a_corruption_robust_training_did_not_help():
    acc = main_rows(0.9, {"fog": (0.5, 0.9, 0.8, 0.9, 0.75), "contrast": (0.6, 0.9, 0.61, 0.9, 0.6)})
    cos = [[1, 0.8, 0.3, 0.2], [0.8, 1, 0.2, 0.1], [0.3, 0.2, 1, 0.1], [0.2, 0.1, 0.1, 1]]
    r = discriminative(metrics(acc, files=_sim(cos)))
    assert r.verdict == REPRODUCED and "not judged (θ_rob,c − θ_std RA gap < 2 pp): contrast 0.10 vs 0.30" in r.evidence
    only = main_rows(0.9, {"fog": (0.5, 0.9, 0.51, 0.9, 0.5), "contrast": (0.6, 0.9, 0.61, 0.9, 0.6)})
    assert discriminative(metrics(only, files=_sim(cos))).verdict == NOT_JUDGED


def test_claim2_three_seeds_give_a_spread_over_the_pairs():
    # fog's three seed pairs: cosine 0.9, 0.9, 0.1; the nearest other of either member 0.3, 0.3, 0.0 (only fog's
    # seed 1 is near contrast) -> margins +0.6, +0.6, +0.1: mean +0.433, std 0.289 -> within noise
    cos = [[1, 0.9, 0.9, 0.3, 0.0, 0.0], [0.9, 1, 0.1, 0.0, 0.0, 0.0], [0.9, 0.1, 1, 0.0, 0.0, 0.0],
           [0.3, 0.0, 0.0, 1, 0.8, 0.8], [0.0, 0.0, 0.0, 0.8, 1, 0.8], [0.0, 0.0, 0.0, 0.8, 0.8, 1]]
    r = discriminative(metrics(GAPS, files=_sim(cos, reps=3)))
    assert r.verdict == WITHIN_NOISE and "fog 0.63 vs 0.30 across (within noise: margin +0.433, seed std 0.289)" in r.evidence


# ----------------------------------------------------------------------------- claim 3

def test_claim3_primary_is_the_robust_models_cost_the_second_theta_std():
    ok = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.895, 0.77), "contrast": (0.40, 0.88, 0.70, 0.893, 0.67)})
    r = patch_recovers(metrics(ok))
    assert r.verdict == REPRODUCED and r.second_verdict == REPRODUCED
    bad = main_rows(0.90, {"fog": (0.50, 0.80, 0.80, 0.80, 0.60), "contrast": (0.40, 0.80, 0.70, 0.80, 0.45)})
    r = patch_recovers(metrics(bad))
    assert r.verdict == NOT_REPRODUCED and r.second_verdict == NOT_REPRODUCED  # < 80% of the gap closed
    # fog closes 90% and loses 10 pp TA against θ_std, as much as its robust model does: the primary rule (cost
    # against θ_rob,c's own) passes it, the second (≤ 1 pp against θ_std, the old primary) does not
    mixed = main_rows(0.90, {"fog": (0.50, 0.80, 0.80, 0.80, 0.77), "contrast": (0.40, 0.89, 0.70, 0.895, 0.67)})
    r = patch_recovers(metrics(mixed))
    assert r.verdict == REPRODUCED and r.second_verdict == PARTLY
    assert "fog: 90% closed, TA +0.0 pp vs θ_rob,c, -10.0 pp vs θ_std" in r.evidence
    before = patch_recovers_before(metrics(mixed))
    assert before.verdict == PARTLY and before.second_verdict == REPRODUCED  # the same two rules, swapped
    # a patch that costs 2 pp more TA than its robust model fails the primary rule
    costly = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.87, 0.77)})
    assert patch_recovers(metrics(costly, corruptions=["fog"])).verdict == NOT_REPRODUCED


def test_claim3_lists_the_corruptions_it_drops():
    acc = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.895, 0.77), "contrast": (0.60, 0.89, 0.61, 0.89, 0.61)})
    r = patch_recovers(metrics(acc, corruptions=["fog", "contrast", "pixelate"]))
    assert r.verdict == REPRODUCED
    assert "not judged (θ_rob,c − θ_std RA gap < 2 pp): contrast" in r.evidence
    assert "not measured: pixelate" in r.evidence
    only = main_rows(0.90, {"contrast": (0.60, 0.89, 0.61, 0.89, 0.61)})
    assert patch_recovers(metrics(only, corruptions=["contrast"])).verdict == NOT_JUDGED


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
    assert alpha_scales_before(metrics(one_falls)).verdict == PARTLY


def test_claim4_drops_a_corruption_without_a_gap():
    base = main_rows(0.9, {"fog": (0.50, 0.9, 0.80, 0.9, 0.75), "contrast": (0.60, 0.9, 0.61, 0.9, 0.61)})
    acc = _alpha(_alpha(base, "fog", (0.50, 0.62, 0.75)), "contrast", (0.60, 0.60, 0.61))
    r = alpha_scales(metrics(acc))
    assert r.verdict == REPRODUCED and "not judged (θ_rob,c − θ_std RA gap < 2 pp): contrast" in r.evidence


# ----------------------------------------------------------------------------- claim 5

C3 = ["fog", "contrast", "snow"]


def _sums(keep: float, ta_cost: float, gains=(0.20, 0.20, 0.20)) -> dict:
    """Single patches: fog/contrast/snow gain ``gains`` RA at 2 pp TA cost; each sum keeps ``keep``
    of each gain on each constituent and costs ``ta_cost`` TA."""
    acc = main_rows(0.90, {c: (0.5, 0.9, 0.5 + g + 0.05, 0.88, 0.5 + g) for c, g in zip(C3, gains)})
    for s in (["fog", "contrast"], ["fog", "snow"], ["contrast", "snow"], C3):
        acc["composed/" + "+".join(s)] = {"clean": 0.90 - ta_cost,
                                          **{c: 0.5 + keep * gains[C3.index(c)] for c in s}}
    return acc


@pytest.mark.parametrize("keep,cost,expect", [(0.6, 0.025, REPRODUCED), (0.4, 0.0, NOT_REPRODUCED),
                                              (0.9, 0.04, NOT_REPRODUCED)])
def test_claim5_sums_keep_half_of_each_gain_at_the_worst_single_cost(keep, cost, expect):
    # TA: each single patch costs 2 pp, so a sum may cost up to 3 pp
    r = signatures_compose(metrics(_sums(keep, cost), corruptions=C3))
    assert r.verdict == expect
    assert r.evidence.startswith("fog+contrast: keeps fog")
    assert "fog+contrast+snow" in r.evidence


def test_claim5_judges_only_constituents_with_a_gain():
    # snow's single patch gains nothing: the sums keep fog's and contrast's gains; contrast+snow... keeps contrast's
    acc = _sums(0.6, 0.0, gains=(0.20, 0.20, 0.0))
    r = signatures_compose(metrics(acc, corruptions=C3))
    assert r.verdict == REPRODUCED and "fog+snow: keeps fog 60% of the single gain" in r.evidence
    none = _sums(0.6, 0.0, gains=(0.01, 0.0, 0.0))
    assert signatures_compose(metrics(none, corruptions=C3)).verdict == NOT_JUDGED


def test_claim5_without_sums_is_not_measured_and_shows_the_average():
    acc = main_rows(0.90, {"fog": (0.50, 0.9, 0.80, 0.9, 0.70), "contrast": (0.40, 0.9, 0.70, 0.9, 0.60)})
    acc["composed_average"] = {"clean": 0.89, "fog": 0.62, "contrast": 0.50}
    r = signatures_compose(metrics(acc))
    assert r.verdict == NOT_MEASURED
    assert "average of all 2 (shown, not judged): mean RA gain +11.0 pp, linear expectation +10.0 pp" in r.evidence
    assert signatures_compose_before(metrics(acc)).verdict == REPRODUCED  # the old rule judged that average


# ----------------------------------------------------------------------------- claim 6

def _transfer(gain: float, cost: float, src_gain=0.2, src_cost=0.05) -> dict:
    """The run's own patches gain ``src_gain`` at ``src_cost`` TA; on the updated backbone they gain
    ``gain`` at ``cost``; on digits (far domain) nothing."""
    acc = main_rows(0.9, {c: (0.5, 0.85, 0.8, 0.9 - src_cost, 0.5 + src_gain) for c in CS})
    acc["updated/standard"] = {"clean": 0.9, **{c: 0.5 for c in CS}}
    acc["transfer/standard"] = {"clean": 0.9, **{c: 0.5 for c in CS}}
    for c in CS:
        acc[f"updated/patched/{c}"] = {"clean": 0.9 - cost, c: 0.5 + gain}
        acc[f"transfer/patched/{c}"] = {"clean": 0.9, c: 0.5}
    return acc


@pytest.mark.parametrize("gain,cost,expect", [(0.10, 0.06, REPRODUCED), (0.08, 0.0, NOT_REPRODUCED),
                                              (0.20, 0.07, NOT_REPRODUCED)])
def test_claim6_relative_to_what_the_rws_give_their_source(gain, cost, expect):
    r = signatures_transfer(metrics(_transfer(gain, cost), transfer_dataset="digits"))
    assert r.verdict == expect
    assert "digits (far domain) (beyond the paper, not judged): 50.0 → 50.0" in r.evidence


def test_claim6_the_old_absolute_rule_and_a_source_without_gain():
    acc = _transfer(0.06, 0.0, src_gain=0.30)  # +6 pp on the target: the old rule's 5 pp, 20% of the source gain
    assert signatures_transfer_before(metrics(acc, transfer_dataset="digits")).verdict == REPRODUCED
    assert signatures_transfer(metrics(acc, transfer_dataset="digits")).verdict == NOT_REPRODUCED
    flat = _transfer(0.0, 0.0, src_gain=0.01)
    r = signatures_transfer(metrics(flat, transfer_dataset="digits"))
    assert r.verdict == NOT_JUDGED and "not judged (the source patch gains < 2 pp RA): updated backbone" in r.evidence


def test_claim6_same_domain_target_uses_its_own_source_rows():
    s0 = metrics(_transfer(0.10, 0.0), transfer_dataset="digits")
    pair_acc = main_rows(0.9, {c: (0.4, 0.9, 0.8, 0.9, 0.6) for c in CS})  # classes 0-4: its own patch +20 pp
    pair_acc["transfer/standard"] = {"clean": 0.9, **{c: 0.5 for c in CS}}
    for c in CS:
        pair_acc[f"transfer/patched/{c}"] = {"clean": 0.9, c: 0.62}  # classes 5-9: +12 pp from classes 0-4's RWSs
        pair_acc[f"reverse/patched/{c}"] = {"clean": 0.9, c: 0.45}
    pair = metrics(pair_acc, transfer_dataset="fashion_mnist", classes=[0, 1, 2, 3, 4], transfer_classes=[5, 6, 7, 8, 9])
    r = signatures_transfer(seed_mean([s0], same_domain=pair))
    assert r.verdict == REPRODUCED
    assert "classes 5–9 (same domain): 50.0 → 62.0 (+12.0 pp, TA +0.0 pp; source +20.0 pp" in r.evidence
    assert "not measured: classes 0–4 (same domain, the other way)" in r.evidence  # its source's patch: no row


# ----------------------------------------------------------------------------- claim 7

def _quant(d4: float, gains=(0.25, 0.25)) -> dict:
    acc = main_rows(0.9, {c: (0.5, 0.9, 0.8, 0.9, 0.5 + g) for c, g in zip(CS, gains)})
    for b, d in ((8, 0.0), (4, d4)):
        for c in CS:
            acc[f"patched_q{b}/{c}"] = {"clean": 0.9, c: acc[f"patched/{c}/alpha=1"][c] + d}
    return acc


def test_claim7_quantization():
    r = quantization_lossless(metrics(_quant(-0.03)))
    assert r.verdict == PARTLY and "4-bit: RA -3.0 pp" in r.evidence
    assert quantization_lossless(metrics(_quant(-0.005))).verdict == REPRODUCED
    # a quantized patch that gains RA has lost nothing (the old rule wanted it within ±1 pp)
    assert quantization_lossless(metrics(_quant(+0.03))).verdict == REPRODUCED
    assert quantization_lossless_before(metrics(_quant(+0.03))).verdict == PARTLY


def test_claim7_judges_only_patches_that_gain():
    # contrast's fp32 patch gains 1 pp: left out of the means; fog's gains 25 pp
    r = quantization_lossless(metrics(_quant(-0.005, gains=(0.25, 0.01))))
    assert r.verdict == REPRODUCED and r.evidence.startswith("over fog;")
    r = quantization_lossless(metrics(_quant(-0.05, gains=(0.01, 0.0))))
    assert r.verdict == NOT_JUDGED and "not judged (no fp32 patch gains ≥ 2 pp RA): 8-bit, 4-bit" in r.evidence
    assert quantization_lossless_before(metrics(_quant(-0.05, gains=(0.01, 0.0)))).verdict == PARTLY


# ----------------------------------------------------------------------------- premise and tables

def test_an_unmet_premise_marks_every_verdict():
    acc = main_rows(0.90, {"fog": (0.50, 0.89, 0.80, 0.895, 0.77), "contrast": (0.40, 0.88, 0.70, 0.893, 0.67)})
    unmet = metrics(acc, files={"premise": {"met": False, "max_barrier": 0.3}})
    rows = claim_verdicts(unmet)
    assert all(r["premise_met"] is False for r in rows)
    table = "\n".join(claims_table(rows, before_cells(rows, claim_verdicts_before(unmet))))
    assert "**reproduced** (premise not met)" in table and "| reproduced / reproduced (premise not met) |" in table
    met = claim_verdicts(metrics(acc, files={"premise": {"met": True}}))
    assert all(r["premise_met"] is True for r in met)
    plain = claim_verdicts(metrics(acc))
    assert all(r["premise_met"] is None for r in plain)
    assert "premise not met" not in "\n".join(claims_table(plain))
    # a seed mean is marked when one of its seeds did not meet the premise
    mean = seeds(metrics(acc, files={"premise": {"met": True}}), unmet)
    assert claim_verdicts(mean)[2]["premise_met"] is False


def test_a_study_judges_each_claim_on_the_seeds_that_measured_it(tmp_path):
    # three seeds measure the main rows; only seed 0 the quantized rows (claim 7)
    runs = [metrics(_quant(-0.005)), *(metrics(main_rows(0.9, {c: (0.5, 0.9, 0.8, 0.9, 0.5 + g) for c in CS}))
                                       for g in (0.20, 0.30))]
    rows = {r["claim"][:2]: r for r in study_verdicts(tmp_path, runs, None)}
    assert rows["3."]["basis"] == "mean of 3 seeds" and rows["7."]["basis"] == "seed 0"
    assert rows["7."]["verdict"] == REPRODUCED and rows["5."]["verdict"] == NOT_MEASURED
    # claim 3 on the mean: fog closes (0.25 + 0.20 + 0.30) / 3 / 0.30 = 83% of its gap, at no TA cost
    assert "fog: 83% closed" in rows["3."]["evidence"]
    before = {r["claim"][:2]: r for r in study_verdicts(tmp_path, runs, None, claim_verdicts_before)}
    assert before["3."]["basis"] == "mean of 3 seeds" and before["7."]["verdict"] == REPRODUCED


def test_every_claim_on_empty_metrics_is_not_measured():
    rows = claim_verdicts(metrics({}))
    assert len(rows) == len(CLAIMS) == 7
    assert all(r["verdict"] == NOT_MEASURED for r in rows)
    assert all(r["verdict"] == NOT_MEASURED for r in claim_verdicts_before(metrics({})))
