"""The demo's models, in plain NumPy with hand-written backward passes.

- :class:`MLP`: fully connected layers with ReLU, optionally with batch
  normalization before each ReLU (``batch_norm=True``);
- :class:`CNN1d`: 1-D convolutions (im2col plus one BLAS matmul per layer) with
  ReLU, then a linear classifier; for signals such as mnist1d's.

Both keep their parameters in one :class:`~fastoptim.FlatParams` buffer:
``model.params`` and ``model.grads`` are dicts of views into two flat arrays, so
``opt.step(model.grads)`` is one kernel call. ``loss_and_backward(x, y)``
returns the batch's mean softmax cross-entropy and writes its gradient into
``model.grads``; ``evaluate(x, y)`` returns ``(loss, accuracy)`` in inference
mode (batch norm uses its running statistics there).

The functions :func:`init_mlp`, :func:`forward`, :func:`backward` and
:func:`loss_and_grads` are the MLP as plain functions of a parameter dict, and
the only code of its layers: :class:`MLP` calls them (inserting its batch norm
through their ``norm`` hooks), ``examples/mlp.py`` trains :class:`MLP`, and the
training-loop benchmark (``fastoptim.bench.loop``) runs them on its own models.
"""
from __future__ import annotations

import math

import numpy as np

import fastoptim

DEFAULT_SIZES = (64, 128, 64, 10)
BN_EPS = 1e-5        # torch.nn.BatchNorm1d's defaults
BN_MOMENTUM = 0.1


# -- the plain functions ------------------------------------------------------
def init_mlp(sizes=DEFAULT_SIZES, seed=0, dtype=np.float32):
    """He-initialized weights ``W1..Wn`` (fan_in x fan_out) and zero biases ``b1..bn``."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        params[f"W{i}"] = (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
    return params


def forward(params, X, norm=None):
    """Return the logits and the activations ``[X, h1, ..., logits]`` the backward pass needs.

    ``norm(i, h) -> h``, when given, normalizes hidden layer ``i``'s pre-activation before
    its ReLU (the batch-norm MLP's hook)."""
    n_layers = sum(1 for k in params if k.startswith("W"))
    acts = [X]
    h = X
    for i in range(1, n_layers + 1):
        h = h @ params[f"W{i}"]
        h += params[f"b{i}"]
        if i < n_layers:
            if norm is not None:
                h = norm(i, h)
            np.maximum(h, 0, out=h)  # ReLU
        acts.append(h)
    return h, acts


def cross_entropy(logits, y):
    """Mean softmax cross-entropy over the batch and its gradient with respect to the logits."""
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_norm
    loss = -float(log_p[np.arange(n), y].mean())
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    return loss, dlogits


def backward(params, acts, dlogits, grads, norm_backward=None):
    """Write d(loss)/d(param) for every parameter into ``grads`` (a dict of arrays).

    ``norm_backward(i, d) -> d``, when given, takes the gradient back through hidden layer
    ``i``'s normalization (the inverse of ``forward``'s ``norm``)."""
    n_layers = sum(1 for k in params if k.startswith("W"))
    d = dlogits
    for i in range(n_layers, 0, -1):
        np.matmul(acts[i - 1].T, d, out=grads[f"W{i}"])
        d.sum(axis=0, out=grads[f"b{i}"])
        if i > 1:
            d = d @ params[f"W{i}"].T
            d *= acts[i - 1] > 0  # ReLU passes the gradient where its output was positive
            if norm_backward is not None:
                d = norm_backward(i - 1, d)
    return grads


def loss_and_grads(params, X, y, grads=None):
    """Forward and backward: ``(loss, grads)``; fills ``grads`` in place when given."""
    logits, acts = forward(params, X)
    loss, dlogits = cross_entropy(logits, y)
    if grads is None:
        grads = {k: np.empty_like(v) for k, v in params.items()}
    backward(params, acts, dlogits, grads)
    return loss, grads


def evaluate(params, X, y):
    """``(mean cross-entropy, accuracy)`` on ``(X, y)``."""
    logits, _ = forward(params, X)
    loss, _ = cross_entropy(logits, y)
    return loss, float((logits.argmax(axis=1) == y).mean())


# -- batch normalization -------------------------------------------------------
def batch_norm_forward(h, gamma, beta, running_mean, running_var, train, momentum=BN_MOMENTUM,
                       eps=BN_EPS):
    """torch.nn.BatchNorm1d on ``h`` (batch x features). In training mode it normalizes with
    the batch's statistics and updates the running ones in place (unbiased variance, as torch);
    otherwise it uses the running ones. Returns ``(out, cache)``."""
    if train:
        mean = h.mean(axis=0)
        var = h.var(axis=0)
        n = h.shape[0]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (n / max(1, n - 1))
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (h - mean) * inv_std
    return xhat * gamma + beta, (xhat, inv_std)


def batch_norm_backward(dout, gamma, cache, dgamma, dbeta):
    """Gradient through a training-mode batch norm: returns d(loss)/d(h); writes dgamma, dbeta."""
    xhat, inv_std = cache
    np.sum(dout * xhat, axis=0, out=dgamma)
    np.sum(dout, axis=0, out=dbeta)
    dxhat = dout * gamma
    return inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))


