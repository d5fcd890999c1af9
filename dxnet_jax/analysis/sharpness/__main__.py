"""`python -m dxnet_jax.analysis.sharpness`: see `dxnet_jax.analysis.sharpness.command`."""

from dxnet_jax.analysis.sharpness import command

if __name__ == '__main__':
  command.main()
