"""Multi-seed studies for `dxnet-sweep` (the format: `dxnet-sweep --help`, dxnet_jax/sweep/__init__.py)."""
