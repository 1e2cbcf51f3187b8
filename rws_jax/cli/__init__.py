"""The ``rws-jax`` command: :mod:`rws_jax.cli.main` (the user's tasks, the pipeline's stages)
and :mod:`rws_jax.cli.signature_commands` (``rws-jax sig ...`` on signature files)."""

from rws_jax.cli.main import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]
