"""The stages of an end-to-end RWS run, in order. Each is a function of the run's parts it
reads (:mod:`rws_jax.pipeline.run`) that returns what it computed; the ones that measure
write ``metrics/<name>.json`` (:mod:`rws_jax.pipeline.metrics_files`). Every model,
signature and accuracy is cached on disk, so rerunning a stage loads what is done.

:data:`STAGES` names them for ``rws-jax stage NAME`` and :func:`run_stages` runs them all.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import rws_jax as rws
from rws_jax.models import unit_order
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.evaluation import Evaluator
from rws_jax.pipeline.metrics_files import read_metrics, write_metrics
from rws_jax.pipeline.model_store import ModelStore, check_init_source, train_config
from rws_jax.pipeline.premise import premise_between_seeds, premise_robust
from rws_jax.pipeline.presets import REFERENCE_FINETUNE, REFERENCE_FINETUNE_STEPS, SEEDS
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.run_data import RunData, check_corrupted_test_data
from rws_jax.pipeline.run_dir import run_path
from rws_jax.pipeline.run_patching import RunPatcher
from rws_jax.pipeline.signature_store import SignatureStore
from rws_jax.linear_probe import linear_probe
from rws_jax.training import weight_decay_shrink
from rws_jax.training.augment import normalize_images

Variables = dict[str, Any]
Log = Callable[[str], None]


# ------------------------------------------------------------------------------ facts

def run_facts(data: RunData, signatures: SignatureStore, patcher: RunPatcher) -> dict:
    """What the reports say about the run's set-up (metrics/run_facts.json): images per split,
    the units the signatures keep, whether the model has BatchNorm and how patching treats
    it. Nothing is trained."""
    return {"data": data.sizes(), "units_kept": signatures.kept_units(),
            "has_batch_norm": patcher.has_batch_norm, "bn_mode": patcher.bn_mode,
            "shrink": recipe_shrink(data.cfg, len(data.halves[1]))}


def recipe_shrink(cfg: PipelineConfig, examples: int) -> dict:
    """The factor by which weight decay alone shrinks every weight over the fine-tune
    (:func:`rws_jax.training.weight_decay_shrink`), for this run's recipe on its ``examples``
    fine-tuning images, and for the reference's (SGD lr 0.01 ×0.1 at 40% and 80%, momentum 0.9,
    weight decay 5e-4, 50 epochs of 391 steps: 19,550 steps)."""
    ours = train_config(cfg, "finetune")
    return {"finetune": weight_decay_shrink(ours, num_examples=int(examples)),
            "finetune_steps": int(examples) // int(ours.batch_size) * int(ours.epochs),
            "reference": weight_decay_shrink(REFERENCE_FINETUNE, num_steps=REFERENCE_FINETUNE_STEPS),
            "reference_steps": REFERENCE_FINETUNE_STEPS}


# --------------------------------------------------------------------------- training

def pretrain_init(models: ModelStore) -> Variables:
    """θ_init (trained, imported or another run's, as the config says)."""
    return models.theta_init


def probe_init(cfg: PipelineConfig, models: ModelStore, data: RunData) -> dict:
    """θ_init's quality: a linear probe of its frozen penultimate features (logistic regression
    fitted on the fine-tuning split, scored on the test split; inputs normalised as the
    fine-tune sees them), beside the same probe of a randomly initialised network."""
    tc = train_config(cfg, "finetune")
    fine, test = data.halves[1], data.main.test
    model = models.model
    random_init = model.init(jax.random.key(cfg.seed + SEEDS.probe),
                             jnp.zeros((1, *data.main.image_shape), jnp.float32), train=False)
    out = {}
    for name, variables in (("theta_init", models.theta_init), ("random_init", random_init)):
        res = linear_probe(model, variables, (fine.images, fine.labels), (test.images, test.labels),
                           preprocess=lambda x: normalize_images(x, tc.mean, tc.std))
        out[name] = dataclasses.asdict(res)
    return out


def finetune_standard(models: ModelStore, *, seeds: int = 1) -> Variables:
    """θ_std, fine-tuned from θ_init on clean data, and with ``seeds`` = 2 a second θ_std
    (another training seed: the premise's and claim 1's seed-noise reference)."""
    for r in range(1, seeds):
        models.standard(r)
    return models.standard()


def finetune_robust(models: ModelStore, corruptions: list[str], *, replicates: int = 1, mixture: bool = False,
                    log: Log = print) -> None:
    """θ_rob,c for each corruption (``replicates`` seeds each) and, with ``mixture``, the model
    fine-tuned on a mixture of all corruptions (the data-augmentation baseline)."""
    for c in corruptions:
        log(f"[finetune-robust] θ_rob,{c}")
        for r in range(replicates):
            models.robust(c, r)
    if mixture:
        log("[finetune-robust] mixture of all corruptions (data-augmentation baseline)")
        models.mixture()


def finetune_transfer(cfg: PipelineConfig, models: ModelStore, log: Log = print) -> None:
    """The transfer dataset's standard and robust models (same θ_init), and the updated
    backbone's standard model."""
    if cfg.transfer_dataset is not None:
        log(f"[finetune-transfer] {cfg.transfer_dataset}: standard and robust models from the same θ_init")
        models.transfer(None)
        for c in cfg.corruptions:
            models.transfer(c)
    if cfg.update_backbone_epochs:
        log("[finetune-transfer] updated backbone and its standard model")
        models.standard_updated()


# ------------------------------------------------------------------------- signatures

def extract_signatures(cfg: PipelineConfig, signatures: SignatureStore) -> dict[str, rws.Signature]:
    """RWS_c of every corruption (and replicate, and of the transfer dataset's models), by file name."""
    out = {}
    for c in cfg.corruptions:
        for r in range(cfg.robust_replicates):
            out[signatures.path(c, replicate=r).name] = signatures.signature(c, replicate=r)
        if cfg.transfer_dataset is not None:
            out["transfer/" + signatures.path(c, transfer=True).name] = signatures.signature(c, transfer=True)
    return out


def quantize_signatures(signatures: SignatureStore, corruptions: list[str], bits: list[int],
                        log: Log = print) -> dict[str, rws.Signature]:
    """RWS_c quantized to each bit width, by file name."""
    out = {}
    for b in bits:
        log(f"[quantize-signatures] {b}-bit signatures")
        for c in corruptions:
            out[signatures.path(c, b).name] = signatures.quantized(c, b)
    return out


def signature_cosines(sigs: list) -> list[list[float]]:
    """``[K][K]`` cosine similarity of the signatures' flattened kept tensors."""
    vecs = [jnp.concatenate([jnp.ravel(s.deltas[p]) for p in sorted(s.deltas)]) for s in sigs]
    return [[float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)) for b in vecs] for a in vecs]


