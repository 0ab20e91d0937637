"""The demo's data sets: scikit-learn's 8x8 digits (or a generated stand-in) and mnist1d.

All loaders return a :class:`Dataset` with float32 features and integer labels;
none needs a network.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

MNIST1D_TRAIN = 1000  # training examples the demo keeps of mnist1d's 4000 (see docs/demo_task_trial.md)


@dataclass
class Dataset:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    name: str
    n_classes: int = 10


def make_synthetic_digits(n_samples=1797, seed=0):
    """A stand-in for ``load_digits`` (no scikit-learn): 8x8 images of 10 noisy shapes.

    Each class is a random smooth 10x10 stroke pattern; a sample is a random
    8x8 crop of it (shifts of up to 2 pixels), rescaled, with pixel noise and
    values in [0, 1]. Returns ``(X, y)`` with ``X`` of shape (n, 64).
    """
    rng = np.random.default_rng(seed)
    raw = rng.random((10, 12, 12))
    protos = sum(raw[:, i:i + 10, j:j + 10] for i in range(3) for j in range(3)) / 9
    protos = (protos > np.quantile(protos, 0.6, axis=(1, 2), keepdims=True)).astype(float)
    y = np.arange(n_samples) % 10
    rng.shuffle(y)
    X = np.empty((n_samples, 64))
    for k, c in enumerate(y):
        i, j = rng.integers(0, 3, size=2)
        img = protos[c, i:i + 8, j:j + 8] * rng.uniform(0.6, 1.0)
        X[k] = np.clip(img + rng.normal(0.0, 0.3, (8, 8)), 0.0, 1.0).ravel()
    return X, y


def load_dataset(source="auto", val_fraction=0.5, seed=0):
    """The digits data set split (stratified, fixed seed) into train and validation halves.

    ``source``: "digits" (scikit-learn's bundled ``load_digits``, no download),
    "synthetic" (:func:`make_synthetic_digits`), or "auto" (digits if
    scikit-learn is installed, else synthetic). Features are float32 in [0, 1].
    """
    if source not in ("auto", "digits", "synthetic"):
        raise ValueError(f"unknown data set {source!r}: expected auto, digits or synthetic")
    if source in ("auto", "digits"):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            if source == "digits":
                raise ImportError("the digits data set needs scikit-learn: "
                                  'pip install "fastoptim[examples]"') from None
            source = "synthetic"
    if source == "synthetic":
        X, y = make_synthetic_digits(seed=seed)
        name = "generated 8x8 shapes (scikit-learn not installed)"
    else:
        digits = load_digits()
        X, y = digits.data / 16.0, digits.target
        name = "scikit-learn load_digits (8x8 handwritten digits)"
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        val[members[:int(round(len(members) * val_fraction))]] = True
    X = X.astype(np.float32)
    return Dataset(X[~val], y[~val].astype(np.intp), X[val], y[val].astype(np.intp), name,
                   int(y.max()) + 1)




_MNIST1D = {}


def _make_mnist1d(seed):
    """mnist1d's generated data set (once per process and seed: it takes seconds)."""
    if seed not in _MNIST1D:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:
            raise ImportError('the mnist1d data set needs the mnist1d package: '
                              'pip install "fastoptim[examples]"') from None
        args = get_dataset_args()
        args.seed = seed
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            _MNIST1D[seed] = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    return _MNIST1D[seed]


def load_mnist1d(n_train=MNIST1D_TRAIN, seed=42):
    """mnist1d (Greydanus 2020): 10 classes of 1-D signals of length 40, generated procedurally.

    ``mnist1d.data.make_dataset`` builds its 5000 examples from ten hard-coded
    templates with random padding, scaling, translation, correlated and
    independent noise and shear; nothing is downloaded (its ``get_dataset``
    would download a pickle, and is not used). The first ``n_train`` of its
    4000 training examples are kept (None: all), and its 1000 test examples are
    the validation set. ``seed`` is mnist1d's own (42 gives the published data
    set); the global random state it seeds is restored afterwards.
    """
    d = _make_mnist1d(seed)
    n = len(d["y"]) if n_train is None else int(n_train)
    if not 10 <= n <= len(d["y"]):
        raise ValueError(f"n_train must be between 10 and {len(d['y'])}, got {n_train}")
    X, y = d["x"][:n].astype(np.float32), d["y"][:n].astype(np.intp)
    name = (f"mnist1d (procedurally generated 1-D signals of length {X.shape[1]}; the first {n} "
            f"of its {len(d['y'])} training examples, its {len(d['y_test'])} test examples for "
            "validation)")
    return Dataset(X, y, d["x_test"].astype(np.float32), d["y_test"].astype(np.intp), name, 10)
