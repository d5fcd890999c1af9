"""Analysis tools of the DxNet paper.

- `sharpness`: minima sharpness by random weight perturbation and by Hutchinson's trace estimator
  (paper section 4.4, Figs. 9-10).
- `budget_plots`: parameters against accuracy / PSNR, ours beside the paper's points
  (Figs. 1, 6, 8); the paper's numbers live in `paper_points`.
- `cam`: class activation maps of classifiers (Fig. 5).
- `stats`: seed statistics of a sweep's results table (`dxnet_jax.sweep`), as markdown.
- `study_plots`: figures of the sweep tables of configs/studies/: PSNR against parameters
  (Fig. 8) and against depth per xUnit design (Fig. 4), and sharpness per model (Figs. 9-10),
  each seed beside the mean ± std over seeds.

Submodules are imported on demand so that, e.g., plotting does not pull in model code.
"""