# ---------------------------------------------------------------------- measurements

def weight_statistics(cfg: PipelineConfig, models: ModelStore, signatures: SignatureStore) -> dict[str, dict]:
    """Claims 1 and 2: ``{'layer_change': ..., 'mechanism': ..., 'similarity': ...}``, the
    layer-wise relative change, the projection at work (:func:`mechanism`) and the cosine
    similarity of the signatures."""
    order = [*unit_order(models.model), "head"]
    std = models.standard()
    change = {"units": order, "standard_vs_init": _ordered(rws.relative_change(models.theta_init, std), order)}
    for c in cfg.corruptions:
        change[c] = _ordered(rws.relative_change(std, models.robust(c)), order)
    if cfg.premise and cfg.premise_seeds:  # claim 1's seed-noise floor: the same measure between the θ_std seeds
        change["standard_seeds"] = _ordered(rws.relative_change(std, models.standard(1)), order)
    sigs = {f"{cfg.dataset}:{c}" + (f" (seed {r + 1})" if cfg.robust_replicates > 1 else ""):
            signatures.signature(c, replicate=r) for c in cfg.corruptions for r in range(cfg.robust_replicates)}
    if cfg.transfer_dataset is not None:
        sigs |= {f"{cfg.transfer_dataset}:{c}": signatures.signature(c, transfer=True) for c in cfg.corruptions}
    return {"layer_change": change, "mechanism": mechanism(cfg, models, signatures, order),
            "similarity": {"names": list(sigs), "cosine": signature_cosines(list(sigs.values()))}}


