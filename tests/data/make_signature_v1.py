"""Writes tests/data/signature_v1/ — signature files of FORMAT VERSION 1.

Run once (``.venv/bin/python tests/data/make_signature_v1.py``) with the format-1 writer
(rws_jax before the 1-bit scheme / format version 2); the files are committed and
tests/test_storage.py::test_format_v1_fixture_still_loads checks that every later
rws_jax still loads them, checksum and values. Re-running it with a newer writer
would write the newer format: don't.

The tree's values are exact in float32 (k/16 for integers k), so the test rebuilds
them without reading anything; ``expected.json`` holds the dequantized values of the
two quantized files, as the format-1 code computed them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import rws_jax as rws

HERE = Path(__file__).parent / "signature_v1"


def tiny_delta() -> dict[str, np.ndarray]:
    """Three leaves: last axis 8 (packs at 4 bit), last axis 5 (does not), a bias."""

    def vals(shape, mult):
        n = int(np.prod(shape))
        return (((np.arange(n) * mult) % 23 - 11) / 16).astype(np.float32).reshape(shape)

    return {
        "params/conv_0/bias": vals((8,), 5),
        "params/conv_0/kernel": vals((3, 3, 1, 8), 37),
        "params/dense/kernel": vals((6, 5), 7),
    }


def tiny_signature() -> rws.Signature:
    d = tiny_delta()
    return rws.Signature(
        deltas={p: np.asarray(v) for p, v in d.items()},
        meta=rws.SignatureMeta(
            base_fingerprint="0123456789abcdef",
            leaf_specs=tuple((p, v.shape, "float32") for p, v in sorted(d.items())),
            name="fog",
            severity=3,
            kind="corruption",
            selection='{"k": 2}',
        ),
    )


def main() -> None:
    import jax.numpy as jnp

    if HERE.exists():
        shutil.rmtree(HERE)
    sig = tiny_signature()
    sig = sig.replace(deltas={p: jnp.asarray(v) for p, v in sig.deltas.items()})
    files = {
        "float.rws": sig,
        "q8_asymmetric_per_channel.rws": rws.quantize(sig, 8, scheme="asymmetric", per_channel=True),
        "q4_symmetric.rws": rws.quantize(sig, 4, scheme="symmetric"),
    }
    expected = {}
    for name, s in files.items():
        rws.save_signature(HERE / name, s)
        if s.is_quantized:
            expected[name] = {p: np.asarray(v).reshape(-1).tolist() for p, v in rws.dequantize(s).deltas.items()}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
