"""The paper's seven claims, each judged by a fixed, written rule on a run's metrics.

Each rule is one small function ``RunMetrics -> ClaimResult`` in :data:`CLAIMS` and follows
the claim's words in the paper's abstract (docs/design.md, "The claim rules and the paper's
words"). A rule reads only what :class:`rws_jax.pipeline.run_metrics.RunMetrics` declares
(config, accuracies, metrics files, transfer targets), so it judges a single run, a seed
mean or crafted numbers (the unit tests) alike.

A rule looks at cases (a corruption, a sum of signatures, a transfer target, a bit width);
each case has one or more conditions, each written as a *margin* (≥ 0: the condition holds).
On a seed mean (``m.seeds`` holds the runs) every margin is also computed on each seed; a
margin smaller in size than :data:`NOISE` times its seed std (ddof 1, at least two seeds) is
*within noise*: neither a pass nor a fail. A case fails when one of its conditions fails
outside the noise, passes when all pass outside it, and is within noise otherwise. With
``n`` judged cases: all pass → reproduced, at least half → partly, fewer → not reproduced,
none → not measured (nothing to read) or not judged (measured, but no case qualifies); when
the cases within noise could move the verdict either way, the verdict is "within noise".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable, Sequence

import numpy as np

from rws_jax.pipeline.run_metrics import RunMetrics, all_measured

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "partly", "not reproduced", "not measured"
WITHIN_NOISE = "within noise"  # the cases whose margins are within their seed noise could move the verdict
NOT_JUDGED = "not judged"  # measured, but no case qualifies (e.g. no corruption with a 2 pp gain)

GAP = 0.02  # a case is judged only when the gain it is about (θ_rob,c or a patch over θ_std) is ≥ 2 pp RA
NOISE = 2.0  # a margin smaller than NOISE seed stds is within noise
SHALLOW = 1.5  # claim 1: the kept units' excess change over the seed floor vs the units after them


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """A claim judged: its name, the rule in words, the numbers the rule used, the verdict,
    the verdict of a second rule beside it with that rule in words (claim 3), and whether
    the run met the premise (metrics/premise.json's ``met``; None when not measured)."""

    claim: str
    rule: str
    evidence: str
    verdict: str
    second_rule: str = ""
    second_verdict: str = ""
    premise_met: bool | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _count(n_ok: int, n: int) -> str:
    return REPRODUCED if n_ok == n else (PARTLY if 2 * n_ok >= n else NOT_REPRODUCED)


def verdict(n_ok: int, n: int, n_noise: int = 0) -> str:
    """The verdict over ``n`` judged cases of which ``n_ok`` pass and ``n_noise`` are within
    noise: the count's verdict when it is the same whether the noisy cases all pass or all
    fail, else :data:`WITHIN_NOISE`."""
    if n == 0:
        return NOT_MEASURED
    low, high = _count(n_ok, n), _count(n_ok + n_noise, n)
    return low if low == high else WITHIN_NOISE


def signed_pp(x: float | np.floating) -> str:
    """Signed percentage points, one decimal, without a negative zero."""
    v = round(100 * float(x), 1)
    return f"{v + 0.0:+.1f}"


# ----------------------------------------------------------------------------- margins and noise

PASS, FAIL, NOISY = "pass", "fail", "within noise"


@dataclasses.dataclass(frozen=True)
class Margin:
    """One condition of a case: ``value`` ≥ 0 holds; ``std``: its seed std (None: under two
    seeds); ``pp``: in accuracy units (shown in pp) rather than a plain number."""

    value: float
    std: float | None = None
    pp: bool = True

    @property
    def noisy(self) -> bool:
        return self.std is not None and abs(self.value) < NOISE * self.std

    def text(self) -> str:
        if self.pp:
            return f"margin {100 * self.value + 0.0:+.2f} pp, seed std {100 * (self.std or 0.0):.2f} pp"
        return f"margin {self.value:+.3f}, seed std {self.std or 0.0:.3f}"


def outcome(margins: Sequence[Margin]) -> str:
    """:data:`FAIL` if one condition fails outside the noise, :data:`PASS` if all hold
    outside it, else :data:`NOISY`."""
    if any(m.value < 0 and not m.noisy for m in margins):
        return FAIL
    return NOISY if any(m.noisy for m in margins) else PASS


def margins_on(m: RunMetrics, fn: Callable[[RunMetrics], Sequence[float] | None],
               pp: bool = True) -> list[Margin] | None:
    """``fn`` (a case's margins) on ``m``, each with its std over ``m.seeds`` (the seeds on
    which ``fn`` is measured; None under two); None when ``fn`` is not measured on ``m``."""
    base = fn(m)
    if base is None:
        return None
    per_seed = [v for v in (fn(s) for s in m.seeds) if v is not None and len(v) == len(base)]
    return [Margin(float(b), float(np.std([v[i] for v in per_seed], ddof=1)) if len(per_seed) > 1 else None, pp)
            for i, b in enumerate(base)]


class Tally:
    """The cases of one rule: their outcomes, their numbers, the ones it left out."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.evidence: list[str] = []
        self.dropped: list[str] = []
        self.unmeasured: list[str] = []
        self.shown = 0  # cases shown and, by the rule, never judged (a far-domain target)

    def show(self, text: str) -> None:
        self.evidence.append(text)
        self.shown += 1

    def add(self, text: str, margins: Sequence[Margin]) -> str:
        o = outcome(margins)
        self.outcomes.append(o)
        noisy = [x.text() for x in margins if x.noisy]
        self.evidence.append(text + (f" (within noise: {'; '.join(noisy)})" if o == NOISY else ""))
        return o

    def verdict(self) -> str:
        if not self.outcomes:
            return NOT_JUDGED if self.dropped or self.shown else NOT_MEASURED
        return verdict(self.outcomes.count(PASS), len(self.outcomes), self.outcomes.count(NOISY))

    def numbers(self, dropped_why: str = f"θ_rob,c − θ_std RA gap < {100 * GAP:.0f} pp") -> str:
        parts = list(self.evidence)
        if self.dropped:
            parts.append(f"not judged ({dropped_why}): {', '.join(self.dropped)}")
        if self.unmeasured:
            parts.append(f"not measured: {', '.join(self.unmeasured)}")
        return "; ".join(parts) or "—"


def premise_met(m: RunMetrics) -> bool | None:
    """False when ``m`` or a seed it averages wrote metrics/premise.json with ``met`` false,
    True when every one that wrote it met it, None when none wrote it."""
    flags = [bool(p["met"]) for r in (m, *m.seeds) if (p := r.load_metrics("premise")) and "met" in p]
    return None if not flags else all(flags)


def _gap(m: RunMetrics, c: str) -> float | None:
    """θ_rob,c − θ_std RA on c."""
    s, r = m.ra("standard", c), m.ra(f"robust/{c}", c)
    return None if s is None or r is None else r - s


def _patch_gain(m: RunMetrics, c: str, prefix: str = "") -> float | None:
    """θ_std + RWS_c (α = 1) − θ_std RA on c (of the rows under ``prefix``)."""
    s, p = m.ra(f"{prefix}standard", c), m.ra(f"{prefix}patched/{c}/alpha=1", c)
    return None if s is None or p is None else p - s


# ----------------------------------------------------------------------------- claim 1

def shallow_layers(m: RunMetrics) -> ClaimResult:
    claim = "1. robustness lives in shallow layers"
    k = m.cfg.keep_units
    rule = (f"per corruption, each unit's relative change θ_rob,c − θ_std minus the seed floor (the same measure "
            f"between θ_std seeds 0 and 1): its mean over the {k} units the signature keeps (S) ≥ {SHALLOW:g} × "
            "its mean over the units after them, before the head (D), or ≥ 0 when D < 0")
    lc = m.load_metrics("layer_change")
    if not lc or "standard_seeds" not in lc:
        why = "—" if not lc else "no seed floor recorded (layer_change.json has no 'standard_seeds')"
        return ClaimResult(claim, rule, why, NOT_MEASURED, premise_met=premise_met(m))
    units = [i for i, u in enumerate(lc["units"]) if u != "head"]
    if not 0 < k < len(units):
        return ClaimResult(claim, rule, f"no unit after the {k} kept ones", NOT_MEASURED, premise_met=premise_met(m))

    def excess(r: RunMetrics, c: str) -> tuple[float, float] | None:
        d = r.load_metrics("layer_change")
        if not d or c not in d or "standard_seeds" not in d:
            return None
        ex = [(d[c][i] or 0.0) - (d["standard_seeds"][i] or 0.0) for i in units]
        return float(np.mean(ex[:k])), float(np.mean(ex[k:]))

    def margins(r: RunMetrics, c: str) -> list[float] | None:
        e = excess(r, c)
        return None if e is None else [e[0] - SHALLOW * max(e[1], 0.0)]

    t = Tally()
    for c in m.cfg.corruptions:
        e = excess(m, c)
        mg = margins_on(m, functools.partial(margins, c=c), pp=False)
        if e is None or mg is None:
            t.unmeasured.append(c)
            continue
        t.add(f"{c} S {e[0]:.3f}, D {e[1]:.3f}", mg)
    return ClaimResult(claim, rule, t.numbers(), t.verdict(), premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 2

def discriminative(m: RunMetrics) -> ClaimResult:
    claim = "2. RWSs are discriminative"
    rule = ("per corruption: each two seeds' RWSs of it are nearer (cosine) to each other than either is to any "
            "RWS of another corruption (the margin averaged over its seed pairs, its seed std over the pairs); "
            f"a corruption whose θ_rob,c gains < {100 * GAP:.0f} pp RA over θ_std is shown, not judged")
    sim = m.load_metrics("similarity")
    t = Tally()
    if not sim:
        return ClaimResult(claim, rule, "—", NOT_MEASURED, premise_met=premise_met(m))
    names, cos = sim["names"], np.asarray(sim["cosine"])
    ds = m.cfg.dataset
    base = [nm.split(" (")[0] for nm in names]
    main = [i for i, nm in enumerate(names) if nm.startswith(f"{ds}:")]
    for c in m.cfg.corruptions:
        reps = [i for i in main if base[i] == f"{ds}:{c}" and "(seed" in names[i]]
        others = [j for j in main if base[j] != f"{ds}:{c}"]
        gap = _gap(m, c)
        if len(reps) < 2 or not others or gap is None:
            t.unmeasured.append(c)
            continue
        pairs = list(itertools.combinations(reps, 2))
        same = [float(cos[i, j]) for i, j in pairs]
        across = [max(float(cos[a, o]) for a in (i, j) for o in others) for i, j in pairs]
        text = f"{c} {np.mean(same):.2f} vs {max(across):.2f} across"
        if gap < GAP:
            t.dropped.append(text)
            continue
        diffs = [s - a for s, a in zip(same, across)]
        t.add(text, [Margin(float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None, False)])
    return ClaimResult(claim, rule, t.numbers(), t.verdict(), premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 3

def patch_recovers(m: RunMetrics) -> ClaimResult:
    claim = "3. a patch recovers robustness"
    rule = ("θ_std + RWS_c (α = 1) closes ≥ 80% of the RA gap θ_rob,c − θ_std at a TA cost (vs θ_std) ≤ θ_rob,c's "
            f"own TA cost + 1 pp, per corruption with a gap ≥ {100 * GAP:.0f} pp")
    second = "the same, with a TA cost ≤ 1 pp against θ_std (the rule before this change)"

    def margins(r: RunMetrics, c: str, against: str) -> list[float] | None:
        s, rr, p = r.ra("standard", c), r.ra(f"robust/{c}", c), r.ra(f"patched/{c}/alpha=1", c)
        ta_ref, ta_p = r.ta(against.format(c=c)), r.ta(f"patched/{c}/alpha=1")
        if s is None or rr is None or p is None or ta_ref is None or ta_p is None:
            return None
        return [(p - s) - 0.8 * (rr - s), 0.01 - (ta_ref - ta_p)]  # RA above 80% of the way; TA cost slack

    first, other = Tally(), Tally()
    for c in m.cfg.corruptions:
        mg = margins_on(m, functools.partial(margins, c=c, against="robust/{c}"))
        mg2 = margins_on(m, functools.partial(margins, c=c, against="standard"))
        gap = _gap(m, c)
        if mg is None or mg2 is None or gap is None:
            first.unmeasured.append(c)
            other.unmeasured.append(c)
            continue
        if gap < GAP:
            first.dropped.append(c)
            other.dropped.append(c)
            continue
        closed = (m.ra(f"patched/{c}/alpha=1", c) - m.ra("standard", c)) / gap  # type: ignore[operator]
        ta_p = m.ta(f"patched/{c}/alpha=1")
        text = (f"{c}: {100 * closed:.0f}% closed, TA {signed_pp(ta_p - m.ta(f'robust/{c}'))} pp vs θ_rob,c, "  # type: ignore[operator]
                f"{signed_pp(ta_p - m.ta('standard'))} pp vs θ_std")  # type: ignore[operator]
        first.add(text, mg)
        other.add(text, mg2)
    return ClaimResult(claim, rule, first.numbers(), first.verdict(), second_rule=second,
                       second_verdict=other.verdict(), premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 4

def alpha_scales(m: RunMetrics) -> ClaimResult:
    claim = "4. α scales robustness"
    alphas = sorted({float(k.rsplit("=", 1)[1]) for k in m.accuracies if k.startswith("patched/") and "/alpha=" in k})
    grid = [a for a in alphas if a <= 1]
    rule = (f"RA rises by ≥ 2 pp from α = 0 to α = 1 and never falls by > 1 pp between neighbouring α "
            f"(α = {', '.join(f'{a:g}' for a in grid)}), per corruption with a θ_rob,c − θ_std RA gap ≥ "
            f"{100 * GAP:.0f} pp")

    def margins(r: RunMetrics, c: str) -> list[float] | None:
        seq = [r.ra(f"patched/{c}/alpha={a:g}", c) for a in grid]
        if len(seq) < 3 or not all_measured(seq) or 0.0 not in grid or 1.0 not in grid:
            return None
        return [seq[-1] - seq[0] - 0.02, min(b - a for a, b in zip(seq, seq[1:])) + 0.01]

    t = Tally()
    for c in m.cfg.corruptions:
        mg, gap = margins_on(m, functools.partial(margins, c=c)), _gap(m, c)
        if mg is None or gap is None:
            t.unmeasured.append(c)
            continue
        if gap < GAP:
            t.dropped.append(c)
            continue
        t.add(f"{c}: " + "→".join(f"{100 * m.ra(f'patched/{c}/alpha={a:g}', c):.0f}" for a in grid), mg)  # type: ignore[operator]
    return ClaimResult(claim, rule, t.numbers(), t.verdict(), premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 5

def composed_sums(m: RunMetrics) -> list[list[str]]:
    """The sums of signatures the run measured (accuracy variants ``composed/<c1>+<c2>[+<c3>]``)."""
    cs = list(m.cfg.corruptions)
    sums = [k.split("/", 1)[1].split("+") for k in m.accuracies if k.startswith("composed/")]
    sums = [s for s in sums if len(s) >= 2 and all(c in cs for c in s)]
    return sorted(sums, key=lambda s: (len(s), [cs.index(c) for c in s]))


def signatures_compose(m: RunMetrics) -> ClaimResult:
    claim = "5. signatures compose"
    rule = ("each sum of 2 or 3 RWSs (α = 1 each): every constituent whose single patch gains ≥ "
            f"{100 * GAP:.0f} pp RA keeps ≥ 50% of that gain on its own corruption, at a TA cost ≤ the worst "
            "constituent's single-patch TA cost + 1 pp; the average of all N is shown beside its linear "
            "expectation (1/N of each single gain), not judged")

    def margins(r: RunMetrics, s: list[str], judged: list[str]) -> list[float] | None:
        key = "composed/" + "+".join(s)
        ta_s, ta_x = r.ta("standard"), r.ta(key)
        ra = [r.ra(key, c) for c in judged]
        std = [r.ra("standard", c) for c in judged]
        gains = [_patch_gain(r, c) for c in judged]
        costs = [None if ta_s is None or (t := r.ta(f"patched/{c}/alpha=1")) is None else ta_s - t for c in s]
        if ta_s is None or ta_x is None or not (all_measured(ra) and all_measured(std) and all_measured(gains)
                                                and all_measured(costs)):
            return None
        keep = [(a - b) - 0.5 * g for a, b, g in zip(ra, std, gains)]
        return [*keep, max(costs) + 0.01 - (ta_s - ta_x)]

    t = Tally()
    for s in composed_sums(m):
        name = "+".join(s)
        gains = {c: _patch_gain(m, c) for c in s}
        judged = [c for c in s if (g := gains[c]) is not None and g >= GAP]
        mg = margins_on(m, functools.partial(margins, s=s, judged=judged))
        if mg is None:
            t.unmeasured.append(name)
            continue
        if not judged:
            t.dropped.append(name)
            continue
        kept = ", ".join(f"{c} {100 * (m.ra('composed/' + name, c) - m.ra('standard', c)) / gains[c]:.0f}%"  # type: ignore[operator]
                         for c in judged)
        worst = max(m.ta("standard") - m.ta(f"patched/{c}/alpha=1") for c in s)  # type: ignore[operator]
        t.add(f"{name}: keeps {kept} of the single gain, TA {signed_pp(m.ta('composed/' + name) - m.ta('standard'))} pp "  # type: ignore[operator]
              f"(worst single {signed_pp(-worst)} pp)", mg)
    cs = list(m.cfg.corruptions)
    avg = [m.ra("composed_average", c) for c in cs]
    std = [m.ra("standard", c) for c in cs]
    single = [_patch_gain(m, c) for c in cs]
    shown = ""
    if all_measured(avg) and all_measured(std) and all_measured(single):
        shown = (f"average of all {len(cs)} (shown, not judged): mean RA gain "
                 f"{signed_pp(np.mean(avg) - np.mean(std))} pp, linear expectation {signed_pp(np.mean(single) / len(cs))} pp")
    numbers = "; ".join(x for x in (t.numbers("no constituent's single patch gains ≥ 2 pp RA"), shown) if x != "—")
    return ClaimResult(claim, rule, numbers or "—", t.verdict(), premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 6

def signatures_transfer(m: RunMetrics) -> ClaimResult:
    claim = "6. signatures transfer"
    rule = ("per target of the paper (an updated backbone; another task fine-tuned from the same θ_init): the "
            "source's RWSs give it ≥ 50% of the mean RA gain they give the source model, at a TA cost ≤ the source "
            f"patch's TA cost + 1 pp; judged when the source gain is ≥ {100 * GAP:.0f} pp; a far-domain target is "
            "shown, not judged")

    def target(r: RunMetrics, tgt: str) -> tuple[list[str], float, float, float] | None:
        """The corruptions the target measured, its RA gain, its TA cost and its RA before."""
        cs = [c for c in r.cfg.corruptions if r.ra(f"{tgt}/standard", c) is not None
              and r.ra(f"{tgt}/patched/{c}", c) is not None]
        ra, rp = [r.ra(f"{tgt}/standard", c) for c in cs], [r.ra(f"{tgt}/patched/{c}", c) for c in cs]
        ta, tp = r.ta(f"{tgt}/standard"), [r.ta(f"{tgt}/patched/{c}") for c in cs]
        if not cs or ta is None or not (all_measured(ra) and all_measured(rp) and all_measured(tp)):
            return None
        return cs, float(np.mean(rp) - np.mean(ra)), float(ta - np.mean(tp)), float(np.mean(ra))

    def source(r: RunMetrics, src: str, cs: list[str]) -> tuple[float, float] | None:
        """The source patch's mean RA gain and TA cost over ``cs``."""
        ra, rp = [r.ra(f"{src}standard", c) for c in cs], [r.ra(f"{src}patched/{c}/alpha=1", c) for c in cs]
        ta, tp = r.ta(f"{src}standard"), [r.ta(f"{src}patched/{c}/alpha=1") for c in cs]
        if ta is None or not (all_measured(ra) and all_measured(rp) and all_measured(tp)):
            return None
        return float(np.mean(rp) - np.mean(ra)), float(ta - np.mean(tp))

    def margins(r: RunMetrics, tgt: str, src: str) -> list[float] | None:
        x = target(r, tgt)
        y = None if x is None else source(r, src, x[0])
        return None if x is None or y is None else [x[1] - 0.5 * y[0], y[1] + 0.01 - x[2]]

    t = Tally()
    for tgt, label, judged in m.transfer_targets:
        src = m.transfer_sources.get(tgt, "")
        x = target(m, tgt)
        if x is None:
            if m.accuracies.get(f"{tgt}/standard"):
                t.unmeasured.append(label)
            continue
        cs, gain, cost, before = x
        text = f"{label}: {100 * before:.1f} → {100 * (before + gain):.1f} ({signed_pp(gain)} pp, TA {signed_pp(-cost)} pp"
        y = None if src is None else source(m, src, cs)
        if not judged:
            t.show(text.replace(":", " (beyond the paper, not judged):", 1) + ")")
        elif src is None or y is None:
            t.unmeasured.append(text + "; the source's own patch not measured)")
        elif y[0] < GAP:
            t.dropped.append(text + f"; source {signed_pp(y[0])} pp)")
        else:
            t.add(text + f"; source {signed_pp(y[0])} pp, TA {signed_pp(-y[1])} pp)",
                  margins_on(m, functools.partial(margins, tgt=tgt, src=src)) or [])
    return ClaimResult(claim, rule, t.numbers(f"the source patch gains < {100 * GAP:.0f} pp RA"), t.verdict(),
                       premise_met=premise_met(m))


# ----------------------------------------------------------------------------- claim 7

def quantization_lossless(m: RunMetrics) -> ClaimResult:
    claim = "7. quantized signatures lose almost nothing"
    rule = (f"over the corruptions whose fp32 patch gains ≥ {100 * GAP:.0f} pp RA over θ_std, the 8-bit and 4-bit "
            "RWSs lose ≤ 1 pp of the fp32 patch's mean RA and ≤ 1 pp of its mean TA")
    cs = list(m.cfg.corruptions)

    def eligible(r: RunMetrics) -> list[str]:
        return [c for c in cs if (g := _patch_gain(r, c)) is not None and g >= GAP]

    def margins(r: RunMetrics, b: int, use: list[str]) -> list[float] | None:
        vals = [[r.ra(f"patched_q{b}/{c}", c) for c in use], [r.ra(f"patched/{c}/alpha=1", c) for c in use],
                [r.ta(f"patched_q{b}/{c}") for c in use], [r.ta(f"patched/{c}/alpha=1") for c in use]]
        if not use or not all(all_measured(v) for v in vals):
            return None
        q_ra, f_ra, q_ta, f_ta = (float(np.mean(v)) for v in vals)  # type: ignore[arg-type]
        return [q_ra - f_ra + 0.01, q_ta - f_ta + 0.01]

    t = Tally()
    use = eligible(m)
    for b in (8, 4):
        if margins(m, b, cs) is None:  # the bit width was not measured on every corruption
            continue
        if not use:
            t.dropped.append(f"{b}-bit")
            continue
        mg = margins_on(m, functools.partial(margins, b=b, use=use))
        assert mg is not None, "measured on every corruption"
        t.add(f"{b}-bit: RA {signed_pp(mg[0].value - 0.01)} pp, TA {signed_pp(mg[1].value - 0.01)} pp", mg)
    if t.outcomes:
        t.evidence.insert(0, f"over {', '.join(use)}")
    st = m.load_metrics("storage")
    if st and (t.outcomes or t.dropped):
        t.evidence.append("files " + ", ".join(f"{r['ratio']:.1f}× ({r['bits']} bit)" for r in st["rows"])
                          + " smaller than the model")
    return ClaimResult(claim, rule, t.numbers(f"no fp32 patch gains ≥ {100 * GAP:.0f} pp RA"), t.verdict(),
                       premise_met=premise_met(m))


CLAIMS = (shallow_layers, discriminative, patch_recovers, alpha_scales, signatures_compose, signatures_transfer,
          quantization_lossless)


def claim_verdicts(m: RunMetrics) -> list[dict]:
    """Every claim of :data:`CLAIMS` judged on ``m``: a list of dicts with ``claim``,
    ``rule`` (in words), ``evidence`` (the numbers the rule used), ``verdict``, for a claim
    with a second rule ``second_rule`` and ``second_verdict`` (else empty), and
    ``premise_met`` (False: the run's premise was measured and not met)."""
    return [rule(m).as_dict() for rule in CLAIMS]
