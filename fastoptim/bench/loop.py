"""``fastoptim bench --loop``: the optimizer inside a real NumPy training loop.

An optimizer that wins alone can lose in a loop: between its steps BLAS runs the
forward and backward matmuls with threads of its own, and the two sides share the
cores. This benchmark trains a plain NumPy MLP (ReLU, softmax cross-entropy, a
hand-written backward pass of ``@`` matmuls into preallocated gradients) for a
fixed number of Adam steps per repeat, with every contestant on the same model,
data and batches:

- ``numpy``: fastoptim's NumPy reference backend (every ratio divides by it);
- every fast fastoptim backend (``numba``, ``c``) and ``backend="auto"``;
- ``torch fused``: ``torch.optim.Adam(fused=True)`` on zero-copy ``torch.from_numpy``
  views of the same arrays (when torch is importable);
- ``numpy in-place``: a hand-written in-place NumPy Adam with one scratch array, the
  kind NumPy code bases carry (textbook formula, not torch's rounding).

Before a contestant is timed, ``CHECK_STEPS`` training steps from the same initial
weights are compared with the reference: fastoptim backends must match it bit for
bit, the others within ``PEER_RTOL``. A contestant that fails is reported, never timed.
Timed repeats are interleaved across contestants (round 1 of each, round 2 of each,
...); whole-loop time and the optimizer's own time (``perf_counter`` around each
``step``) are medians over repeats, reported as ratios to the reference of the same run.

``dispatch`` contestants (``run(dispatch=...)``) are ``backend="auto"`` with other
thread-policy thresholds (``backends._threads.set_dispatch``): the in-loop crossover
between the serial and the parallel kernels.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import fastoptim
from fastoptim import backends as _backends
from fastoptim.backends import _threads
from fastoptim.demo.models import backward, forward, init_mlp

from .contestants import import_torch
from .rendering import progress_bar
from .specs import format_size, format_time

# name -> (layer widths, batch)
MODELS = {
    "100K": ((128, 256, 256, 10), 64),  # 101,386 parameters
    "3M": ((784, 1024, 1024, 1024, 10), 128),  # 2,913,290 parameters
}
DEFAULT_MODELS = ("100K", "3M")
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_STEPS, SHORT_STEPS = 20, 8  # training steps per timed repeat
# The short form (the default run) takes 7 repeats too: with 3, one descheduled repeat on a
# shared 2-core machine moved a median 2x (the same numba kernels, as "numba" and as
# "auto", 180 and 376 us per step in one run); 7 repeats of 8 steps add ~15 s to the run.
DEFAULT_REPEAT, SHORT_REPEAT = 7, 7
CHECK_STEPS = 3
BATCHES = 4  # distinct batches, cycled
LR = 1e-3
PEER_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
REFERENCE = "numpy"
TORCH_FUSED = "torch-fused"
INPLACE = "numpy-inplace"
GOALS = {"loop_vs_numpy": 0.8, "optimizer_speedup": 3.0}
# --loop-dispatch: backend="auto" with parallel kernels from these sizes (None: never)
DISPATCH_SWEEP = (16 * 2**10, 256 * 2**10, 2**20, None)


# --------------------------------------------------------------------------- the model
class MLP:
    """The demo's NumPy MLP with fixed data: weights and gradients as lists of contiguous
    arrays (W1, b1, W2, ...), the way the contestants step them."""

    def __init__(self, widths, batch, dtype, seed=0):
        self.widths, self.batch, self.dtype = tuple(widths), batch, np.dtype(dtype)
        self.init = list(init_mlp(widths, seed, self.dtype).values())  # W1, b1, W2, ...
        rng = np.random.default_rng(seed + 1)  # the data: a linear teacher's labels
        teacher = rng.standard_normal((widths[0], widths[-1]))
        self.batches = []
        for _ in range(BATCHES):
            x = rng.standard_normal((batch, widths[0]))
            labels = np.argmax(x @ teacher, axis=1)
            onehot = np.zeros((batch, widths[-1]))
            onehot[np.arange(batch), labels] = 1.0
            self.batches.append((x.astype(self.dtype), onehot.astype(self.dtype)))

    @property
    def n_params(self) -> int:
        return sum(w.size for w in self.init)

    def fresh(self):
        """(params, grads, step): new copies of the initial weights, gradient buffers and a
        function ``step(k)`` that runs forward and backward on batch ``k``, filling grads.

        The layers are the demo's MLP (``fastoptim.demo.models.forward`` and ``backward``)
        on ``W1, b1, ...`` views of these lists; the loss gradient (softmax cross-entropy)
        is computed in place."""
        params = [w.copy() for w in self.init]
        grads = [np.zeros_like(w) for w in self.init]
        names = [f"{kind}{i}" for i in range(1, len(self.widths)) for kind in "Wb"]
        named_params, named_grads = dict(zip(names, params)), dict(zip(names, grads))
        scale = self.dtype.type(1.0 / self.batch)

        def forward_backward(k):
            x, onehot = self.batches[k % BATCHES]
            logits, acts = forward(named_params, x)
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            delta = logits
            delta -= onehot
            delta *= scale  # d(mean cross-entropy)/d(logits)
            backward(named_params, acts, delta, named_grads)

        return params, grads, forward_backward


# --------------------------------------------------------------------------- contestants
class InPlaceAdam:
    """Adam as NumPy code bases write it: in place, one scratch array per tensor,
    the textbook bias correction (``m_hat / (sqrt(v_hat) + eps)``)."""

    def __init__(self, params, lr=LR, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.scratch = [np.empty_like(p) for p in params]

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_bc2 = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v, s in zip(self.params, grads, self.m, self.v, self.scratch):
            m *= b1
            np.multiply(g, 1 - b1, out=s)
            m += s
            v *= b2
            np.multiply(g, g, out=s)
            s *= 1 - b2
            v += s
            np.sqrt(v, out=s)
            s /= root_bc2
            s += self.eps
            np.divide(m, s, out=s)
            s *= -step_size
            p += s


@dataclass
class Contestant:
    key: str  # "numpy", "numba", "c", "auto", "torch-fused", "numpy-inplace", "auto@64K"
    label: str
    kind: str  # "reference", "fastoptim", "peer", "dispatch"
    make: Callable  # make(params, grads) -> step function taking no argument
    around: Optional[Callable] = None  # context manager factory wrapped around its timing


class _Dispatch:
    """Thread-policy thresholds for one contestant's steps, restored afterwards."""

    def __init__(self, parallel_min, blocked_max_bytes=None):
        self.setting = (parallel_min, blocked_max_bytes)

    def __enter__(self):
        self.previous = _threads.set_dispatch(*self.setting)

    def __exit__(self, *exc):
        _threads.set_dispatch(*self.previous)


