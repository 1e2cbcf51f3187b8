"""Markdown tables written from a run's metrics (:class:`RunMetrics`), shared by the run
report and the study report: the claims with their rules, beside the rules before this
change and each seed's verdict; the mechanism diagnostics; transfer per target and per
corruption; and what the α searches did."""

from __future__ import annotations

from typing import Callable

import numpy as np

from rws_jax.pipeline.claims import claim_verdicts
from rws_jax.pipeline.claims_before import claim_verdicts_before
from rws_jax.pipeline.run_metrics import RunMetrics, all_measured


def pct(x) -> str:
    """An accuracy in percent with one decimal (``–`` when missing)."""
    return "–" if x is None else f"{100 * x:.1f}"


def fixed(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals (``–`` when missing)."""
    return "–" if x is None else f"{x:.{digits}f}"


PREMISE_NOT_MET = " (premise not met)"


def marked(text: str, row: dict) -> str:
    """``text`` (a verdict) marked when the row's run did not meet the premise."""
    return text + (PREMISE_NOT_MET if row.get("premise_met") is False else "")


def verdict_cell(row: dict) -> str:
    """A claim row's verdict in bold, marked when its run did not meet the premise."""
    return marked(f"**{row['verdict']}**", row)


def second_rule_cell(row: dict) -> str:
    """A claim row's second rule and its verdict (``–`` for a claim without one)."""
    return marked(f"{row['second_rule']}: **{row['second_verdict']}**", row) if row.get("second_rule") else "–"


def both_verdicts(row: dict) -> str:
    """A claim row's verdict, and its second rule's after a slash, marked as :func:`marked`."""
    return marked(row["verdict"] + (f" / {row['second_verdict']}" if row.get("second_rule") else ""), row)


def before_cells(rows: list[dict], before: list[dict]) -> dict[str, list[str]]:
    """The column of the verdicts the rules before this change give (``before``, rows of
    :func:`rws_jax.pipeline.claims_before.claim_verdicts_before`), marked by the premise of
    ``rows``' runs."""
    return {"rules before this change: verdict": [both_verdicts({**b, "premise_met": r.get("premise_met")})
                                                   for r, b in zip(rows, before)]}


VERDICT_KEY = ("All cases pass: reproduced; at least half: partly; fewer: not reproduced; within noise: the cases "
               "whose margin is smaller than twice its seed std could move the verdict either way; not judged: "
               "measured, but no case qualifies (docs/design.md, \"The claim rules and the paper's words\").")


def kept_mean(mech: dict, c: str, key: str) -> float | None:
    """Mean of ``metrics/mechanism.json``'s per-unit ``key`` (``'cos'``, ``'removed'``,
    ``'robust_change'``) of corruption ``c`` over the units the signatures keep."""
    if c not in mech["corruptions"]:
        return None
    kept = set(mech["kept"])
    v = [x for u, x in zip(mech["units"], mech["corruptions"][c][key]) if u in kept and x is not None]
    return float(np.mean(v)) if v else None


def claims_table(rows: list[dict], extra: dict[str, list[str]] | None = None) -> list[str]:
    """``| claim | rule | numbers | verdict | second rule |`` plus ``extra`` columns
    (``{header: one cell per row}``)."""
    extra = extra or {}
    head = ["claim", "rule", "numbers", "verdict", "second rule: verdict", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        cells = [r["claim"], r["rule"], r["evidence"], verdict_cell(r), second_rule_cell(r),
                 *(col[i] for col in extra.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SHORT = {"reproduced": "yes", "partly": "partly", "not reproduced": "no", "not measured": "–",
         "not judged": "not judged", "within noise": "within noise"}


def per_seed_cells(runs: list[RunMetrics], rules: Callable[[RunMetrics], list[dict]] = claim_verdicts) -> list[str]:
    """Per claim, each seed's own verdict (``yes / no / –``...), marked when a seed did not
    meet the premise."""
    per_seed = [rules(r) for r in runs]
    return [" / ".join(marked(SHORT[p[i]["verdict"]], p[i]) for p in per_seed) for i in range(len(per_seed[0]))]


def study_claims_table(rows: list[dict], runs: list[RunMetrics], before: list[dict]) -> list[str]:
    """The claims judged on the study (``rows``: :func:`study_verdicts`) with the verdicts of
    the rules before this change (``before``) and each seed's own, then those earlier rules'
    table."""
    return [f"{VERDICT_KEY} Claims 1–3 are judged on the means over the {len(runs)} seeds; claims 4–7 on the "
            "mean over the seeds that measured them (today seed 0 alone, so without a seed std; claim 6 adds the "
            "same-domain pair). \"per seed\" judges each seed alone by the same rule (– = that seed did not "
            "measure it).", "",
            *claims_table(rows, {**before_cells(rows, before), "judged on": [r["basis"] for r in rows],
                                 "per seed": per_seed_cells(runs)}), "",
            "### The same claims by the rules before this change", "",
            "The rules these replaced (`rws_jax/pipeline/claims_before.py`), on the same metrics and basis, with the "
            "numbers they read:", "",
            *claims_table(before, {"judged on": [r["basis"] for r in before],
                                   "per seed": per_seed_cells(runs, claim_verdicts_before)})]


def mechanism_tables(m: RunMetrics) -> list[str]:
    """How much the projection removes, and each patch's TA beside its robust model's."""
    mech = m.load_metrics("mechanism")
    if not mech:
        return []
    units, kept = mech["units"], set(mech["kept"])
    lines = ["Per corruption, over the units the signatures keep (mean over units): cos(Δ_c, a) with "
             "Δ_c = θ_rob,c − θ_init and a = θ_std − θ_init, and the share ‖proj‖/‖Δ_c‖ of Δ_c that the "
             "projection removes (0: RWS_c = Δ_c). Beside them, each patch's clean accuracy next to its robust "
             "model's: a patch that removes little of Δ_c carries θ_rob,c's TA with it.", "",
             "| corruption | mean cos(Δ_c, a) | share removed | ‖Δ_c‖/‖θ_init‖ | TA θ_std | TA θ_rob,c | "
             "TA θ_std + RWS_c |", "|---|---|---|---|---|---|---|"]
    for c in mech["corruptions"]:
        means = " | ".join(fixed(kept_mean(mech, c, key)) for key in ("cos", "removed", "robust_change"))
        lines.append(f"| {c} | {means} | {pct(m.ta('standard'))} | {pct(m.ta(f'robust/{c}'))} | "
                     f"{pct(m.ta(f'patched/{c}/alpha=1'))} |")
    cs = list(mech["corruptions"])
    lines += ["", "Per unit (kept units marked *): ‖a‖/‖θ_init‖, then cos(Δ_c, a) / share removed per corruption.", "",
              "| unit | ‖a‖/‖θ_init‖ | " + " | ".join(cs) + " |", "|---|---|" + "---|" * len(cs)]
    for i, u in enumerate(units):
        a = mech["clean_change"][i]
        cells = []
        for c in cs:
            cos, rem = mech["corruptions"][c]["cos"][i], mech["corruptions"][c]["removed"][i]
            cells.append("–" if cos is None else f"{cos:.2f} / {rem:.2f}")
        lines.append(f"| {u}{' *' if u in kept else ''} | {fixed(a)} | " + " | ".join(cells) + " |")
    return lines


def transfer_by_corruption(m: RunMetrics) -> list[str]:
    """Per transfer target and corruption: the target's θ_std RA, patched with the source
    RWS_c, its own θ_rob,c, and the share of its own robust gap the patch closes."""
    rows = []
    for tgt, label, judged in m.transfer_targets:
        for c in m.cfg.corruptions:
            s, p = m.ra(f"{tgt}/standard", c), m.ra(f"{tgt}/patched/{c}", c)
            if s is None or p is None:
                continue
            r = m.ra(f"{tgt}/robust/{c}", c)
            share = "–" if r is None or r - s < 0.005 else f"{100 * (p - s) / (r - s):.0f}%"
            rows.append(f"| {label}{'' if judged else ' (beyond the paper)'} | {c} | {pct(s)} | {pct(p)} | "
                        f"{pct(r)} | {share} |")
    if not rows:
        return []
    return ["| target | corruption | RA θ_std | RA θ_std + source RWS_c | RA own θ_rob,c | share of own gap closed |",
            "|---|---|---|---|---|---|", *rows]


def transfer_rows(mean_run: RunMetrics) -> list[dict]:
    """Per transfer target: mean TA/RA of its θ_std, patched with the source RWSs, and of
    its own robust models (the far/same-domain pairs train those; the updated backbone
    does not)."""
    acc, cs = mean_run.accuracies, list(mean_run.cfg.corruptions)
    rows = []
    for tgt, label, _ in mean_run.transfer_targets:
        if f"{tgt}/standard" not in acc:
            continue

        # the corruptions this target measured (a transfer run may use fewer)
        cs_t = [c for c in cs if acc.get(f"{tgt}/standard", {}).get(c) is not None]

        def mean(key, test, tgt=tgt, cs_t=cs_t):
            v = [acc.get(key.format(t=tgt, c=c), {}).get(test.format(c=c)) for c in cs_t]
            return None if not v or not all_measured(v) else float(np.mean(v))

        rows.append({"target": label, "ta": mean("{t}/standard", "clean"), "ta_patched": mean("{t}/patched/{c}", "clean"),
                     "ra": mean("{t}/standard", "{c}"), "ra_patched": mean("{t}/patched/{c}", "{c}"),
                     "ra_robust": mean("{t}/robust/{c}", "{c}")})
    return rows


def transfer_table(mean_run: RunMetrics) -> list[str]:
    lines = ["| target of the source RWSs | TA | TA patched | mean RA | mean RA patched | RA gain | "
             "mean RA of its own robust models | share of that gap closed |", "|---|---|---|---|---|---|---|---|"]
    for r in transfer_rows(mean_run):
        gain = None if r["ra_patched"] is None else r["ra_patched"] - r["ra"]
        closed = ("–" if r["ra_robust"] is None or gain is None or r["ra_robust"] - r["ra"] < 0.005
                  else f"{100 * gain / (r['ra_robust'] - r['ra']):.0f}%")
        lines.append(f"| {r['target']} | {pct(r['ta'])} | {pct(r['ta_patched'])} | {pct(r['ra'])} | "
                     f"{pct(r['ra_patched'])} | {'–' if gain is None else f'{100 * gain:+.1f} pp'} | "
                     f"{pct(r['ra_robust'])} | {closed} |")
    return lines


def alpha_search_note(m: RunMetrics) -> str | None:
    """Says which α searches ran out of their budget (None when none did or none ran)."""
    found = m.load_metrics("alpha_search")
    if not found:
        return None
    spent = [f"{c} (alone)" for c, rec in found.get("single", {}).items() if rec.get("exhausted")]
    spent += [f"the set ({method})" for method, rec in found.get("set", {}).items() if rec.get("exhausted")]
    if not spent:
        return (f"Every α search finished within its budget ({found.get('budget')} validation evaluations): the "
                "coordinate ascent stopped on a full round without improvement.")
    return (f"The α search ran out of its budget ({found.get('budget')} validation evaluations) for: "
            f"{', '.join(spent)}; those α are the best found, not a converged choice.")
