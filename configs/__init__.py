"""Experiment configs: `get_config(arg)` files for `python -m dxnet_jax.main --config`."""