def _fastoptim_maker(backend):
    def make(params, grads):
        opt = fastoptim.Adam(params, lr=LR, backend=backend)
        return lambda: opt.step(grads)
    return make


def _torch_maker(torch):
    def make(params, grads):
        tensors = []
        for p, g in zip(params, grads):
            t = torch.from_numpy(p)  # zero-copy views: the loop's arrays are the tensors
            t.grad = torch.from_numpy(g)
            tensors.append(t)
        opt = torch.optim.Adam(tensors, lr=LR, fused=True)
        return opt.step
    return make


def _inplace_maker(params, grads):
    opt = InPlaceAdam(params)
    return lambda: opt.step(grads)


def contestants(backends=None, torch=None, inplace=True, dispatch=()) -> list:
    """The contestants of a loop run, the reference first."""
    names = backends if backends is not None else _backends.available_backends()
    names = [b for b in _backends.CPU_BACKENDS if b in names]
    out = [Contestant(REFERENCE, "numpy (reference)", "reference", _fastoptim_maker(REFERENCE))]
    for b in names:
        if b != REFERENCE:
            out.append(Contestant(b, b, "fastoptim", _fastoptim_maker(b)))
    resolved = _backends.resolve("auto")
    out.append(Contestant("auto", f"auto ({resolved})", "fastoptim", _fastoptim_maker("auto")))
    for parallel_min in dispatch:
        label = ("auto, always serial" if parallel_min is None
                 else f"auto, parallel from {format_size(parallel_min)}")
        key = "auto@serial" if parallel_min is None else f"auto@{format_size(parallel_min)}"
        out.append(Contestant(key, label, "dispatch", _fastoptim_maker("auto"),
                              lambda m=parallel_min: _Dispatch(2**62 if m is None else m)))
    if torch is not None:
        out.append(Contestant(TORCH_FUSED, "torch fused (zero-copy views)", "peer",
                              _torch_maker(torch)))
    if inplace:
        out.append(Contestant(INPLACE, "NumPy in-place Adam (hand-written)", "peer",
                              _inplace_maker))
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- results
@dataclass
class LoopResult:
    model: str
    n_params: int
    batch: int
    dtype: str
    contestant: str
    label: str
    kind: str
    check: str  # "reference", "bit-exact", "close", "mismatch", "error"
    detail: str = ""
    steps: int = 0  # training steps per repeat
    loop_s: Optional[float] = None  # median seconds per training step (whole loop)
    optimizer_s: Optional[float] = None  # median seconds per step inside opt.step
    loop_times_s: list = field(default_factory=list)
    optimizer_times_s: list = field(default_factory=list)
    loop_vs_numpy: Optional[float] = None  # loop time / reference loop time (< 1: faster)
    optimizer_speedup: Optional[float] = None  # reference optimizer time / this one
    optimizer_share: Optional[float] = None  # optimizer time / loop time

    @property
    def timed(self):
        return self.loop_s is not None


