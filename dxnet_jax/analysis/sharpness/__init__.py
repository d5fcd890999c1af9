"""Minima sharpness (paper section 4.4, Figs. 9-10): the estimators, their figures, and the
command `python -m dxnet_jax.analysis.sharpness` (module `command`)."""

from dxnet_jax.analysis.sharpness.command import main, task_loss_fn
from dxnet_jax.analysis.sharpness.estimators import (
    VECTORIZE,
    Batch,
    LossFn,
    Params,
    Predicate,
    Settings,
    SharpnessResult,
    TraceFit,
    all_float_leaves,
    auto_sigmas,
    batch_weight,
    conv_kernels,
    count_selected,
    dataset_loss,
    default_vectorize,
    fit_trace,
    hutchinson_estimate,
    hutchinson_trace,
    loss_sweep,
    measure_sharpness,
    path_str,
    perturb,
    selected_paths,
    selection_mask,
)
from dxnet_jax.analysis.sharpness.plots import (
    plot_loss_vs_sigma,
    plot_quadratics,
    plot_sharpness,
    sharpness_figure,
)
