"""rws_jax benchmark suite: `python -m benchmarks [--quick] [--out DIR] [--only ...]`."""