def _compare(params, ref, exact, rtol):
    for i, (a, b) in enumerate(zip(params, ref)):
        if exact:
            if not np.array_equal(a, b):
                diff = np.max(np.abs(a.astype(np.float64) - b))
                return f"param[{i}] differs from the reference (max abs diff {diff:.1e})"
        else:
            atol = rtol * float(np.max(np.abs(b))) if b.size else 0.0
            if not np.allclose(a, b, rtol=rtol, atol=atol):
                rel = np.max(np.abs(a.astype(np.float64) - b) / (np.abs(b) + atol))
                return f"param[{i}] max rel err {rel:.1e} > rtol {rtol:.0e}"
    return None


def _train(step_fn, forward_backward, first, count):
    """``count`` training steps from batch ``first``; returns (loop seconds, optimizer seconds)."""
    perf = time.perf_counter
    opt_s = 0.0
    t0 = perf()
    for k in range(first, first + count):
        forward_backward(k)
        t1 = perf()
        step_fn()
        opt_s += perf() - t1
    return perf() - t0, opt_s


def run_case(model_name, dtype, contestant_list, steps=DEFAULT_STEPS, repeat=DEFAULT_REPEAT,
             say=None) -> list:
    """One model and dtype: check every contestant, then time them interleaved."""
    widths, batch = MODELS[model_name]
    mlp = MLP(widths, batch, dtype)
    dtype = mlp.dtype
    rows, live = [], []
    reference = None
    for c in contestant_list:
        row = LoopResult(model=model_name, n_params=mlp.n_params, batch=batch, dtype=dtype.name,
                         contestant=c.key, label=c.label, kind=c.kind, check="reference",
                         steps=steps)
        rows.append(row)
        if say:
            say(f"loop {model_name} {dtype.name}: checking {c.label}")
        around = c.around or _Null
        try:
            params, grads, fb = mlp.fresh()
            step_fn = c.make(params, grads)
            with around():
                _train(step_fn, fb, 0, CHECK_STEPS)
            snapshot = [p.copy() for p in params]
            if reference is None:
                if c.kind != "reference":
                    raise RuntimeError("the reference must come first")
                reference = snapshot
            else:
                exact = c.kind in ("fastoptim", "dispatch")
                mismatch = _compare(snapshot, reference, exact, PEER_RTOL[dtype])
                if mismatch:
                    row.check, row.detail = "mismatch", mismatch
                    continue
                row.check = "bit-exact" if exact else "close"
            with around():  # warm-up: caches, page faults, BLAS and thread pools
                _train(step_fn, fb, CHECK_STEPS, 2)
            live.append((row, step_fn, fb, around))
        except Exception as exc:  # one broken contestant (torch fused refused) ends no run
            row.check, row.detail = "error", f"{type(exc).__name__}: {exc}"
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        first = CHECK_STEPS + 2
        for r in range(repeat):
            if say:
                say(f"loop {model_name} {dtype.name}: round {r + 1}/{repeat}")
            for row, step_fn, fb, around in live:
                with around():
                    loop_s, opt_s = _train(step_fn, fb, first, steps)
                row.loop_times_s.append(loop_s / steps)
                row.optimizer_times_s.append(opt_s / steps)
            first += steps
    finally:
        if enabled:
            gc.enable()
    for row in rows:
        if row.loop_times_s:
            row.loop_s = statistics.median(row.loop_times_s)
            row.optimizer_s = statistics.median(row.optimizer_times_s)
            row.optimizer_share = row.optimizer_s / row.loop_s
    ref = rows[0] if rows and rows[0].timed else None
    for row in rows:
        if ref is not None and row.timed:
            row.loop_vs_numpy = row.loop_s / ref.loop_s
            row.optimizer_speedup = ref.optimizer_s / row.optimizer_s
    return rows


