"""`python -m dxnet_jax.sweep`: the same as `dxnet-sweep`."""

import sys

from dxnet_jax.sweep.cli import main

sys.exit(main())
