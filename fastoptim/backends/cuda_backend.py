"""CUDA backend: one fused ``@cuda.jit`` kernel per optimizer, one pass over memory.

The per-element math is ``_math.sgd_update`` / ``_math.adam_update``, the very
functions the Numba CPU backend compiles, here compiled as CUDA device
functions: the CPU and GPU backends cannot drift apart. Kernels are grid-stride
loops over 1-D contiguous device arrays, compiled once per dtype (float32,
float64) on first use (and cached on disk); every flag is a run-time argument.
As on the CPU, the loop is split on the flags that decide which arrays are
read and written (momentum, first step, amsgrad). A list of tensors steps in
one launch through a pointer table (``_cuda_multi.py``); the gradient norms,
the device clip factor and the clip operations are ``_reduce_cuda.py``'s.

No host-device synchronization happens inside a step: the per-step scalars
(bias corrections, ...) come from ``_scalars`` on the host and travel as kernel
arguments; the step counter counts launches on the host (and, under
``skip_nonfinite``, skipped steps on the device: ``_cuda.DeviceStep``). The launch configuration
``kernel[blocks, threads, stream]`` is built once per (size bucket, stream) and
cached (``fastoptim.arrays.cuda_runtime.configured``).

Streams
-------
Every launch (and fastoptim's own fills and copies) goes to the stream in
effect, by default the CUDA default stream (legacy stream 0: torch's default
stream and CuPy's null stream, so work queued there by either is ordered
before the step without any synchronization). To use another stream::

    from fastoptim.backends import cuda_backend
    cuda_backend.set_stream(s)          # from now on (None: back to the default)
    with cuda_backend.use_stream(s):    # inside the block only (this thread / task)
        opt.step(grads)

``s`` may be a ``numba.cuda.stream()``, a ``torch.cuda.Stream``, a
``cupy.cuda.Stream`` or a raw ``cudaStream_t`` (int). The caller orders work
across streams (for example, gradients computed on another stream must be
finished, or that stream made the current one here, before ``step``).
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from ..arrays import device as _cuda
from . import _cuda_multi as _multi
from . import _math
from . import _reduce_cuda as _reduce
from ._cuda_multi import POINTER_KERNELS
from ._jit import cache_named
from ._scalars import adam_scalars, lion_scalars, sgd_scalars

if _cuda.cuda is None:  # the registry reports this backend as unavailable
    raise ImportError(_cuda.why_unavailable())

cuda = _cuda.cuda
name = "cuda"

set_stream = _cuda.set_stream
get_stream = _cuda.get_stream
use_stream = _cuda.use_stream


def usable() -> bool:
    return _cuda.is_available()


def why_unusable() -> str:
    return _cuda.why_unavailable()



# the per-element math (_math's), as the device functions every update kernel shares
_sgd_update, _adam_update = _multi.sgd_update, _multi.adam_update
_true_step_scalars = _multi.true_step_scalars
_lion_update = cuda.jit(device=True, inline=True)(_math.lion_update)
_address, _table, _nonempty = _multi.address, _multi.table, _multi.nonempty
_CACHE = not _cuda.SIMULATOR


@cuda.jit(device=True, inline=True)
def _first_step_pending(pending):
    """True when the buffer's first steps were all skipped on the device (``pending[0]``),
    for every thread of the grid; the last block to read it clears it (``pending[1]``
    counts the blocks that have read it), so the next launch uses the momentum rule."""
    if pending[0] == 0:
        return False
    cuda.syncthreads()  # every thread of this block has read pending[0]
    if cuda.threadIdx.x == 0:
        if cuda.atomic.add(pending, 1, 1) == cuda.gridDim.x - 1:  # the last block to read
            pending[0] = 0
            pending[1] = 0
    return True


def _sgd_kernel(param, grad, buf, ctrl, pending, grad_scale, neg_lr, weight_decay, momentum,
                one_minus_dampening, has_weight_decay, has_momentum, first_step, nesterov,
                maximize, track_first):
    if ctrl[1] != 0:  # skip_nonfinite found a NaN/Inf gradient (on the device)
        if track_first and first_step and cuda.grid(1) == 0:
            pending[0] = 1  # the buffer holds no first step yet: the next real one is it
        return
    if track_first and _first_step_pending(pending):
        first_step = True
    grad_scale = grad_scale * ctrl[0]  # the clip factor computed on the device (else 1)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = param.shape[0]
    if has_momentum and not first_step:
        for i in range(start, n, stride):
            param[i], buf[i] = _sgd_update(param[i], grad[i], buf[i], grad_scale, neg_lr,
                                           weight_decay, momentum, one_minus_dampening,
                                           has_weight_decay, True, False, nesterov, maximize)
    elif has_momentum:  # first step: the buffer is written, not read
        for i in range(start, n, stride):
            p = param[i]
            param[i], buf[i] = _sgd_update(p, grad[i], p, grad_scale, neg_lr, weight_decay,
                                           momentum, one_minus_dampening, has_weight_decay,
                                           True, True, nesterov, maximize)
    else:
        for i in range(start, n, stride):
            p = param[i]
            param[i], _ = _sgd_update(p, grad[i], p, grad_scale, neg_lr, weight_decay,
                                      momentum, one_minus_dampening, has_weight_decay,
                                      False, False, nesterov, maximize)


_sgd_kernel = cuda.jit(cache=_CACHE)(cache_named(_sgd_kernel))  # cached under its code's digest


def _adam_kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, ctrl, cell, grad_scale,
                 lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                 bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                 weight_decay_mode, amsgrad, maximize, attempted, lr):
    if ctrl[1] != 0:  # skip_nonfinite found a NaN/Inf gradient (on the device)
        if cuda.grid(1) == 0:
            cell[0] += 1  # one step fewer than the host counted (no other thread reads it)
        return
    grad_scale = grad_scale * ctrl[0]  # the clip factor computed on the device (else 1)
    if cell[0] != 0:  # steps were skipped on the device: the bias corrections of the true step
        neg_step_size, bias_correction2_sqrt = _true_step_scalars(
            attempted - cell[0], lerp_weight, one_minus_beta2, lr)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = param.shape[0]
    if amsgrad:
        for i in range(start, n, stride):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = _adam_update(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale,
                lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, True, maximize)
    else:
        for i in range(start, n, stride):
            v = exp_avg_sq[i]
            param[i], exp_avg[i], exp_avg_sq[i], _ = _adam_update(
                param[i], grad[i], exp_avg[i], v, v, grad_scale,
                lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, False, maximize)


_adam_kernel = cuda.jit(cache=_CACHE)(cache_named(_adam_kernel))  # cached under its code's digest


def _lion_kernel(param, grad, exp_avg, ctrl, grad_scale, neg_lr, beta1, one_minus_beta1, beta2,
                 one_minus_beta2, decay_factor, has_weight_decay, maximize):
    if ctrl[1] != 0:  # skip_nonfinite found a NaN/Inf gradient (on the device)
        return
    grad_scale = grad_scale * ctrl[0]  # the clip factor computed on the device (else 1)
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, param.shape[0], stride):
        param[i], exp_avg[i] = _lion_update(param[i], grad[i], exp_avg[i], grad_scale, neg_lr,
                                            beta1, one_minus_beta1, beta2, one_minus_beta2,
                                            decay_factor, has_weight_decay, maximize)


_lion_kernel = cuda.jit(cache=_CACHE)(cache_named(_lion_kernel))  # cached under its code's digest


def _configured(kernel, n):
    """The cached launcher for ``n`` elements on the current stream (tests wrap this)."""
    return _cuda.configured(kernel, n)


def _check_device(param):
    if isinstance(param, np.ndarray):
        raise TypeError("the cuda backend updates CUDA device arrays, not host NumPy arrays")


def _control(grad_scale, dtype):
    """(host factor, device [factor, skip] buffer) for one launch."""
    if isinstance(grad_scale, _reduce.GradControl):
        return 1.0, grad_scale.for_dtype(dtype)
    return grad_scale, _reduce.no_control(dtype)


def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    _check_device(param)
    pending, track = _first_cell(momentum_buffer, grad_scale, momentum, dampening, first_step,
                                 param.dtype)
    grad_scale, ctrl = _control(grad_scale, param.dtype)
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    n = param.shape[0]
    if n == 0:
        return
    buf = param if momentum_buffer is None else momentum_buffer  # unused without momentum
    _configured(_sgd_kernel, n)(param, grad, buf, ctrl, pending, *s, bool(first_step),
                                bool(nesterov), bool(maximize), track)


class FirstStepCells(dict):
    """SGD's "first step still pending" cells of one optimizer (momentum, dampening != 0,
    ``skip_nonfinite``), keyed by (address, length, dtype) of the momentum buffer.

    A skipped step changes nothing, so a buffer whose first steps were all
    skipped must take the first-step rule (``buf = g``, not ``momentum * buf +
    (1 - dampening) * g``) at its first real step. The host does not know which
    steps the device skipped, so each such buffer gets a two-element int64
    device cell ``[pending, blocks]``, zero at allocation: a skipped launch with
    ``first_step`` sets ``pending``, a later launch that finds it set takes the
    first-step rule and clears it (see ``_first_step_pending``). Each value is
    ``(owner, cell)``: ``owner()`` is the object that owns the buffer's memory
    (weakly referenced), so an entry whose memory was freed, whose address
    another array may now have, is never used.
    """

    sweep_at = 64

    def __deepcopy__(self, memo):  # a copy's buffers live elsewhere: it starts afresh
        return FirstStepCells()

    def live(self, key):
        hit = self.get(key)
        if hit is not None and hit[0]() is None:  # the memory was freed
            del self[key]
            return None
        return hit

    def add(self, key, buf, cell):
        if len(self) >= self.sweep_at:  # drop the entries of freed buffers now and then
            for k in [k for k, (owner, _) in self.items() if owner() is None]:
                del self[k]
            self.sweep_at = 2 * len(self) + 64
        hit = self[key] = (_memory_owner(buf), cell)
        return hit


def _memory_owner(buf):
    """A weak reference to the object that owns ``buf``'s memory, which every view of it
    keeps alive (Numba's ``gpu_data``; under the simulator, the root host array); where
    none can be taken, a strong one (the memory then stays while the entry does)."""
    owner = getattr(buf, "gpu_data", None)
    if _cuda.SIMULATOR and isinstance(buf, _cuda._NativeArray):
        owner = buf._ary
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
    if owner is None:
        owner = buf
    try:
        return weakref.ref(owner)
    except TypeError:
        return lambda: owner


def _first_cell(buf, grad_scale, momentum, dampening, first_step, dtype):
    """(device cell, track) for one SGD launch: track is True when this buffer has a
    "first step pending" cell (``FirstStepCells``) that the kernel must read."""
    if (buf is None or momentum == 0 or dampening == 0
            or not isinstance(grad_scale, _reduce.GradControl) or not grad_scale.skip_nonfinite):
        return _reduce.zero_cell(np.int64), False  # never written: track is False
    cells = getattr(grad_scale, "first_cells", None)
    if cells is None:  # a control made outside an optimizer (check_gradients sets it)
        cells = grad_scale.first_cells = FirstStepCells()
    key = (_address(buf), int(math.prod(buf.shape)), np.dtype(dtype))
    if first_step:  # a new buffer: a new cell, zero (not pending) until a launch is skipped
        hit = cells.add(key, buf, _cuda.zeros(2, np.int64))
    else:
        hit = cells.live(key)
        if hit is None:
            hit = _inherit_cell(cells, key, buf)
            if hit is None:
                return _reduce.zero_cell(np.int64), False
    return hit[1], True


def _inherit_cell(cells, key, buf):
    """A view of a pending buffer (a FlatParams group stepping per tensor after a partial
    step) gets its own cell, a device copy of the whole buffer's (no host wait)."""
    address, n, dtype = key
    end = address + n * dtype.itemsize
    for (a, m, dt), (owner, cell) in list(cells.items()):
        if (dt == dtype and a <= address and end <= a + m * dt.itemsize and (a, m) != key[:2]
                and owner() is not None):
            own = cuda.device_array(2, dtype=np.int64)
            own.copy_to_device(cell, stream=_cuda.get_stream())
            return cells.add(key, buf, own)
    return None


def _step_cell(step, grad_scale, dtype):
    """(host step count, device cell of skipped steps) for one launch.

    A ``DeviceStep`` under a ``skip_nonfinite`` control gets its own cell (the
    kernel counts a skipped step there); otherwise its existing cell, or a
    shared cell holding 0 (never written: no skip can happen then).
    """
    if isinstance(step, _cuda.DeviceStep):
        if isinstance(grad_scale, _reduce.GradControl) and grad_scale.skip_nonfinite:
            return step.attempted, step.ensure_cell(dtype)
        if step.cell is not None:
            return step.attempted, step.cell
        return step.attempted, _reduce.zero_cell(dtype)
    if isinstance(grad_scale, _reduce.GradControl) and grad_scale.skip_nonfinite:
        return float(step), _cuda.zeros(1, dtype)  # a plain count: a cell of its own, dropped
    return float(step), _reduce.zero_cell(dtype)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    """``step``: a number, or the optimizer's ``DeviceStep`` (see ``_cuda.DeviceStep``)."""
    _check_device(param)
    step, cell = _step_cell(step, grad_scale, param.dtype)
    grad_scale, ctrl = _control(grad_scale, param.dtype)
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    n = param.shape[0]
    if n == 0:
        return
    vmax = exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq  # unused without amsgrad
    t = np.dtype(param.dtype).type
    _configured(_adam_kernel, n)(param, grad, exp_avg, exp_avg_sq, vmax, ctrl, cell, *s,
                                 bool(amsgrad), bool(maximize), t(step), t(lr))


def lion(param, grad, exp_avg, *, lr, beta1, beta2, weight_decay, maximize, grad_scale=1.0):
    _check_device(param)
    grad_scale, ctrl = _control(grad_scale, param.dtype)
    s = lion_scalars(param.dtype, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                     grad_scale=grad_scale)
    if param.shape[0] == 0:
        return
    _configured(_lion_kernel, param.shape[0])(param, grad, exp_avg, ctrl, *s, bool(maximize))


# ------------------------------------------------- max_grad_norm / skip_nonfinite
def check_gradients(opt, grads):
    """The CUDA half of ``Optimizer._check_gradients``: the 2-norm, torch's clip factor and
    the non-finite flag of ``grads`` computed on the device, into a persistent buffer.

    Returns what ``_update`` passes as ``grad_scale``: a ``GradControl`` whose
    device buffers the update kernels read (factor and skip flag), or None when
    ``skip_nonfinite`` found a NaN/Inf. Sets ``opt.last_grad_norm`` to a callable
    that copies the norm back only when asked (the optimizer's property calls it).

    The host does not wait for the GPU: the update kernels skip by themselves,
    Adam's ``DeviceStep`` counters count the skipped steps on the device, and
    SGD's momentum buffers (with ``dampening != 0``) keep a device cell saying
    that their first step is still to come (``FirstStepCells``);
    ``opt.last_step_skipped`` / ``skipped_steps`` become callables that the
    optimizer's properties resolve when read.
    """
    flats = [_cuda.DeviceArrays.ravel(g) for g in grads]
    layout = tuple((int(f.shape[0]), np.dtype(f.dtype)) for f in flats)
    old = control = getattr(opt, "_cuda_grad_control", None)
    if control is None or control.layout != layout:
        control = _reduce.GradControl(layout)
        opt._cuda_grad_control = control
    cells = opt.__dict__.get("_cuda_first_cells")
    if cells is None:  # one per optimizer: it outlives a control rebuilt for a new layout
        cells = opt._cuda_first_cells = FirstStepCells()
    control.first_cells = cells
    if opt.skip_nonfinite and control.skipped_base is None:
        # the control's device count (ctrl[4]) is still 0: it counts only while skip_nonfinite
        # is on, and this is the first such step on it. The count so far is the optimizer's;
        # if it is still on the control of an earlier gradient layout, it moves over by a
        # device copy (no wait) when the dtypes match, else it is read (one wait)
        if (callable(opt._skipped_steps) and old is not None and old is not control
                and old.skipped_base is not None and old.result == control.result):
            control.ctrl[4:5].copy_to_device(old.ctrl[4:5], stream=_cuda.get_stream())
            control.skipped_base = old.skipped_base
        else:
            control.skipped_base = opt.skipped_steps
    control.run(flats, opt.max_grad_norm, opt.skip_nonfinite)
    opt.last_grad_norm = lambda: control.read()[0]
    if opt.skip_nonfinite and not _skips_on_device(opt):  # kernels unknown here: ask the host
        norm, _bad, skip = control.read()
        opt.last_grad_norm = norm
        opt.last_step_skipped = bool(skip)
        opt.skipped_steps = control.skipped_base + int(control.read_skips())
        return None if skip else control
    if opt.skip_nonfinite:  # the kernels skip on the device; the host learns it when it asks
        opt.last_step_skipped = lambda: control.read()[2]
        opt.skipped_steps = lambda: control.skipped_base + int(control.read_skips())
    return control


def _skips_on_device(opt):
    """SGD, Adam and AdamW kernels skip by themselves (and count or mark it on the device);
    another optimizer's kernels may not, so for it the host reads the flag (one wait)."""
    from ..optimizers import SGD, Adam

    return isinstance(opt, (SGD, Adam))


# -------------------------------------------------------- one launch for a list
# The pointer table and its kernels are _cuda_multi.py's; here the scalars, the
# control buffers and the cells of each launch are prepared as for one array.
def sgd_multi(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay,
              nesterov, maximize, first_step, grad_scale=1.0):
    """``sgd`` over lists of same-dtype, checked, contiguous device arrays in one launch.

    ``momentum_buffers`` is a list (entries unused without momentum) or None.
    The arrays must already have passed the optimizer's checks (as for ``sgd``).
    """
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    bufs = momentum_buffers if momentum_buffers is not None else [None] * len(params)
    if _cuda.SIMULATOR or not POINTER_KERNELS:
        for p, g, b in zip(params, grads, bufs):
            sgd(_cuda.DeviceArrays.ravel(p), _cuda.DeviceArrays.ravel(g),
                None if b is None else _cuda.DeviceArrays.ravel(b), lr=lr, momentum=momentum,
                dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                maximize=maximize, first_step=first_step, grad_scale=grad_scale)
        return
    keep = _nonempty(params)
    if not keep:
        return
    cells, track = [], False
    for i in keep:
        cell, tracked = _first_cell(bufs[i], grad_scale, momentum, dampening, first_step, dtype)
        cells.append(cell)
        track = track or tracked
    grad_scale, ctrl = _control(grad_scale, dtype)
    s = sgd_scalars(dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    ps = [params[i] for i in keep]
    gs = [grads[i] for i in keep]
    bs = [bufs[i] if bufs[i] is not None else params[i] for i in keep]
    # column 3: each buffer's "first step pending" cell; row 0, column 4: the launch's
    # count of blocks done (the last one clears the cells it found pending)
    table, total = _table((ps, gs, bs, cells), [math.prod(p.shape) for p in ps])
    _configured(_multi.sgd_multi_kernel, total)(table, total, ctrl, *s, bool(first_step),
                                                bool(nesterov), bool(maximize), track)


def adam_multi(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1,
               beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay,
               grad_scale=1.0):
    """``adam`` over lists of same-dtype, checked, contiguous device arrays in one launch.

    ``step``: one number for every tensor, or a list of the tensors' ``DeviceStep``
    counters, all with the same host count (call once per distinct count);
    ``max_exp_avg_sqs`` is a list with amsgrad, else None.
    """
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    vmaxes = max_exp_avg_sqs if max_exp_avg_sqs is not None else [None] * len(params)
    if _cuda.SIMULATOR or not POINTER_KERNELS:
        ravel = _cuda.DeviceArrays.ravel
        steps = step if isinstance(step, list) else [step] * len(params)
        for p, g, m, v, w, t in zip(params, grads, exp_avgs, exp_avg_sqs, vmaxes, steps):
            adam(ravel(p), ravel(g), ravel(m), ravel(v), None if w is None else ravel(w),
                 step=t, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                 weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                 decoupled_weight_decay=decoupled_weight_decay, grad_scale=grad_scale)
        return
    keep = _nonempty(params)
    if not keep:
        return
    steps = step if isinstance(step, list) else [step] * len(params)
    cells = []
    for i in keep:
        count, cell = _step_cell(steps[i], grad_scale, dtype)
        cells.append(cell)
    grad_scale, ctrl = _control(grad_scale, dtype)
    s = adam_scalars(dtype, step=count, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    pick = [[a[i] for i in keep] for a in (params, grads, exp_avgs, exp_avg_sqs)]
    ws = [vmaxes[i] if vmaxes[i] is not None else exp_avg_sqs[i] for i in keep]
    table, total = _table((*pick, ws, cells), [math.prod(p.shape) for p in pick[0]])
    t = dtype.type
    _configured(_multi.adam_multi_kernel, total)(table, total, ctrl, *s, bool(amsgrad),
                                                 bool(maximize), t(count), t(lr))


# ------------------------------------------------------------- CI compile check
def compile_targets():
    """(name, Python function, argument types, float32?) of every kernel fastoptim launches.

    Used by tests/test_cuda_compile.py, which compiles each one to PTX for
    sm_80 and sm_90 with ``cuda.compile_ptx`` (no GPU needed) and checks that
    the float32 ones contain no float64 instruction.
    """
    from numba import types as T

    targets = []
    for dt in (T.float32, T.float64):
        f32 = dt == T.float32
        arr, ctrl = dt[::1], dt[::1]
        sgd_sig = (arr, arr, arr, ctrl, T.int64[::1], dt, dt, dt, dt, dt, T.boolean, T.boolean,
                   T.boolean, T.boolean, T.boolean, T.boolean)
        adam_sig = (arr, arr, arr, arr, arr, ctrl, arr, dt, dt, dt, T.boolean, dt, dt, dt, dt,
                    dt, dt, dt, T.int64, T.boolean, T.boolean, dt, dt)
        lion_sig = (arr, arr, arr, ctrl, dt, dt, dt, dt, dt, dt, dt, T.boolean, T.boolean)
        table = T.int64[:, ::1]
        targets += [
            (f"lion_{dt}", _lion_kernel.py_func, lion_sig, f32),
            (f"sgd_{dt}", _sgd_kernel.py_func, sgd_sig, f32),
            (f"adam_{dt}", _adam_kernel.py_func, adam_sig, f32),
            (f"sgd_multi_{dt}", _multi._sgd_multi, (table, T.int64, ctrl) + sgd_sig[5:], f32),
            (f"adam_multi_{dt}", _multi._adam_multi, (table, T.int64) + adam_sig[5:6] + adam_sig[7:],
             f32),
            (f"fill_{dt}", _cuda._fill_kernel.py_func, (arr, dt), f32),
        ]
        if f32:  # the int64 cells (SGD's "first step pending"): no float at all
            targets.append(("fill_int64", _cuda._fill_kernel.py_func,
                            (T.int64[::1], T.int64), True))
        mat = dt[:, ::1]
        for name, dtype, fn in _reduce.python_functions():
            if np.dtype(dtype) != np.dtype(str(dt)):
                continue
            if name.startswith("stats_chunks"):
                sig = (T.int64[:, ::1], mat, dt)
            elif name.startswith("stats"):
                sig = (arr, T.int64, dt, mat, T.int64)
            elif name.startswith("finalize"):
                sig = (T.float32[:, ::1], mat, T.int64[:, ::1], dt, T.boolean, T.boolean, arr,
                       T.float32[::1])
            else:
                sig = (arr, arr)
            targets.append((name, fn, sig, f32))
        targets += [(f"clip_scale_{dt}", _reduce._scale_grid, (arr, dt), f32),
                    (f"clip_clamp_{dt}", _reduce._clamp_grid, (arr, dt, dt), f32)]
    targets.append(("probe_float32", _cuda._probe_kernel.py_func, (T.float32[::1], T.float32),
                    True))
    return targets  # (the benchmark's kernels: tests/cuda_compile_check.py adds them)


# gradient norms and clipping (clip.py's operations, see backends/__init__): _reduce_cuda.py
from ._reduce_cuda import all_finite, clamp_, norm_stats, scale_  # noqa: E402,F401