def checked_trainer(model_name, dtype, contestant: Contestant, steps=DEFAULT_STEPS):
    """``train()``: ``steps`` training steps with ``contestant`` (for pytest-benchmark),
    after its first ``CHECK_STEPS`` were compared with the reference's; raises
    AssertionError on a mismatch, before anything is timed."""
    widths, batch = MODELS[model_name]
    mlp = MLP(widths, batch, dtype)
    ref_params, ref_grads, ref_fb = mlp.fresh()
    _train(_fastoptim_maker(REFERENCE)(ref_params, ref_grads), ref_fb, 0, CHECK_STEPS)
    params, grads, fb = mlp.fresh()
    step_fn = contestant.make(params, grads)
    around = contestant.around or _Null
    with around():
        _train(step_fn, fb, 0, CHECK_STEPS)
    exact = contestant.kind in ("reference", "fastoptim", "dispatch")
    mismatch = _compare(params, ref_params, exact, PEER_RTOL[mlp.dtype])
    if mismatch:
        raise AssertionError(f"{contestant.label} differs from the reference: {mismatch}")
    first = [CHECK_STEPS]

    def train():
        with around():
            _train(step_fn, fb, first[0], steps)
        first[0] += steps

    return train


def run(models=DEFAULT_MODELS, dtypes=DEFAULT_DTYPES, backends=None, steps=DEFAULT_STEPS,
        repeat=DEFAULT_REPEAT, peers=True, inplace=True, dispatch=(), console=None,
        progress=True) -> dict:
    """Every model x dtype; returns ``{"settings", "results", "goals"}`` (JSON-ready)."""
    for m in models:
        if m not in MODELS:
            raise ValueError(f"unknown loop model {m!r}; expected one of {', '.join(MODELS)}")
    torch = import_torch() if peers else None
    if torch is not None:
        torch.set_num_threads(_threads.parallel_threads())
    started = time.perf_counter()
    results = []
    with progress_bar(console if progress else None) as bar:
        task = bar.add_task("training loop", total=len(models) * len(dtypes)) if bar else None

        def say(text):
            if bar:
                bar.update(task, description=text)

        for m in models:
            for dt in dtypes:
                rows = run_case(m, dt, contestants(backends, torch, inplace, dispatch),
                                steps=steps, repeat=repeat, say=say)
                results.extend(rows)
                if console is not None:
                    console.print(loop_table(rows))
                if bar:
                    bar.advance(task)
    out = {
        "settings": dict(models={m: dict(widths=MODELS[m][0], batch=MODELS[m][1]) for m in models},
                         dtypes=list(dtypes), steps=steps, repeat=repeat, check_steps=CHECK_STEPS,
                         optimizer="Adam", lr=LR, peer_rtol={k.name: v for k, v in
                                                             PEER_RTOL.items()},
                         threads=_threads.info()),
        "results": [dataclasses.asdict(r) for r in results],
        "goals": goals(results),
        "wall_time_s": time.perf_counter() - started,
    }
    if console is not None:
        console.print(goals_table(out["goals"]))
    return out


def goals(results) -> list:
    """Issue 12's loop goals per model and dtype, from one run: auto <= 0.8x the
    reference's loop, <= torch fused's loop, optimizer >= 3x less time than the reference,
    auto the fastest fastoptim backend (within 5%)."""
    out = []
    cases = list(dict.fromkeys((r.model, r.dtype) for r in results))
    for model, dtype in cases:
        rows = {r.contestant: r for r in results if (r.model, r.dtype) == (model, dtype)}
        auto = rows.get("auto")
        if auto is None or not auto.timed:
            out.append(dict(model=model, dtype=dtype, error="auto not timed"))
            continue
        torch_row = rows.get(TORCH_FUSED)
        fast = [r for r in rows.values() if r.kind == "fastoptim" and r.timed]
        best = min(fast, key=lambda r: r.loop_s)
        entry = dict(
            model=model, dtype=dtype, auto_loop_vs_numpy=auto.loop_vs_numpy,
            auto_optimizer_speedup=auto.optimizer_speedup,
            auto_loop_vs_torch_fused=(auto.loop_s / torch_row.loop_s
                                      if torch_row is not None and torch_row.timed else None),
            fastest_backend=best.contestant, auto_vs_fastest=auto.loop_s / best.loop_s,
        )
        entry["met"] = {
            "loop <= 0.8x numpy": auto.loop_vs_numpy <= GOALS["loop_vs_numpy"],
            "optimizer >= 3x numpy": auto.optimizer_speedup >= GOALS["optimizer_speedup"],
            "loop <= torch fused": (entry["auto_loop_vs_torch_fused"] <= 1.0
                                    if entry["auto_loop_vs_torch_fused"] is not None else None),
            "auto fastest (5%)": entry["auto_vs_fastest"] <= 1.05,
        }
        out.append(entry)
    return out