def mechanism(cfg: PipelineConfig, models: ModelStore, signatures: SignatureStore, order: list[str]) -> dict:
    """The projection at work, per unit in forward order: for each corruption c,
    cos(Δ_c, a) and the share ‖proj‖/‖Δ_c‖ the projection removes, and ‖Δ_c‖/‖θ_init‖; with
    a's own size ‖a‖/‖θ_init‖ (Δ_c = θ_rob,c − θ_init, a = θ_std − θ_init; see
    :func:`rws_jax.projection_diagnostics`). ``kept`` = the units the signatures keep."""
    std = models.standard()
    out: dict = {"units": order, "kept": signatures.selection.units(std)[: cfg.keep_units], "corruptions": {}}
    for c in cfg.corruptions:
        d = rws.projection_diagnostics(models.theta_init, std, models.robust(c), collections=cfg.collections)
        out["corruptions"][c] = {k: [d.get(u, {}).get(k) for u in order] for k in ("cos", "removed", "robust_change")}
        out.setdefault("clean_change", [d.get(u, {}).get("clean_change") for u in order])  # a: the same for every c
    return out


def _ordered(d: dict, order: list[str]) -> list[float | None]:
    return [d.get(u) for u in order]


def severity_sets(cfg: PipelineConfig, corruptions: list[str]) -> list[str]:
    """The test-set names ``'<c>@<s>'`` of ``cfg.eval_severities`` (the config's own
    severity is the plain name ``c``)."""
    return [f"{c}@{s}" for c in corruptions for s in cfg.eval_severities if s != cfg.severity]


def evaluate_models(cfg: PipelineConfig, models: ModelStore, signatures: SignatureStore, patcher: RunPatcher,
                    evaluator: Evaluator, log: Log = print) -> dict:
    """Claims 3–6: TA/RA of every model variant on the clean and corrupted test sets (standard,
    robust, mixture, patched at each α, quantized, composed, transfer); returns
    metrics/accuracy.json's table."""
    cs = list(cfg.corruptions)
    acc = evaluator.accuracy
    std = models.standard
    log("[evaluate-accuracy] standard, robust, mixture models")
    acc("standard", std, ["clean", *cs, *severity_sets(cfg, cs)])
    for c in cs:
        acc(f"robust/{c}", functools.partial(models.robust, c), ["clean", c, *severity_sets(cfg, [c])])
    if cfg.mixture:
        acc("mixture", models.mixture, ["clean", *cs])

    def patched(c: str, sig: rws.Signature, a: float) -> Variables:
        """θ_std + a·sig (the signature of corruption ``c``)."""
        return patcher.patched(std(), [c], sig, a)

    def patched_group(names: list[str], group_sigs: list) -> Variables:
        """θ_std + Σ RWS_c over ``names`` (α = 1 each)."""
        return patcher.patched(std(), names, group_sigs, 1.0)

    def patched_quantized(b: int, c: str) -> Variables:
        """θ_std + the ``b``-bit signature of ``c`` (α = 1)."""
        return patcher.patched(std(), [c], signatures.quantized(c, b), 1.0)

    log("[evaluate-accuracy] patched models (α sweep), quantized and composed signatures")
    for c in cs:
        sig = signatures.signature(c)
        for a in sorted(set(cfg.alphas) | {1.0}):
            acc(f"patched/{c}/alpha={a:g}", functools.partial(patched, c, sig, a),
                ["clean", c, *(severity_sets(cfg, [c]) if a == 1.0 else [])])
        for b in cfg.quant_bits:
            acc(f"patched_q{b}/{c}", functools.partial(patched_quantized, b, c), ["clean", c])
    sigs = [signatures.signature(c) for c in cs]
    if cfg.composition_rows:
        acc("composed", lambda: patcher.patched(std(), cs, sigs, 1.0), ["clean", *cs])
        acc("composed_average", lambda: patcher.patched(std(), cs, sigs, 1.0 / len(sigs)), ["clean", *cs])
        # The reference code's default: α=1 with its (α/N)² weighting.
        acc("composed_reference_mode", lambda: patcher.patched(std(), cs, sigs, 1.0, mode="reference"),
            ["clean", *cs])
        acc("composed_q8_shared_range", lambda: patcher.patched(std(), cs, rws.quantize_reference(sigs, 256), 1.0),
            ["clean", *cs])
        for group in composition_groups(cs, cfg.seed):
            names = list(group)
            acc("composed/" + "+".join(names),
                functools.partial(patched_group, names, [sigs[cs.index(c)] for c in names]), ["clean", *names])
    _evaluate_transfer(cfg, models, signatures, patcher, evaluator, log)
    return evaluator.accuracies


