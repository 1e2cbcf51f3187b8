"""Sharded patching on 8 fake CPU devices (a (data=2, model=4) mesh).

The device count is fixed when JAX starts, so the checks run in a subprocess
(tests/_sharded_script.py); see that file for what is checked: results equal to the
unsharded computation, outputs sharded like the inputs, no all-gather in the compiled
extract / quantize / compose / patch kernels, PatchStack restore on sharded leaves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code_or_script: list[str], timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *code_or_script], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sharded_extract_quantize_compose_patch_match_unsharded():
    proc = _run([str(REPO / "tests" / "_sharded_script.py")])
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]
    assert "SHARDING_OK" in proc.stdout


@pytest.mark.slow
def test_all_gather_detector_is_sensitive():
    """Negative control: packing a sharded tensor *flat* (the old layout) does gather,
    and the HLO check used by the script sees it; packing along the last axis does not."""
    code = textwrap.dedent("""
        import re, jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from rws_jax import quantization as q
        mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
        x = jax.device_put(jnp.zeros((3, 3, 16, 32), jnp.uint8), NamedSharding(mesh, P(None, None, None, "model")))
        count = lambda f: len(re.findall(r"all-gather", jax.jit(f).lower(x).compile().as_text()))
        print("FLAT", count(lambda a: q.pack_codes(a, 4)), "LAST_AXIS", count(lambda a: q.pack_last_axis(a, 4)))
    """)
    proc = _run(["-c", code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("FLAT")][0].split()
    assert int(line[1]) > 0 and int(line[3]) == 0, line