# --------------------------------------------------------------------------- output
def loop_table(rows):
    from rich.table import Table

    r0 = rows[0]
    widths = "-".join(map(str, MODELS[r0.model][0]))
    table = Table(
        title=(f"Training loop, {r0.model} model ({widths}, {r0.n_params:,} parameters, "
               f"batch {r0.batch}), {r0.dtype}, Adam, {r0.steps} steps x {len(r0.loop_times_s)} "
               "interleaved repeats"),
        title_justify="left",
        caption=("per training step (forward + backward + optimizer step); medians of interleaved "
                 "repeats; ratios to the NumPy reference in this run. check: the weights after "
                 f"{CHECK_STEPS} steps against the reference (fastoptim: bit for bit)"),
        caption_justify="left")
    for name, justify in (("contestant", "left"), ("check", "left"), ("loop/step", "right"),
                          ("loop vs NumPy", "right"), ("optimizer/step", "right"),
                          ("optimizer share", "right"), ("optimizer speedup", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    fastest = min((r.loop_s for r in rows if r.timed), default=None)
    for r in rows:
        check = {"bit-exact": "[green]bit-exact[/green]", "close": "[green]close[/green]",
                 "mismatch": "[bold red]MISMATCH[/bold red]",
                 "error": "[bold red]error[/bold red]"}.get(r.check, r.check)
        loop = format_time(r.loop_s) if r.timed else "not timed"
        if r.timed and r.loop_s == fastest:
            loop = f"[bold green]{loop}[/bold green]"
        table.add_row(
            r.label, check, loop,
            "-" if r.loop_vs_numpy is None else f"{r.loop_vs_numpy:.2f}x",
            format_time(r.optimizer_s) if r.timed else "-",
            "-" if r.optimizer_share is None else f"{100 * r.optimizer_share:.0f}%",
            "-" if r.optimizer_speedup is None else f"{r.optimizer_speedup:.2f}x",
            style={"peer": "italic", "dispatch": "dim"}.get(r.kind, ""))
    for r in rows:
        if r.check in ("mismatch", "error"):
            table.caption += f"\n[red]{r.label}: {r.check}: {r.detail}[/red]"
    return table


def goals_table(goal_rows):
    from rich.table import Table

    table = Table(title="Training-loop goals (backend='auto', ratios from this run)",
                  title_justify="left",
                  caption="loop vs NumPy: auto's whole-loop time / the reference's (goal <= 0.8); "
                          "optimizer speedup: reference optimizer time / auto's (goal >= 3); "
                          "vs torch fused: auto's loop / torch fused's (goal <= 1); "
                          "auto vs fastest: auto's loop / the fastest fastoptim backend's",
                  caption_justify="left")
    for name in ("model", "dtype", "loop vs NumPy", "optimizer speedup", "loop vs torch fused",
                 "auto vs fastest", "goals"):
        table.add_column(name, justify="left" if name in ("model", "dtype", "goals") else "right")
    for g in goal_rows:
        if "error" in g:
            table.add_row(g["model"], g["dtype"], "-", "-", "-", "-", f"[red]{g['error']}[/red]")
            continue
        met = g["met"]
        missed = [k for k, v in met.items() if v is False]
        verdict = ("[green]all met[/green]" if not missed
                   else f"[red]missed: {'; '.join(missed)}[/red]")
        vt = g["auto_loop_vs_torch_fused"]
        table.add_row(g["model"], g["dtype"], f"{g['auto_loop_vs_numpy']:.2f}x",
                      f"{g['auto_optimizer_speedup']:.2f}x", "-" if vt is None else f"{vt:.2f}x",
                      f"{g['auto_vs_fastest']:.2f}x ({g['fastest_backend']})", verdict)
    return table