MAX_TRIPLES = 10  # triples of signatures evaluated for claim 5 (sampled, seeded, when there are more)


def composition_groups(corruptions: list[str], seed: int) -> list[tuple[str, ...]]:
    """Every pair of ``corruptions`` and their triples (at most :data:`MAX_TRIPLES`, sampled
    with ``seed`` when there are more), each in config order: claim 5's sums."""
    pairs: list[tuple[str, ...]] = list(itertools.combinations(corruptions, 2))
    triples: list[tuple[str, ...]] = list(itertools.combinations(corruptions, 3))
    if len(triples) > MAX_TRIPLES:
        keep = sorted(np.random.default_rng(seed + SEEDS.composition).choice(len(triples), MAX_TRIPLES, replace=False))
        triples = [triples[i] for i in keep]
    return pairs + triples


def _evaluate_transfer(cfg: PipelineConfig, models: ModelStore, signatures: SignatureStore, patcher: RunPatcher,
                       evaluator: Evaluator, log: Log) -> None:
    """Transfer rows of :func:`evaluate_models`: the transfer dataset's models, and the updated backbone."""
    cs = list(cfg.corruptions)
    acc = evaluator.accuracy
    if cfg.transfer_dataset is not None:
        log(f"[evaluate-accuracy] transfer to {cfg.transfer_dataset}")
        tstd = lambda: models.transfer(None)  # noqa: E731

        def transfer_patched(c: str) -> Variables:
            return patcher.patched(tstd(), [c], signatures.signature(c), 1.0, transfer=True)

        def reverse_patched(c: str) -> Variables:
            return patcher.patched(models.standard(), [c], signatures.signature(c, transfer=True), 1.0)

        acc("transfer/standard", tstd, ["clean", *cs], transfer=True)
        for c in cs:
            acc(f"transfer/patched/{c}", functools.partial(transfer_patched, c), ["clean", c], transfer=True)
            acc(f"transfer/robust/{c}", functools.partial(models.transfer, c), ["clean", c], transfer=True)
        if cfg.transfer_dataset == cfg.dataset:
            # same domain, other classes: the transfer side's RWSs patch this side's θ_std too
            log("[evaluate-accuracy] the other direction: RWSs of the transfer classes on this θ_std")
            for c in cs:
                acc(f"reverse/patched/{c}", functools.partial(reverse_patched, c), ["clean", c])
    if cfg.update_backbone_epochs:
        log("[evaluate-accuracy] transfer to an updated backbone")
        ustd = models.standard_updated

        def updated_patched(c: str) -> Variables:
            return patcher.patched(ustd(), [c], signatures.signature(c), 1.0)

        acc("updated/standard", ustd, ["clean", *cs])
        for c in cs:
            acc(f"updated/patched/{c}", functools.partial(updated_patched, c), ["clean", c])


def measure_storage(cfg: PipelineConfig, run_dir: Path, models: ModelStore, signatures: SignatureStore) -> dict:
    """Claim 7 (size half): bytes on disk of the signature files vs. the full model file
    (``storage/model``, written once); returns metrics/storage.json's record."""
    model_path = run_dir / "storage" / "model"
    if not model_path.exists():
        rws.save_variables(run_path(run_dir, "storage", "model"), models.standard())
    model_bytes = rws.bytes_on_disk(model_path)
    rows = []
    for b in (None, *cfg.quant_bits):
        sizes = [rws.bytes_on_disk(signatures.path(c, b)) for c in cfg.corruptions]
        mean = float(np.mean(sizes))
        rows.append({"bits": 32 if b is None else b, "signature_bytes": mean, "model_bytes": model_bytes,
                     "ratio": model_bytes / mean})
    sig = signatures.signature(cfg.corruptions[0])
    n_model = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(models.standard()))
    return {"rows": rows, "signature_elements": sig.num_elements(), "model_elements": n_model,
            "kept_tensors": len(sig.deltas)}


