import sys

from rws_jax.cli import entry

sys.exit(entry())
