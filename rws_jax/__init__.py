"""rws_jax: Robust Weight Signatures in JAX/Flax."""

__version__ = "0.1.0"