def merge_signatures(cfg: PipelineConfig, run_dir: Path, models: ModelStore, signatures: SignatureStore,
                     patcher: RunPatcher, evaluator: Evaluator, log: Log = print) -> dict | None:
    """Beyond the paper: merges (TIES, DARE) of all signatures, and α chosen on the validation
    split (per corruption, then for the set, for sum and each merge method); test accuracies of
    the choices go to metrics/accuracy.json. Returns the searches (metrics/alpha_search.json,
    written here and reused by a rerun), None without a search."""
    cs = list(cfg.corruptions)
    std = models.standard
    sigs = [signatures.signature(c) for c in cs]
    acc = evaluator.accuracy

    def merged(m: str) -> Variables:
        """θ_std patched with the merge ``m`` of all signatures (α = 1)."""
        return patcher.patched(std(), cs, patcher.merged(m, sigs), 1.0)

    def patched(c: str, sig: rws.Signature, a: float) -> Variables:
        """θ_std + a·sig (the signature of corruption ``c``)."""
        return patcher.patched(std(), [c], sig, a)

    log(f"[merge-signatures] {', '.join(cfg.merge_methods) or 'no merge methods'} of {len(sigs)} signatures")
    for m in cfg.merge_methods:
        acc(f"composed_{m}", functools.partial(merged, m), ["clean", *cs])
    if not cfg.alpha_search:
        return None

    def set_patched(method: str, alphas: dict) -> dict:
        """θ_std patched with the merge (or sum) of α_c·RWS_c over all corruptions."""
        return patcher.patched(std(), cs, patcher.merged(method, sigs, [alphas[c] for c in cs]), 1.0)

    found = read_metrics(run_dir, "alpha_search") or {}
    if not {"single", "set"} <= set(found):
        log("[merge-signatures] α search on the validation split")
        found = {"single": {}, "set": {}, "max_ta_drop": cfg.max_ta_drop, "grid": list(cfg.alpha_grid),
                 "budget": cfg.alpha_search_budget}

        def score_fn_for(names, patched_at):
            def score(alphas):
                v = evaluator.val_accuracy(patched_at(alphas), ["clean", *names])
                return {"ta": v["clean"], "ra": {n: v[n] for n in names}}
            return score

        for c, sig in zip(cs, sigs):
            res = rws.search_alphas(score_fn_for([c], lambda a, sig=sig, c=c: patcher.patched(std(), [c], sig, a[c])),
                                    [c], grid=cfg.alpha_grid, budget=cfg.alpha_search_budget,
                                    max_ta_drop=cfg.max_ta_drop)
            found["single"][c] = _search_record(res)
        for method in ("sum", *cfg.merge_methods):
            res = rws.search_alphas(score_fn_for(cs, lambda a, method=method: set_patched(method, a)), cs,
                                    grid=cfg.alpha_grid, budget=cfg.alpha_search_budget, max_ta_drop=cfg.max_ta_drop)
            found["set"][method] = _search_record(res)
        write_metrics(run_dir, "alpha_search", found)
    for c, sig in zip(cs, sigs):
        a = found["single"][c]["alphas"][c]
        acc(f"searched/{c}", functools.partial(patched, c, sig, a), ["clean", c])
    for method, rec in found["set"].items():
        acc(f"composed_searched_{method}", functools.partial(set_patched, method, rec["alphas"]), ["clean", *cs])
    return found


def _search_record(res) -> dict:
    """A JSON-able record of an ``rws.search_alphas`` result."""
    return {"alphas": {k: float(v) for k, v in res.alphas.items()}, "objective": float(res.score),
            "metrics": res.metrics, "baseline": res.baseline, "evaluations": res.num_evaluations,
            "exhausted": bool(res.exhausted), "trace": res.table()}


# --------------------------------------------------------------------------- registry

@dataclasses.dataclass(frozen=True)
class Stage:
    """A named stage: what ``rws-jax stage NAME`` and :func:`run_stages` call on a :class:`Run`.

    Attributes:
      name: the stage's name (what it computes).
      help: one line for ``rws-jax stage --help``.
      apply: runs the stage on a :class:`Run` (its parts in, metrics files out).
      announce: the progress line logged before it runs (None: the stage logs its own).
    """

    name: str
    help: str
    apply: Callable[[Run], object]
    announce: str | None = None


def _write(run: Run, metrics: dict[str, Any]) -> None:
    for name, data in metrics.items():
        write_metrics(run.dir, name, data)


