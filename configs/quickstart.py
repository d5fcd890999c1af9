"""Quick start: a small DxNet denoiser (sigma 50) trained on scikit-image's bundled photos.

Needs no download and runs in a few minutes on a 2-core CPU:
  python -m dxnet_jax.main --config configs/quickstart.py --workdir runs/quickstart
It ends with a table of PSNR/SSIM on two held-out photos (camera, coffee) against the noisy
input, and leaves checkpoints, metrics.jsonl, TensorBoard events and results.json in the workdir.

Recipe: configs/denoise.py's (Adam 1e-3, MSE, sigma 50, flips and rotations) with a DxNet
2-2-2, k=8, 16-channel stem, on 32x32 patches of the bundled photos: 8 epochs of 200 steps of
16, lr / 5 at 75%.
"""

from configs import denoise


def get_config():
  config = denoise.get_config('dxnet_444')
  config.model.blocks = (2, 2, 2)
  config.model.growth_rate = 8
  config.model.stem_features = 16
  config.input_shape = (32, 32, 1)
  config.data.train_dirs = ('skimage:train',)
  config.data.validation_set = 'skimage:test'
  config.data.eval_sets = ('skimage:test',)
  config.data.validation_crop = 128
  config.data.patch_size = 32
  config.data.patches_per_epoch = 16 * 200
  config.batch_size = 16
  config.num_epochs = 8
  config.log_every_steps = 100
  config.optim.decay_at = (0.75,)
  return config
