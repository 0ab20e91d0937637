"""ZeRO stage 1: :class:`ZeroOptimizer`, a fastoptim optimizer whose state is sharded over the ranks.

Its state-dict methods are in ``zero_state`` (inherited from ``ZeroStateDicts``).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..arrays import FlatGradDict, FlatGrads, FlatParams, find_segment
from ._mpi import DEFAULT_TIMEOUT, _abort_on_error, _agree, _comm, _mpi, _mpi_type, _signature
from .zero_state import ZeroStateDicts


class ZeroOptimizer(ZeroStateDicts):
    """ZeRO stage 1: a fastoptim optimizer whose state is sharded over the ranks of ``comm``.

    Args:
        optimizer_class: :class:`fastoptim.SGD`, :class:`~fastoptim.Adam`,
            :class:`~fastoptim.AdamW` (any :class:`fastoptim.Optimizer` subclass).
        params: what ``optimizer_class`` takes: a list of arrays, a dict of named
            arrays, a list of param-group dicts with their own hyperparameters,
            ``FlatParams.params`` (or the FlatParams itself). All of one dtype.
            They must be the same shapes, in the same order, on every rank (checked).
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        timeout: seconds a rank waits for the others at the start of a step
            (or any other collective call) before it aborts the communicator;
            None: wait forever.
        **hyperparameters: the optimizer's (``lr``, ``betas``, ``momentum``, ...,
            ``backend``, ``skip_nonfinite``, ``max_grad_norm``), with the same
            meaning as in the single-process optimizer.

    Layout: every parameter of every group, in order, is one flat vector of T
    elements, cut into N shards of ``S = ceil(T / N)`` (the last one padded).
    Rank r owns elements ``[r*S, min((r+1)*S, T))``; the shard's piece of each
    param group is stepped by an ``optimizer_class`` with that group's
    hyperparameters. This rank's state lives in one flat buffer of S elements
    per state key (``state_buffers``: ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``, ``momentum_buffer``), padded like the shards; every
    group's state array of that key is a view of its piece of the buffer.

    ``step(grads)`` takes this rank's *local* gradients (not averaged: the
    reduce-scatter averages them), laid out as for the single-process optimizer;
    every gradient is needed (no ``None``). With ``FlatParams`` whose buffer
    holds exactly these parameters, no gradient or parameter is copied.
    """

    def __init__(self, optimizer_class, params, comm=None, *, timeout=DEFAULT_TIMEOUT,
                 **hyperparameters):
        from ..optimizers import Optimizer

        self.comm = comm = _comm(comm)
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError("optimizer_class must be a fastoptim optimizer class (SGD, Adam, "
                            f"AdamW, ...), but got {optimizer_class!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.optimizer_class = optimizer_class
        if isinstance(params, FlatParams):
            params = params.params
        if not isinstance(params, (dict, list, tuple, set, np.ndarray)):
            params = list(params)  # a generator: it is read again to check loaded state
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        error, sig = None, 0
        try:
            self._setup(optimizer_class, params, hyperparameters)
            sig = _signature(optimizer_class.__name__, self.world_size, self._describe())
        except (TypeError, ValueError) as exc:
            error = exc
        _agree(comm, error, sig, timeout, "ZeroOptimizer()")

    def _setup(self, optimizer_class, params, hyperparameters):
        hyper = dict(hyperparameters)
        self.skip_nonfinite = bool(hyper.pop("skip_nonfinite", False))
        self.max_grad_norm = hyper.pop("max_grad_norm", None)
        # the single-process optimizer validates params, groups and hyperparameters;
        # it never steps, so it allocates no state: its param_groups are ours
        self._template = optimizer_class(params, skip_nonfinite=self.skip_nonfinite,
                                         max_grad_norm=self.max_grad_norm, **hyper)
        self._ctor = (params, dict(hyperparameters))
        self._names = (list(params) if isinstance(params, dict) and "params" not in params
                       else None)
        self._hyper = hyper
        self.backend = self._template.backend
        if self.backend == "cuda":
            raise ValueError("ZeroOptimizer runs on the CPU backends (numpy, numba, c)")
        self._params = [p for g in self._template.param_groups for p in g["params"]]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise TypeError(f"ZeroOptimizer needs parameters of one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self._sizes = [int(p.size) for p in self._params]
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        self.numel = total = int(self._offsets[-1])
        if total == 0:
            raise ValueError("ZeroOptimizer got parameters with no elements")
        group_sizes = [sum(int(p.size) for p in g["params"]) for g in self._template.param_groups]
        self._group_offsets = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
        n, r = self.world_size, self.rank
        self.shard_size = S = -(-total // n)
        self.padding = n * S - total
        self._counts = [max(0, min(S, total - k * S)) for k in range(n)]
        self._displs = [min(k * S, total) for k in range(n)]
        self.shard_range = (self._displs[r], self._displs[r] + self._counts[r])
        segment = find_segment(self._params)
        if segment is not None and segment[2].size == total:
            self._flat_root, self._flat = segment[0], segment[2]  # the user's buffer: no copies
            self._param_buffer = None
            shard = self._flat[self.shard_range[0]:self.shard_range[1]]
        else:
            self._flat_root = self._flat = None
            self._param_buffer = np.zeros(n * S, dtype=self.dtype)  # padded; pads stay 0
            shard = self._param_buffer[r * S:r * S + self._counts[r]]
        self._grad_buffer = None  # padded send buffer, allocated on the first packed step
        self._grad_shard = np.zeros(S, dtype=self.dtype)
        # the shard's piece of every param group (possibly empty), one inner group each
        lo, hi = self.shard_range
        self._pieces = []
        for g in range(len(group_sizes)):
            a = min(max(int(self._group_offsets[g]), lo), hi)
            b = min(max(int(self._group_offsets[g + 1]), lo), hi)
            self._pieces.append((a - lo, b - lo, a, b))  # shard-relative and global bounds
        inner_groups = [dict(self._hyperparameters_of(g), params=[shard[a:b]])
                        for g, (a, b, _, _) in zip(self._template.param_groups, self._pieces)]
        self._inner = optimizer_class(inner_groups, **hyper)
        # this rank's state: key -> one flat buffer of S elements (padded like the shards);
        # the inner optimizer's state array of each group is the view _state_views[(g, key)]
        self._state_buffers = {}
        self._state_views = {}
        self._steps = [0] * len(group_sizes)  # steps taken by each group (for state_dict)
        self.last_step_skipped = False
        self.skipped_steps = 0
        self.last_grad_norm = None
        # seconds of each phase of the last step on this rank: pack (list path: copy the
        # gradients into the send buffer), reduce_scatter (with the averaging division),
        # norm (max_grad_norm / skip_nonfinite: partial sums and their all-reduce), kernel
        # (the optimizer on the shard), allgather, unpack (list path: copy the parameters out)
        self.last_step_seconds = None

    def _describe(self):
        return ([(tuple(p.shape), p.dtype.str) for p in self._params],
                [len(g["params"]) for g in self._template.param_groups],
                sorted(self._hyper), self.skip_nonfinite, self.max_grad_norm,
                self._hyper_description())

    def _hyper_description(self):
        """Every group's hyperparameters: the ranks must step with the same ones."""
        return [sorted((k, repr(v)) for k, v in self._hyperparameters_of(g).items())
                for g in self._template.param_groups]

    @staticmethod
    def _hyperparameters_of(group):
        return {k: v for k, v in group.items() if k not in ("params", "param_names")}

    # the single-process optimizer's attributes that schedulers and users read
    @property
    def param_groups(self):
        """The param groups (all parameters, every rank): schedulers and users edit these."""
        return self._template.param_groups

    @property
    def defaults(self):
        return self._template.defaults

    @property
    def state(self):
        """This rank's shard state: ``{group index: {key: array}}``, each array a view of
        the group's piece of ``state_buffers[key]``."""
        return {g: dict(self._inner.state[g]) for g in range(len(self._pieces))
                if g in self._inner.state}

    @property
    def state_buffers(self):
        """This rank's state: ``{key: flat array of shard_size elements}``, one per state key.

        Every group's state array of ``key`` (see :attr:`state`) is a view of its
        piece of ``state_buffers[key]``; a key appears after the first step that
        creates it (or a load that brings it). The last rank's elements past its
        shard are padding (zeros).
        """
        return dict(self._state_buffers)

    def state_bytes(self):
        """Bytes of optimizer state held by this rank: the flat state buffers (S elements
        per key, padding included) and the groups' step counters."""
        counters = sum(int(np.asarray(dict.__getitem__(entry, "step")).nbytes)
                       for entry in dict.values(self._inner.state) if "step" in entry)
        return sum(int(b.nbytes) for b in self._state_buffers.values()) + counters

    def _adopt_state(self):
        """Move every state array of the inner optimizer into this rank's flat buffers.

        The inner optimizer creates a state array on the step that first needs it
        (torch's semantics: SGD's momentum buffer starts as the gradient) and
        when it loads a state dict. Each such array is copied into its group's
        piece of the key's buffer (S elements, made on first use) and replaced in
        the inner optimizer's state by that view, which it honours from the next
        step on. Arrays already in place are left alone, so a step that creates
        nothing costs one identity check per group and key. A key no group holds
        any more frees its buffer; a group without a key has zeros in its piece.
        """
        state = self._inner.state
        used = {}
        for g in range(len(self._pieces)):
            entry = dict.get(state, g)
            for key in (entry or ()):
                if key != "step":
                    used.setdefault(key, []).append(g)
        for key in [k for k in self._state_buffers if k not in used]:
            del self._state_buffers[key]
        self._state_views = {gk: v for gk, v in self._state_views.items() if gk[1] in used}
        for key, groups in used.items():
            buffer = self._state_buffers.get(key)
            if buffer is None:
                buffer = self._state_buffers[key] = np.zeros(self.shard_size, dtype=self.dtype)
            for g, (a, b, _, _) in enumerate(self._pieces):
                if g not in groups:
                    if self._state_views.pop((g, key), None) is not None:
                        buffer[a:b] = 0  # the group lost this key (a load): no stale values
                    continue
                entry = dict.__getitem__(state, g)
                value = dict.__getitem__(entry, key)
                view = self._state_views.get((g, key))
                if value is view:
                    continue
                view = buffer[a:b]
                view[...] = value  # shape (b - a,) and the parameters' dtype: the inner checked it
                entry[key] = view  # an edit the inner optimizer sees: it checks it at its next step
                self._state_views[(g, key)] = view

    def zero_grad(self):
        """Nothing to do: gradients are arguments to ``step``."""

    def __repr__(self):
        return (f"ZeroOptimizer({self.optimizer_class.__name__}, rank {self.rank} of "
                f"{self.world_size}, {self.numel} elements, shard {self.shard_size}, "
                f"backend={self.backend!r})")

    # ------------------------------------------------------------------ step
    def _local_grads(self, grads):
        """('flat', buffer) for the zero-copy path, or ('list', [arrays in param order])."""
        if isinstance(grads, FlatParams):
            grads = grads.grads
        if (isinstance(grads, (FlatGrads, FlatGradDict)) and self._flat_root is not None
                and grads.param_buffer is self._flat_root and len(grads) == len(self._params)):
            buffer = grads.buffer
            if buffer.dtype != self.dtype or buffer.shape != self._flat_root.reshape(-1).shape:
                raise ValueError("grads.buffer does not match the parameter buffer's dtype and size")
            start = self._flat.__array_interface__["data"][0] - \
                self._flat_root.__array_interface__["data"][0]
            start //= self.dtype.itemsize
            return "flat", buffer.reshape(-1)[start:start + self.numel]
        names = self._names
        if names is not None:
            if not isinstance(grads, dict):
                raise TypeError("this optimizer was built from a dict of named arrays: step() "
                                f"takes a dict of gradients with the same keys, got {type(grads).__name__}")
            if set(grads) != set(names):
                raise ValueError(f"grads keys do not match the parameters: expected {names}, "
                                 f"got {list(grads)}")
            arrays = [grads[k] for k in names]
        else:
            if isinstance(grads, dict):
                raise TypeError("step() takes a list of gradients (the optimizer was built from a list)")
            arrays = [grads] if isinstance(grads, np.ndarray) else list(grads)
        if len(arrays) != len(self._params):
            raise ValueError(f"step() expected {len(self._params)} gradients (one per parameter, "
                             f"group by group), got {len(arrays)}")
        for i, (g, p) in enumerate(zip(arrays, self._params)):
            if g is None:
                raise ValueError(f"grads[{i}] is None: ZeroOptimizer needs every gradient "
                                 "(pass zeros for a parameter that got none)")
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a NumPy array, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, its parameter {p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype}, its parameter {p.dtype}")
        return "list", arrays

    def step(self, grads):
        """Average this step's gradients over the ranks and update every parameter (collective).

        Every rank must call it. A gradient rejected on any rank raises on every
        rank and changes nothing; see the class doc for the layout.
        """
        MPI = _mpi()
        comm, n, r = self.comm, self.world_size, self.rank
        error, mode, payload = None, None, None
        try:
            mode, payload = self._local_grads(grads)
            from .. import _validation as V  # the single-process checks of the safety options

            V.check_safety_options(self.skip_nonfinite, self.max_grad_norm)
            self._sync_hyperparameters()
        except (TypeError, ValueError) as exc:
            error = exc
        # the zero-copy path of a length that does not divide uses the "v" collectives; every
        # rank must take the same road, so the road is part of the agreement
        uneven_flat = mode == "flat" and self.padding != 0
        hyper = self._hyper_description() if error is None else None
        _agree(comm, error, _signature("step", uneven_flat, hyper), self.timeout,
               "ZeroOptimizer.step")
        count = self._counts[r]
        lo, hi = self.shard_range
        shard_grad = self._grad_shard[:count]
        mpi_type = _mpi_type(self.dtype)
        clock = time.perf_counter
        times = self.last_step_seconds = dict.fromkeys(
            ("pack", "reduce_scatter", "norm", "kernel", "allgather", "unpack"), 0.0)
        with _abort_on_error(comm, "ZeroOptimizer.step"):
            # 1. reduce-scatter: this rank receives the sum of every rank's gradient of its shard
            t0 = clock()
            clipping = self.max_grad_norm is not None
            if n == 1 and mode == "flat" and not clipping:
                shard_grad = payload  # one rank: its gradient is the average; read it in place
            elif mode == "flat" and not uneven_flat:
                comm.Reduce_scatter_block(payload, self._grad_shard, op=MPI.SUM)
            elif mode == "flat":
                comm.Reduce_scatter(payload, [self._grad_shard, count, mpi_type],
                                    recvcounts=self._counts, op=MPI.SUM)
            else:
                send = self._pack(payload)
                t1 = clock()
                times["pack"] = t1 - t0
                t0 = t1
                comm.Reduce_scatter_block(send, self._grad_shard, op=MPI.SUM)
            if n > 1:
                np.divide(shard_grad, self.dtype.type(n), out=shard_grad)
            t1 = clock()
            times["reduce_scatter"] = t1 - t0
            t0 = t1
            # 2. the global norm / finiteness from one all-reduce of the shards' partial sums
            skip = False
            if self.skip_nonfinite or self.max_grad_norm is not None:
                from ..clip import clip_coef, norm_and_finite

                norm, finite = norm_and_finite([shard_grad], 2.0, self.backend) if count else (0.0, True)
                partial = np.array([norm * norm, 0.0 if finite else 1.0], dtype=np.float64)
                comm.Allreduce(MPI.IN_PLACE, partial, op=MPI.SUM)
                self.last_grad_norm = math.sqrt(partial[0]) if math.isfinite(partial[0]) else float(partial[0])
                self.last_step_skipped = skip = self.skip_nonfinite and partial[1] > 0
                if skip:
                    self.skipped_steps += 1
                elif clipping:
                    coef = clip_coef(self.max_grad_norm, self.last_grad_norm, self.dtype)
                    np.multiply(shard_grad, self.dtype.type(coef), out=shard_grad)
            else:
                self.last_step_skipped = False
            t1 = clock()
            times["norm"] = t1 - t0
            t0 = t1
            if skip:
                return
            # 3. the fused kernel on this rank's piece of every group
            if self._param_buffer is not None:  # parameters may have been edited since: refresh the shard
                self._unpack_shard()
            self._inner.step([shard_grad[a:b] for a, b, _, _ in self._pieces])
            self._adopt_state()  # a state array created by this step moves into the flat buffers
            for g in range(len(self._steps)):
                self._steps[g] += 1
            t1 = clock()
            times["kernel"] = t1 - t0
            t0 = t1
            # 4. all-gather the updated parameters (the user's buffer when they tile one; its
            #    length need not divide by N, whichever road the gradients took)
            if self._param_buffer is None and self.padding == 0:
                comm.Allgather(MPI.IN_PLACE, [self._flat, mpi_type])
            elif self._param_buffer is None:
                comm.Allgatherv(MPI.IN_PLACE, [self._flat, self._counts, self._displs, mpi_type])
            else:
                comm.Allgather(MPI.IN_PLACE, [self._param_buffer, mpi_type])
                t1 = clock()
                times["allgather"] = t1 - t0
                t0 = t1
                self._scatter_params()
                times["unpack"] = clock() - t0
                return
            times["allgather"] = clock() - t0

    def _sync_hyperparameters(self):
        """Copy the (scheduler-edited) hyperparameters into the shard's groups; check them."""
        groups = self._template.param_groups
        if len(groups) != len(self._pieces):
            raise ValueError("ZeroOptimizer's param groups cannot be added or removed after construction")
        check = getattr(self._template, "_check_group", None)  # the class's own validation
        for group, inner in zip(groups, self._inner.param_groups):
            if check is not None:
                check(group)
            inner.update(self._hyperparameters_of(group))

    def _pack(self, arrays):
        """Copy the gradients into the padded send buffer (the list path)."""
        if self._grad_buffer is None:
            self._grad_buffer = np.zeros(self.world_size * self.shard_size, dtype=self.dtype)
        buf = self._grad_buffer
        for g, start, stop in zip(arrays, self._offsets[:-1], self._offsets[1:]):
            buf[start:stop] = g.reshape(-1)
        return buf

    def _unpack_shard(self):
        """Copy this rank's range of the parameters into the padded parameter buffer."""
        lo, hi = self.shard_range
        for p, start, stop in zip(self._params, self._offsets[:-1], self._offsets[1:]):
            a, b = max(int(start), lo), min(int(stop), hi)
            if a < b:
                self._param_buffer[a:b] = p.reshape(-1)[a - start:b - start]

    def _scatter_params(self):
        """Copy the gathered parameter buffer back into the parameter arrays (the list path)."""
        for p, start, stop in zip(self._params, self._offsets[:-1], self._offsets[1:]):
            p[...] = self._param_buffer[start:stop].reshape(p.shape)