def _premise(run: Run, measure: Callable[..., dict], key: str) -> dict | None:
    """Runs one half of the premise measurement unless metrics/premise.json has it."""
    if not run.cfg.premise or (key == "standard_seeds" and not run.cfg.premise_seeds):
        return None
    record = read_metrics(run.dir, "premise") or {}
    if key not in record or (key == "robust" and set(record[key]) != set(run.cfg.corruptions)):
        record = measure(run.cfg, run.models, run.data, run.patcher, run.evaluator, record)
        write_metrics(run.dir, "premise", record)
    return record


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("run-facts", "record the set-up the reports describe: images per split, units kept, BatchNorm",
          lambda run: _write(run, {"run_facts": run_facts(run.data, run.signatures, run.patcher)})),
    Stage("pretrain-init", "train θ_init (or import it, as the config's init says)",
          lambda run: pretrain_init(run.models), "θ_init"),
    Stage("probe-init", "θ_init's linear probe (frozen penultimate features) beside a random network's",
          lambda run: _write(run, {"probe": probe_init(run.cfg, run.models, run.data)}), "linear probe of θ_init"),
    Stage("finetune-standard", "fine-tune θ_std from θ_init on clean data (two seeds when the premise is measured)",
          lambda run: finetune_standard(run.models, seeds=2 if run.cfg.premise and run.cfg.premise_seeds else 1),
          "θ_std"),
    Stage("premise-standard", "the accuracy barrier on the straight line between the two θ_std seeds",
          lambda run: _premise(run, premise_between_seeds, "standard_seeds"), "θ_std seed 0 ↔ seed 1"),
    Stage("finetune-robust", "fine-tune θ_rob,c from θ_init on corrupted data (and the mixture model)",
          lambda run: finetune_robust(run.models, list(run.cfg.corruptions), replicates=run.cfg.robust_replicates,
                                      mixture=run.cfg.mixture, log=run.log)),
    Stage("premise-robust", "the TA and RA barriers on the straight lines between θ_std and each θ_rob,c",
          lambda run: _premise(run, premise_robust, "robust"), "θ_std ↔ θ_rob,c"),
    Stage("finetune-transfer", "models of the transfer dataset and of an updated backbone",
          lambda run: finetune_transfer(run.cfg, run.models, run.log)),
    Stage("extract-signatures", "extract the signatures (RWS_c) into signatures/",
          lambda run: extract_signatures(run.cfg, run.signatures), "signatures"),
    Stage("quantize-signatures", "quantized copies of the signatures",
          lambda run: quantize_signatures(run.signatures, list(run.cfg.corruptions), list(run.cfg.quant_bits),
                                          run.log)),
    Stage("weight-statistics", "layer-wise weight change, the projection's diagnostics and signature similarity",
          lambda run: _write(run, weight_statistics(run.cfg, run.models, run.signatures)),
          "layer-wise weight change and signature similarity"),
    Stage("evaluate-accuracy", "TA/RA of standard, robust, patched, quantized, composed, mixture and transfer models",
          lambda run: evaluate_models(run.cfg, run.models, run.signatures, run.patcher, run.evaluator, run.log)),
    Stage("merge-signatures", "TIES/DARE merges of all signatures and α chosen on the validation split",
          lambda run: merge_signatures(run.cfg, run.dir, run.models, run.signatures, run.patcher, run.evaluator,
                                       run.log)),
    Stage("measure-storage", "bytes on disk of signatures vs. the full model",
          lambda run: _write(run, {"storage": measure_storage(run.cfg, run.dir, run.models, run.signatures)}),
          "signature files vs. the full model file"),
)}


def run_stage(run: Run, name: str) -> object:
    """Runs the stage ``name`` on ``run`` (logging its progress line); returns what it computed."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    stage = STAGES[name]
    if stage.announce:
        run.log(f"[{name}] {stage.announce}")
    return stage.apply(run)


def run_stages(run: Run) -> None:
    """Every stage in order (each skips what is already on disk). Writes metrics, no report
    (:func:`rws_jax.pipeline.run_and_report.run_all` runs the stages, then writes the report)."""
    t0 = time.time()
    check_init_source(run.cfg)
    check_corrupted_test_data(run.cfg)
    for name in STAGES:
        t = time.time()
        run_stage(run, name)
        run.log(f"  ({name}: {time.time() - t:.0f}s)")
    run.log(f"  (all stages: {time.time() - t0:.0f}s)")
