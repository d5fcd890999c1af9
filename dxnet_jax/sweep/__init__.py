"""Multi-seed studies on Ray Tune: a grid of training runs, resumable, with one results table.

    dxnet-sweep STUDY[:ARG] --root DIR [--address HOST:PORT|auto] [--cpus-per-run N]
                [--gpus-per-run N] [--main-flag=--FLAG=VALUE ...] [--dry-run]

Each run of the grid is a Ray Tune trial (the `sweep` extra): on a local Ray the command starts,
or on a running Ray cluster (`--address`). The study format, the workdirs and the results table
do not depend on where the runs ran.

A study file is a Python file whose `get_config(arg='')` returns a ConfigDict (the `path.py[:arg]`
convention of training configs, big_vision style):

    import ml_collections

    def get_config(arg=''):
      study = ml_collections.ConfigDict()
      study.seeds = (0, 1, 2)
      study.runs = [
          dict(label='dxnet_444', config='configs/denoise.py:dxnet_444'),
          dict(label='densenet_444', config='configs/denoise.py:densenet_444'),
          dict(label='densenet_444_lr5e-4', config='configs/denoise.py:densenet_444',
               overrides={'optim.learning_rate': 5e-4}),
      ]
      study.overrides = {'num_epochs': 5} if arg == 'short' else {}
      study.metrics = ('psnr', 'ssim', 'best_validation', 'parameters')
      study.compare = [('densenet_444', 'dxnet_444')]
      return study

Fields
  runs       dict(label, config, overrides={}) per row group, in table order. `label` names the
             rows and the workdirs (letters, digits and `_.+=-`; unique). `config` is a training
             config string as for `dxnet_jax.main --config` (a relative path is taken from the
             current directory). `overrides` maps config fields to values ('optim.learning_rate'
             or nested dicts); they reach main as `--config.FIELD=VALUE`.
  seeds      each run is trained once per seed (`--config.seed=SEED`).
  overrides  (optional) applied to every run, before the run's own overrides.
  metrics    the table's columns, read from each run's results.json:
               'psnr', 'ssim'          one column per eval set, e.g. 'psnr/BSD68': the trained
                                       model's row of the benchmark protocol (restoration runs
                                       with config.final_eval and config.data.eval_sets);
               'psnr/BSD68'            one eval set (named by its folder's base name);
               'best_validation'       the best validation value (the task's metric) and
               'best_validation_step'  the step that reached it;
               'parameters', 'steps'   parameter count and steps trained.
               'NAME/KEY'              the value KEY of the analysis NAME (below).
  resources  (optional) what one training takes, as Ray resources: {'cpu': 2, 'gpu': 1}, a
             custom resource of the cluster's nodes ({'v100': 1}) or TPU chips ({'TPU': 4});
             a run's own `resources` (in its dict) add to these. --cpus-per-run and
             --gpus-per-run override 'cpu' and 'gpu' (default: 1 CPU, no GPU).
  compare    (optional) (A, B) label pairs: the summary printed at the end adds the paired
             differences B - A over the seeds (`dxnet_jax.analysis.stats`).
  analyses   (optional) steps run on every trained workdir once its training finished (or was
             found finished), in order, e.g. the minima sharpness of each trained model:
               dict(name='sharpness', module='dxnet_jax.analysis.sharpness',
                    args=dict(sigmas=(0.001, 0.002, 0.004), probes=16), results='sharpness.json')
             `args` become the module's flags (sigmas=(0.001, 0.002) -> --sigmas=0.001,0.002;
             fit_max_sigma=0.002 -> --fit-max-sigma=0.002; True a bare flag), or are given as a
             tuple of flags. The sweep runs
             `python -m MODULE ARGS --workdir=WORKDIR --out=WORKDIR/NAME.partial`
             (an empty folder) and, when it exits 0, renames that folder to WORKDIR/NAME.
             `results` is the JSON file there that holds the analysis' values: an object, or a
             list of one object (as the analysis CLIs write for one workdir). `name` is a name
             of letters, digits and _.+=-.

Before anything starts, every run's config is loaded with its overrides exactly as main parses
them: a missing config file, an unknown field or a value main cannot parse is an error.

Under --root
  LABEL-seedSEED/   the run's workdir (main's checkpoints, metrics, config.json, results.json)
                    with train.log, main's output (appended by each attempt)
  results.csv       the table: label, seed, status ('done' | 'failed') and the metric columns,
  results.json      one row per finished run in grid order, rewritten atomically after each run;
                    its content does not depend on interruptions or where runs ran. The JSON rows
                    add workdir, config, overrides and, for failed runs, the log's tail.
  LABEL-seedSEED/NAME/
                    an analysis' output, with sweep-analysis.json (the module and args that made
                    it) and NAME.log beside it (the analysis' output, appended by each attempt)
  timing.json       wall time and attempts per run and per analysis (kept out of the table)
  .ray/             Ray Tune's record of the last sweep (trial logs; not needed to resume)

Rerunning the same command resumes the sweep: runs with a results.json are skipped, the others
rerun main in their workdir, which resumes from its latest checkpoint (failed runs are retried).
Analyses whose output folder exists are skipped; the others (re)start from scratch. So another
study with the same runs and --root reuses their trainings: e.g. configs/studies/sharpness.py
adds the sharpness analysis to the runs of configs/studies/denoise_params.py, and its table
holds all of that study's columns and the sharpness ones. A run is done when its training and
every analysis are; a failed analysis fails its run (its row keeps the training's columns).
A workdir whose config.json is not the study's config for that run is an error (give the run
another label or use another --root), as is an analysis folder made with other args or not by
the sweep. Run one sweep at a time on a --root.

Ray: runs start in grid order, as many at a time as the cluster has resources for (a local Ray
offers the machine's CPUs and GPUs; with 1 CPU per run, a 2-core machine trains two at a time).
A trial whose worker or node died restarts (twice at most) and resumes from the workdir, so
--root must be a folder every node sees (a shared file system). On a GPU, runs that take a
fraction of one (--gpus-per-run 0.5) get that share of its memory
(XLA_PYTHON_CLIENT_MEM_FRACTION, unless the environment sets a GPU memory option).
`--main-flag` passes a flag to every run's main, e.g. `--main-flag=--cpu_devices=2`.

SIGINT / SIGTERM stop the sweep: Ray stops the trials, whose trainings get SIGTERM, save their
state and exit. Exit status: 0 when every run is done, 1 when some run failed, 2 for a bad study
or command line, 128 + the signal number when stopped by a signal.
"""

from dxnet_jax.sweep.cli import EXIT_FAILED, EXIT_USAGE, main
from dxnet_jax.sweep.study import Analysis, LOG_NAME, Run, Study, StudyError, load_study
from dxnet_jax.sweep.table import ANALYSIS_RECORD, TABLE_KEYS

__all__ = [
    'ANALYSIS_RECORD',
    'Analysis',
    'EXIT_FAILED',
    'EXIT_USAGE',
    'LOG_NAME',
    'Run',
    'Study',
    'StudyError',
    'TABLE_KEYS',
    'load_study',
    'main',
]
