"""``fastoptim demo``: the optimizer and scheduler lore, measured on your machine.

Users hear that SGD+momentum generalizes well when training is long and suits
CNNs, that Adam converges fast with little tuning, that Adam's
``weight_decay`` is L2 regularization diluted by the adaptive learning rate
while AdamW decays the weights directly (so that lr and decay can be tuned
apart), that weight decay and batch norm complement each other, and which
learning-rate schedule suits which run. This demo trains small NumPy models
(hand-written backward passes, float32, parameters in one
:class:`~fastoptim.FlatParams` buffer so each ``opt.step`` is one kernel call)
and tests each claim with a function of the measured numbers:

- two tasks for experiments 1-3 (optimizers at their best lr; Adam-L2 vs AdamW
  over a decay grid; eight lr schedules): an MLP on scikit-learn's 8x8 digits
  (which it memorizes within a few epochs) and an MLP on a 1000-example split
  of mnist1d (on which it overfits, so that regularization decides);
- on mnist1d: the lr x weight-decay heatmap of Loshchilov & Hutter (2019,
  Fig. 2) for Adam+L2, AdamW, SGD+momentum+L2 and SGDW, with the slope of the
  best-decay ridge as the verdict; a 1-D CNN (im2col + BLAS) for "SGD suits
  CNNs" and StepLR; an MLP with batch norm for "decay and batch norm complement
  each other".

It writes PNG figures (matplotlib, Agg), ``demo_report.md`` and
``demo_results.json``::

    fastoptim demo                    # full run: about 15 minutes on 2 cores
    fastoptim demo --quick            # seconds: a smoke test, too small to judge anything
    python -m fastoptim.demo --out results/ --seeds 10 --jobs 2

Needs ``pip install "fastoptim[examples]"`` (scikit-learn, mnist1d, matplotlib).

Modules: ``data`` (data sets), ``models`` (MLP with optional batch norm, 1-D
CNN), ``training`` (one run), ``runner`` (worker processes and the progress
bar), ``experiments`` (which runs), ``analysis`` (numbers from runs),
``verdicts`` and ``heatmap`` (the rules), ``figures``, ``report``, ``main``.
"""
from .data import Dataset, MNIST1D_TRAIN, load_dataset, load_mnist1d, make_synthetic_digits
from .models import (CNN1d, DEFAULT_SIZES, MLP, backward, batch_norm_backward, batch_norm_forward,
                     cross_entropy, evaluate, forward, init_mlp, loss_and_grads)
from .training import (EXTRA_LABELS, MODELS, OPTIMIZER_LABELS, SCHEDULE_LABELS, SCHEDULES, SGDW,
                       WARMUP_START, RunResult, RunSpec, build_model, make_optimizer, make_scheduler,
                       plateau_patience, train, warmup_epochs, weight_mask, zero_input_mask)
from .verdicts import *  # noqa: F401,F403  (the thresholds and verdict functions)
from .verdicts import _threshold_text  # noqa: F401
from .heatmap import RidgeFit, fit_line, ridge_points, ridge_slope, verdict_ridge
from .experiments import DECAY_GRID, FULL, LR_GRID, QUICK, Budget, Task
from .figures import CNN as CNN_FIGURE, FIGURES, HEATMAP
from .report import FIGURES_DIR, build_report
from .runner import Job, ProgressBar, run_jobs
from .main import DEFAULT_OUT, REPORT_NAME, RESULTS_NAME, main, parse_args