class _Model:
    """What both models share: the flat buffers, the loss, evaluation."""

    def _finish_init(self, arrays):
        self.flat = fastoptim.FlatParams(arrays)
        self.params = self.flat.params  # what the optimizer updates, in place
        self.grads = self.flat.grads    # what loss_and_backward writes

    def loss_and_backward(self, x, y):
        """Mean cross-entropy of the batch (training mode); writes its gradient into ``self.grads``."""
        logits = self.forward(x, train=True)
        loss, dlogits = cross_entropy(logits, y)
        self.backward(dlogits)
        return loss

    def evaluate(self, x, y, batch=2048):
        """``(mean cross-entropy, accuracy)`` on ``(x, y)`` in inference mode."""
        total, correct = 0.0, 0
        for start in range(0, len(y), batch):
            logits = self.forward(x[start:start + batch], train=False)
            loss, _ = cross_entropy(logits, y[start:start + batch])
            total += loss * len(logits)
            correct += int((logits.argmax(axis=1) == y[start:start + batch]).sum())
        return total / len(y), correct / len(y)

    def accuracy(self, x, y):
        return self.evaluate(x, y)[1]

    def weight_mask(self):
        """Boolean mask over the flat buffer: True on weights (``W*``), False on biases and BN."""
        mask = np.zeros(self.flat.buffer.size, dtype=bool)
        for (name, view), start in zip(self.params.items(), self.flat.offsets[:-1]):
            if name.startswith("W"):
                mask[start:start + view.size] = True
        return mask


class MLP(_Model):
    """Fully connected layers with ReLU between them and softmax cross-entropy on top.

    ``params``: ``W1, b1, W2, b2, ...`` (``W`` is fan_in x fan_out, so a layer is
    ``x @ W + b``); with ``batch_norm=True`` also ``gamma1, beta1, ...``, one batch
    norm (torch's BatchNorm1d: eps 1e-5, momentum 0.1, running statistics for
    evaluation) between each hidden linear layer and its ReLU.
    """

    def __init__(self, sizes=DEFAULT_SIZES, seed=0, dtype=np.float32, batch_norm=False):
        self.sizes, self.batch_norm = tuple(sizes), bool(batch_norm)
        self.n_layers = len(sizes) - 1
        arrays = init_mlp(sizes, seed, dtype)
        self.running = {}
        if batch_norm:
            for i in range(1, self.n_layers):
                arrays[f"gamma{i}"] = np.ones(sizes[i], dtype)
                arrays[f"beta{i}"] = np.zeros(sizes[i], dtype)
                self.running[i] = (np.zeros(sizes[i], dtype), np.ones(sizes[i], dtype))
        self._finish_init(arrays)

    def forward(self, x, train=True):
        """Logits; in training mode keeps what the backward pass needs."""
        self._bn = {}

        def norm(i, h):
            h, self._bn[i] = batch_norm_forward(h, self.params[f"gamma{i}"],
                                                self.params[f"beta{i}"], *self.running[i], train)
            return h

        logits, self._acts = forward(self.params, x, norm if self.batch_norm else None)
        return logits

    def backward(self, dlogits):
        p, g = self.params, self.grads

        def norm_backward(i, d):
            return batch_norm_backward(d, p[f"gamma{i}"], self._bn[i], g[f"gamma{i}"],
                                       g[f"beta{i}"])

        backward(p, self._acts, dlogits, g, norm_backward if self.batch_norm else None)


