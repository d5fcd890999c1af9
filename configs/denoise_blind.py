"""One denoiser for every noise level: DxNet 4-4-4 conditioned on FFDNet's noise-level map.

Recipe:
  model      DxNet 4-4-4, k=16 (`dxnet_denoise_blind`, gray, 140,929 parameters;
             `dxnet_denoise_blind_rgb`, colour, 144,387): the input carries the noise-level map
             sigma/255 as an extra channel, the net predicts the noise of the image channels
  data       gray: Train400; colour: BSD200 + T91 (never CBSD68, BSD68 or Set12). 50x50
             patches, flips and rotations; sigma ~ U[0, 75] per patch, N(0, sigma/255) added
             without clipping (the DnCNN protocol), the patch's sigma/255 as the map
  optimiser  Adam, lr 1e-3, mean squared error on the residual, batch 16
  schedule   lr / 5 at 80% of training
  length     STEPS steps (default 11,000: about 2.3 h of an idle 2-core CPU. Calibration: the
             step of this net took 1.07x that of dxnet_denoise_444 at the same 16x50x50 batch
             (3.18 / 2.98 s, interleaved, on the loaded CPU), whose idle step is 0.633 s
             (docs/performance.md): 0.68 s x 11,000 = 2.1 h, plus validation, checkpoints and
             the final evaluation)
  validation 128-px centre crops at sigma 25, every 500 steps: Set12 (gray) / Set5 (colour);
             final evaluation at sigma 25 on BSD68 + Set12 (gray) / CBSD68 (colour); other
             levels with `dxnet-evaluate --workdir W --sigma S`, which fills the map with S

Argument: gray|rgb[,steps=N][,unshuffle]
  unshuffle  FFDNet's pixel-unshuffle x2 front end: 6.6x faster steps, but 2.1 dB lower on
             Set12 at sigma 25 after 250 steps (docs/models.md), so off

  python -m dxnet_jax.main --config configs/denoise_blind.py:gray --workdir runs/blind/gray
  python -m dxnet_jax.main --config configs/denoise_blind.py:rgb --workdir runs/blind/rgb
Interrupted runs resume from their last checkpoint (every 250 steps) with the same command.
The shipped colour model was then continued in its workdir to 17,000 steps (about 2.5 h of the
idle CPU in all; lr 1e-3 again from step 11,000, / 5 at 13,600), which gained 0.12 dB on
CBSD68 at sigma 25:
  python -m dxnet_jax.main --config configs/denoise_blind.py:rgb,steps=17000 \
      --workdir runs/blind/rgb
"""

from configs import common

MODELS = {'gray': 'dxnet_denoise_blind', 'rgb': 'dxnet_denoise_blind_rgb'}
SIGMA_RANGE = (0.0, 75.0)


def get_config(arg='gray'):
  arg = common.parse_arg(arg, model='gray', steps=11000, unshuffle=False)
  model = common.choose(arg.model, MODELS, 'blind denoiser')
  if arg.steps < 1:
    raise ValueError(f'steps must be positive, got {arg.steps}.')
  channels = 3 if arg.model == 'rgb' else 1
  config = common.trainer('denoising', model, (50, 50, channels + 1), name=f'blind_{arg.model}')
  config.model.unshuffle = arg.unshuffle
  config.data.update(
      train_dirs=('BSD200', 'T91') if channels == 3 else ('Train400',),
      channels=channels,
      patch_size=50,
      patches_per_epoch=16 * 500,
      augment='dihedral',
      sigma=SIGMA_RANGE,
      eval_sigma=25.0,
      level_map=True,
      scale=1,
      validation_set='Set5' if channels == 3 else 'Set12',
      validation_crop=128,
      eval_sets=('CBSD68',) if channels == 3 else ('BSD68', 'Set12'),
  )
  config.optim = common.optim(
      'adam', learning_rate=1e-3, schedule='piecewise', decay_at=(0.8,), decay_factor=0.2
  )
  config.batch_size = 16
  config.num_steps = arg.steps
  config.log_every_steps = 50
  config.checkpoint_every_steps = 250
  return config
