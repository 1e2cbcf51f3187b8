"""The README of a released model (:mod:`rws_jax.files.release`), written from its manifest
alone: what it is, how to patch it from the command line and from Python, and the accuracies
the run measured, with the command that measures them again; and the short block of those
accuracies that ``rws-jax release export --splice`` writes into README."""

from __future__ import annotations

from rws_jax.pipeline.tables import pct

RELEASE_BEGIN = ("<!-- release-summary:begin (make reproduce-docs: rws-jax release export --run "
                 "results/reproduce/vgg16_seed0 --out docs/reproduce/release --splice README.md) -->")
RELEASE_END = "<!-- release-summary:end -->"


def _classes(manifest: dict) -> str:
    c = manifest.get("classes")
    return "all ten classes" if not c else f"classes {c[0]}–{c[-1]} (labels 0–{len(c) - 1} in that order)"


def release_readme(manifest: dict, path: str = "docs/reproduce/release") -> str:
    """Markdown for ``<release>/README.md`` from ``release.json``'s contents; ``path`` is where
    the examples say the release lies."""
    exp = manifest["expected_accuracy"]
    cs = manifest["corruptions"]
    net = manifest["network"]
    pre = manifest["preprocess"]
    first = cs[0] if "fog" not in cs else "fog"
    lines = [
        f"# Released model: `{manifest['name']}`", "",
        manifest["description"] + ".", "",
        f"- network: `rws_jax.models.get_model({net['model']!r}, {net['num_classes']}, "
        + ", ".join(f"{k}={v!r}" for k, v in net["model_kwargs"].items()) + ")`",
        f"- task: {manifest['dataset']}, {_classes(manifest)}; inputs: {pre['input']}, normalised with mean "
        f"{pre['mean']} and std {pre['std']}",
        f"- signatures: {len(cs)} corruptions at severity {manifest['severity']}, {manifest['bits']}-bit "
        "(`signatures/<corruption>.rws`), each checked against its own checksum and this model when loaded",
        "- every file is listed with its sha256 in `SHA256SUMS` (`sha256sum -c SHA256SUMS`, or "
        f"`rws-jax release verify {path}`)",
        *([f"- written by `{manifest['command']}`"] if manifest.get("command") else []), "",
        "## Patch it", "",
        "```console",
        f"$ rws-jax release verify {path}",
        f"$ rws-jax sig patch --model {path}/model.msgpack --sig {path}/signatures/{first}.rws --out patched.msgpack",
        f"$ rws-jax release evaluate {path} --sig {first}    # measures it on the rebuilt test sets",
        "```", "",
        "```python",
        "import rws_jax as rws",
        "",
        f"release = rws.load_release({path!r})   # checks SHA256SUMS and every signature",
        f"patched = rws.patch(release.variables, release.signatures[{first!r}])",
        "both = rws.patch(release.variables, [release.signatures[c] for c in "
        f"{cs[:2]!r}])",
        "```", "",
        "## What to expect", "",
        f"Accuracy on the test set ({manifest['test_examples']:,} images; RA: corrupted at severity "
        f"{manifest['severity']} by rws_jax's seeded corruptions), as the run measured it; "
        f"`rws-jax release evaluate {path}` measures it again from these files. θ_std's clean accuracy (TA): "
        f"{pct(exp['standard']['clean'])}%.", "",
        "| corruption | RA θ_std (%) | RA θ_std + RWS_c (%) | TA θ_std + RWS_c (%) |", "|---|---|---|---|",
    ]
    for c in cs:
        p = exp.get(f"patched/{c}", {})
        lines.append(f"| {c} | {pct(exp['standard'].get(c))} | {pct(p.get(c))} | {pct(p.get('clean'))} |")
    return "\n".join(lines) + "\n"


def release_summary_markdown(manifest: dict, path: str = "docs/reproduce/release") -> str:
    """README's lines on what the release gives (between :data:`RELEASE_BEGIN` and
    :data:`RELEASE_END`): θ_std's TA, and per corruption θ_std's RA, the patched model's RA and
    TA, as the run measured them; ``path`` is the release as README's links reach it."""
    exp = manifest["expected_accuracy"]
    cs = manifest["corruptions"]
    head = " | ".join(["", "corruption", *cs, ""]).strip()
    lines = [f"What to expect of `{path}` ({manifest['bits']}-bit signatures, α = 1; accuracy on the "
             f"{manifest['test_examples']:,} test images, as the run measured it and "
             f"`rws-jax release evaluate {path}` measures it again; θ_std's TA "
             f"{pct(exp['standard']['clean'])}%; [the release's README]({path}/README.md)):", "",
             head, "|" + "---|" * (len(cs) + 1),
             "| RA θ_std (%) | " + " | ".join(pct(exp["standard"].get(c)) for c in cs) + " |",
             "| RA patched (%) | " + " | ".join(pct(exp.get(f"patched/{c}", {}).get(c)) for c in cs) + " |",
             "| TA patched (%) | " + " | ".join(pct(exp.get(f"patched/{c}", {}).get("clean")) for c in cs) + " |"]
    return "\n".join(lines) + "\n"