def _window_index(length, kernel, stride, pad):
    """Output length and the (out_len x kernel) input positions (in the padded signal) of a conv."""
    out_len = (length + 2 * pad - kernel) // stride + 1
    return out_len, np.arange(out_len)[:, None] * stride + np.arange(kernel)[None, :]


class CNN1d(_Model):
    """1-D convolutions with ReLU, then a linear layer, and softmax cross-entropy on top.

    Input: ``(batch, length)`` signals (one channel) or ``(batch, length, channels)``.
    Activations are channels-last, ``(batch, length, channels)``. A convolution
    is im2col plus one matmul: the windows are gathered into a
    ``(batch*out_len, kernel*channels)`` matrix that multiplies the weight
    ``W`` of shape ``(kernel*channels, out_channels)``. ``channels`` lists the
    output channels of each convolution; all use ``kernel``, ``stride`` and
    zero padding ``kernel // 2``.
    """

    def __init__(self, length=40, in_channels=1, channels=(32, 32, 32), n_classes=10, kernel=5,
                 stride=2, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.kernel, self.stride, self.pad = kernel, stride, kernel // 2
        self.in_channels = in_channels
        self.shapes = []  # (in_len, in_ch, out_len) per conv
        arrays = {}
        L, c_in = length, in_channels
        for i, c_out in enumerate(channels, 1):
            out_len, _ = _window_index(L, kernel, stride, self.pad)
            fan_in = kernel * c_in
            arrays[f"W{i}"] = (rng.standard_normal((fan_in, c_out)) * math.sqrt(2.0 / fan_in)).astype(dtype)
            arrays[f"b{i}"] = np.zeros(c_out, dtype)
            self.shapes.append((L, c_in, out_len))
            L, c_in = out_len, c_out
        i = len(channels) + 1
        fan_in = L * c_in
        arrays[f"W{i}"] = (rng.standard_normal((fan_in, n_classes)) * math.sqrt(2.0 / fan_in)).astype(dtype)
        arrays[f"b{i}"] = np.zeros(n_classes, dtype)
        self.n_conv = len(channels)
        self._index = [_window_index(s[0], kernel, stride, self.pad)[1] for s in self.shapes]
        self._finish_init(arrays)

    def forward(self, x, train=True):
        p = self.params
        n = x.shape[0]
        if x.ndim == 2:
            x = x.reshape(n, -1, 1)
        self._cols, self._outs = [], []
        for i in range(1, self.n_conv + 1):
            L, c_in, out_len = self.shapes[i - 1]
            xp = np.zeros((n, L + 2 * self.pad, c_in), dtype=x.dtype)
            xp[:, self.pad:self.pad + L] = x
            cols = xp[:, self._index[i - 1], :].reshape(n * out_len, self.kernel * c_in)  # im2col
            h = cols @ p[f"W{i}"]
            h += p[f"b{i}"]
            np.maximum(h, 0, out=h)
            self._cols.append(cols)
            self._outs.append(h)
            x = h.reshape(n, out_len, -1)
        i = self.n_conv + 1
        flat_in = x.reshape(n, -1)
        self._flat_in = flat_in
        return flat_in @ p[f"W{i}"] + p[f"b{i}"]

    def backward(self, dlogits):
        p, g = self.params, self.grads
        n = dlogits.shape[0]
        i = self.n_conv + 1
        np.matmul(self._flat_in.T, dlogits, out=g[f"W{i}"])
        dlogits.sum(axis=0, out=g[f"b{i}"])
        d = (dlogits @ p[f"W{i}"].T).reshape(n * self.shapes[-1][2], -1)
        for i in range(self.n_conv, 0, -1):
            L, c_in, out_len = self.shapes[i - 1]
            d *= self._outs[i - 1] > 0  # ReLU
            np.matmul(self._cols[i - 1].T, d, out=g[f"W{i}"])
            d.sum(axis=0, out=g[f"b{i}"])
            if i == 1:
                break
            dcols = (d @ p[f"W{i}"].T).reshape(n, out_len, self.kernel, c_in)
            dxp = np.zeros((n, L + 2 * self.pad, c_in), dtype=d.dtype)
            s = self.stride
            for j in range(self.kernel):  # col2im: scatter each tap back to its input positions
                dxp[:, j:j + s * (out_len - 1) + 1:s] += dcols[:, :, j]
            d = dxp[:, self.pad:self.pad + L].reshape(n * L, c_in)
