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
from .data import MNIST1D_TRAIN, Dataset, load_dataset, load_mnist1d, make_synthetic_digits
from .experiments import DECAY_GRID, FULL, LR_GRID, QUICK, Budget, Task
from .figures import CNN as CNN_FIGURE
from .figures import FIGURES, HEATMAP
from .heatmap import RidgeFit, fit_line, ridge_points, ridge_slope, verdict_ridge
from .main import DEFAULT_OUT, REPORT_NAME, RESULTS_NAME, main, parse_args
from .models import (
                     DEFAULT_SIZES,
                     MLP,
                     CNN1d,
                     backward,
                     batch_norm_backward,
                     batch_norm_forward,
                     cross_entropy,
                     evaluate,
                     forward,
                     init_mlp,
                     loss_and_grads,
)
from .report import FIGURES_DIR, build_report
from .runner import Job, ProgressBar, run_jobs
from .training import (
                     EXTRA_LABELS,
                     MODELS,
                     OPTIMIZER_LABELS,
                     SCHEDULE_LABELS,
                     SCHEDULES,
                     SGDW,
                     WARMUP_START,
                     RunResult,
                     RunSpec,
                     build_model,
                     make_optimizer,
                     make_scheduler,
                     plateau_patience,
                     train,
                     warmup_epochs,
                     weight_mask,
                     zero_input_mask,
)
from .verdicts import (  # the thresholds and the verdict functions
                     BORNE_OUT,
                     COLLAPSED,
                     CONTRADICTED,
                     DEFAULT_LRS,
                     DILUTION_RATIO,
                     DIRECT_DECAY_RTOL,
                     LOSS_FACTOR,
                     LOSS_TARGET,
                     MIN_ACC_EFFECT,
                     MIN_SHRINK,
                     NOISE_SE,
                     NOT_BORNE_OUT,
                     NOT_TESTED,
                     SPEEDUP,
                     TUNING_TOLERANCE,
                     Comparison,
                     Verdict,
                     _threshold_text,  # noqa: F401
                     compare,
                     decay_by_quartile,
                     epochs_to_target,
                     good_lrs,
                     pct,
                     pp,
                     relative_decay,
                     verdict_adam_fast,
                     verdict_adam_little_tuning,
                     verdict_adamw_direct,
                     verdict_batch_norm,
                     verdict_decay_helps,
                     verdict_decoupled_better,
                     verdict_l2_diluted,
                     verdict_momentum_catches_up,
                     verdict_momentum_generalizes,
                     verdict_plateau_unpredictable,
                     verdict_regularization_decides,
                     verdict_sgd_suits_cnns,
                     verdict_step_vs_cosine,
)

__all__ = [
    "BORNE_OUT",
    "Budget",
    "CNN1d",
    "CNN_FIGURE",
    "COLLAPSED",
    "CONTRADICTED",
    "Comparison",
    "DECAY_GRID",
    "DEFAULT_LRS",
    "DEFAULT_OUT",
    "DEFAULT_SIZES",
    "DILUTION_RATIO",
    "DIRECT_DECAY_RTOL",
    "Dataset",
    "EXTRA_LABELS",
    "FIGURES",
    "FIGURES_DIR",
    "FULL",
    "HEATMAP",
    "Job",
    "LOSS_FACTOR",
    "LOSS_TARGET",
    "LR_GRID",
    "MIN_ACC_EFFECT",
    "MIN_SHRINK",
    "MLP",
    "MNIST1D_TRAIN",
    "MODELS",
    "NOISE_SE",
    "NOT_BORNE_OUT",
    "NOT_TESTED",
    "OPTIMIZER_LABELS",
    "ProgressBar",
    "QUICK",
    "REPORT_NAME",
    "RESULTS_NAME",
    "RidgeFit",
    "RunResult",
    "RunSpec",
    "SCHEDULES",
    "SCHEDULE_LABELS",
    "SGDW",
    "SPEEDUP",
    "TUNING_TOLERANCE",
    "Task",
    "Verdict",
    "WARMUP_START",
    "_threshold_text",
    "backward",
    "batch_norm_backward",
    "batch_norm_forward",
    "build_model",
    "build_report",
    "compare",
    "cross_entropy",
    "decay_by_quartile",
    "epochs_to_target",
    "evaluate",
    "fit_line",
    "forward",
    "good_lrs",
    "init_mlp",
    "load_dataset",
    "load_mnist1d",
    "loss_and_grads",
    "main",
    "make_optimizer",
    "make_scheduler",
    "make_synthetic_digits",
    "parse_args",
    "pct",
    "plateau_patience",
    "pp",
    "relative_decay",
    "ridge_points",
    "ridge_slope",
    "run_jobs",
    "train",
    "verdict_adam_fast",
    "verdict_adam_little_tuning",
    "verdict_adamw_direct",
    "verdict_batch_norm",
    "verdict_decay_helps",
    "verdict_decoupled_better",
    "verdict_l2_diluted",
    "verdict_momentum_catches_up",
    "verdict_momentum_generalizes",
    "verdict_plateau_unpredictable",
    "verdict_regularization_decides",
    "verdict_ridge",
    "verdict_sgd_suits_cnns",
    "verdict_step_vs_cosine",
    "warmup_epochs",
    "weight_mask",
    "zero_input_mask",
]
