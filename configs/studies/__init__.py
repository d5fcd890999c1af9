"""Multi-seed studies for `python -m dxnet_jax.sweep` (see dxnet_jax/sweep.py for the format)."""
