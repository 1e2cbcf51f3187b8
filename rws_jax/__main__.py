import sys

from rws_jax.cli import main

sys.exit(main())
