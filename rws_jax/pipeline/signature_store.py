"""The signatures of a run: RWS_c extracted once from the run's models into
``<run>/signatures/<c>.rws`` (and quantized copies ``<c>.q<bits>.rws``), loaded afterwards."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

import rws_jax as rws
from rws_jax.models import unit_order
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.model_store import ModelStore
from rws_jax.pipeline.run_dir import run_path


class SignatureStore:
    """RWS_c of the run's models, one file each, made on first use."""

    def __init__(self, cfg: PipelineConfig, run_dir: Path, models: ModelStore):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.models = models

    @functools.cached_property
    def selection(self) -> rws.Selection:
        """The kept tensors: the first ``keep_units`` units of the run's model in forward order."""
        return rws.first_k(self.cfg.keep_units, order=unit_order(self.models.model), collections=self.cfg.collections)

    def path(self, c: str, bits: int | None = None, *, transfer: bool = False, replicate: int = 0) -> Path:
        """``signatures/[transfer/]<c>[.seed<r>][.q<bits>].rws``."""
        suffix = ("" if not replicate else f".seed{replicate}") + ("" if bits is None else f".q{bits}")
        return run_path(self.dir, "signatures", *(("transfer",) if transfer else ()), f"{c}{suffix}.rws")

    def signature(self, c: str, *, transfer: bool = False, replicate: int = 0) -> rws.Signature:
        """RWS_c (extracted once, then loaded from its file); ``transfer``: from the transfer
        dataset's models; ``replicate`` r > 0: from the robust model trained with another seed."""
        path = self.path(c, transfer=transfer, replicate=replicate)
        if path.exists():
            return rws.load_signature(path)
        m = self.models
        std = m.transfer(None) if transfer else m.standard()
        rob = m.transfer(c) if transfer else m.robust(c, replicate)
        sig = rws.extract(m.theta_init, std, rob, self.selection, name=c, severity=self.cfg.severity)
        rws.save_signature(path, sig)
        return sig

    def quantized(self, c: str, bits: int) -> rws.Signature:
        """RWS_c quantized to ``bits`` (:func:`rws_jax.quantize`), made once."""
        path = self.path(c, bits)
        if path.exists():
            return rws.load_signature(path)
        q = rws.quantize(self.signature(c), bits)
        rws.save_signature(path, q)
        return q

    def kept_units(self) -> list[str]:
        """Names of the units the signatures keep, in forward order (read off the model's
        variable shapes: nothing is trained or initialised)."""
        model, shape = self.models.model, self.models.data.main.image_shape
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), train=False))
        return list(self.selection.units(shapes)[: self.cfg.keep_units])
