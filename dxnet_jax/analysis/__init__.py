"""Analysis tools of the DxNet paper.

- `sharpness`: minima sharpness by random weight perturbation and by Hutchinson's trace estimator
  (paper section 4.4, Figs. 9-10).
- `budget_plots`: parameters against accuracy / PSNR, ours beside the paper's points
  (Figs. 1, 6, 8); the paper's numbers live in `paper_points`.
- `cam`: class activation maps of classifiers (Fig. 5).

Submodules are imported on demand so that, e.g., plotting does not pull in model code.
"""
