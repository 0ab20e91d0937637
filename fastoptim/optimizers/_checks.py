"""The checks of a step: every gradient and every array it writes, before any kernel runs."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .. import backends
from .. import functional as F
from ..arrays import FlatGradDict, FlatGrads, is_array
from ..backends._multi_table import first_read_only
from ._segments import _check_segment_memory


class _StepChecksMixin:
    """``_check_state``, ``_plan`` and ``_check_gradients``: everything ``step`` checks."""

    def _check_state(self):
        """Every state array a step may write, checked before any kernel runs: an
        array (not a list), of its parameter's shape and dtype, writeable,
        aligned, contiguous for the fast backends, overlapping nothing else
        that is written; ``step`` a finite count >= 0 (a writeable one when an
        array). Exact, not cached: a flat group whose state is still the
        optimizer's own buffers (its entries unedited, as their edit counter
        proves) is checked through those buffers in O(number of keys) Python,
        plus one compiled pass over its views' writeable flags."""
        contiguous = self.backend != backends.REFERENCE
        check = self._devices.check_state
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            if segment is not None:
                _check_segment_memory(indices, segment)
            if segment is not None and segment.uniform:
                if self._segment_intact(indices, segment):
                    self._check_segment_arrays(indices, segment, contiguous)
                    if self._uses_step and segment.state:
                        V.check_state_step(f"state[{indices[0]}]['step']",
                                           self._state._at(indices[0])["step"])
                    continue
                self._unshare(indices, segment)
            keys = [k for k, _ in self._state_keys(group)]
            for i in indices:
                entry = self._state._get(i)
                if not entry:
                    continue
                if self._uses_step and "step" in entry:  # no step yet: this is step 1
                    V.check_state_step(f"state[{i}]['step']", entry["step"])
                for key in keys:
                    if key in entry:
                        check(f"state[{i}][{key!r}]", entry[key], self._params[i], contiguous)
        span = self._devices.span
        self._write_spans = [(name, span(a)) for name, a in self._written_arrays()]
        V.check_no_overlap(self._write_spans,
                           "{} and {} overlap in memory; step() would update the same memory twice")

    def _check_reads_disjoint(self, reads):
        """No gradient may share memory with anything the step writes (the spans of the
        writes are the ones _check_state took in this same step)."""
        span = self._devices.span
        writes = self._write_spans
        if writes is None:
            writes = [(name, span(a)) for name, a in self._written_arrays()]
        V.check_reads_disjoint([(name, span(a)) for name, a in reads], writes)

    def _check_gradients(self, plan):
        """The skip_nonfinite / max_grad_norm pass: one read of every gradient, before any write.

        Returns the factor to scale the gradients by inside the kernels (1.0 when
        not clipping), or None when the step must be skipped.
        """
        self.last_step_skipped = False
        if not self.skip_nonfinite and self.max_grad_norm is None:
            return 1.0
        from ..clip import clip_coef, norm_and_finite

        real = self._devices.real_view
        arrays = [real(g) for work in plan if work is not None
                  for g in (work if isinstance(work, tuple) else (g for _, g in work))]
        if self._devices.on_device:  # CUDA: norm, factor and flag stay on the device
            return F._device_grad_control(self, arrays)
        # one reduction for every CPU backend (numba's when it loads, else NumPy's), so
        # that numpy, numba and c clip by the same factor and stay equal bit for bit
        norm, finite = norm_and_finite(arrays, 2.0, backend="auto")
        self.last_grad_norm = norm
        if self.skip_nonfinite and not finite:
            self.last_step_skipped = True
            self.skipped_steps += 1
            return None
        if self.max_grad_norm is None:
            return 1.0
        # torch.nn.utils.clip_grad_norm_'s factor, clamp(max_norm / (norm + 1e-6), max=1),
        # rounded as torch rounds it (in the norm's dtype)
        dtype = np.float64 if any(g.dtype == np.float64 for g in arrays) else np.float32
        return float(clip_coef(self.max_grad_norm, norm, dtype))

    def _plan(self, grads):
        """Check every gradient; per group, either (flat_grad,) or [(index, grad), ...]."""
        if isinstance(grads, (FlatGrads, FlatGradDict)):
            plan = self._plan_flat(grads)
            if plan is not None:
                return plan
        if isinstance(grads, dict):
            if self._names is None:
                raise TypeError("step() takes a list of gradients (the optimizer was built from a list)")
            missing = [k for k in self._names if k not in grads]
            extra = [k for k in grads if k not in self._names]
            if missing or extra:
                raise ValueError(
                    f"grads keys do not match the parameters: missing {missing}, unexpected {extra}"
                )
            grads = [grads[k] for k in self._names]
            labels = [f"grads[{k!r}]" for k in self._names]
        else:
            if self._dict_built:
                raise TypeError(
                    "this optimizer was built from a dict of named arrays: step() takes a dict "
                    f"of gradients with the same keys, but got {type(grads).__name__}"
                )
            if is_array(grads):
                if len(self._params) != 1:
                    raise TypeError("step() takes a list of gradients, one per parameter")
                grads = [grads]
            if isinstance(grads, (str, bytes)) or not hasattr(grads, "__iter__"):
                raise TypeError(f"step() takes a list of gradients, but got {type(grads).__name__}")
            grads = list(grads)
            labels = [f"grads[{i}]" for i in range(len(grads))]
        if len(grads) != len(self._params):
            raise ValueError(
                f"step() expected {len(self._params)} gradients (one per parameter, group by "
                f"group), got {len(grads)}"
            )
        check = self._devices.check_grad
        plan = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            work = []
            for i in indices:
                if grads[i] is not None:
                    work.append((i, check(labels[i], grads[i], self._params[i])))
            if segment is not None and len(work) == len(indices):
                flat = self._devices.find_segment([g for _, g in work])
                if flat is not None:  # checked against everything written, below
                    work = (flat[2],)
            plan.append(work or None)
        reads = []
        for work, (_, indices) in zip(plan, self._group_indices()):
            if isinstance(work, tuple):
                reads.append((f"grads[{indices[0]}:{indices[-1] + 1}]", work[0]))
            elif work is not None:
                reads.extend((labels[i], g) for i, g in work)
        self._check_reads_disjoint(reads)
        return plan

    def _written_arrays(self):
        """(name, array) of everything a step writes: parameters and state arrays.

        A uniform flat group contributes its flat buffers only, so the flat path
        stays O(number of groups). Only the state keys the kernels write count.
        """
        out = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            if segment is not None and segment.uniform:
                out.append((f"params[{indices[0]}:{indices[-1] + 1}]", segment.param))
                out.extend((f"state {key!r} of params[{indices[0]}:{indices[-1] + 1}]", a)
                           for key, a in segment.state.items())
                continue
            keys = [k for k, _ in self._state_keys(group)]
            for i in indices:
                out.append((f"params[{i}]", self._params[i]))
                entry = self._state._get(i)
                if entry:
                    out.extend((f"state[{i}][{k!r}]", entry[k]) for k in keys if k in entry)
        return out

    def _plan_flat(self, grads):
        """The O(1) path for FlatParams.grads; None when the layout does not match
        (or an entry of ``flat.grads`` was rebound: then each entry is read)."""
        if grads.rebound or any(s is None or s.root is not grads.param_buffer for s in self._segments):
            return None
        if len(grads) != len(self._params) or self._dict_built != isinstance(grads, dict):
            return None
        buffer = grads.buffer
        if buffer.dtype != grads.param_buffer.dtype or buffer.shape != grads.param_buffer.shape:
            raise ValueError("grads.buffer does not match the parameter buffer's dtype and size")
        self._check_reads_disjoint([("grads.buffer", buffer)])
        if isinstance(buffer, np.ndarray) and not (
                buffer.flags.c_contiguous and buffer.flags.aligned
                and grads.param_buffer.flags.writeable):
            raise ValueError("FlatParams buffers must be contiguous, aligned and writeable")
        if isinstance(buffer, np.ndarray):  # the views written when a group steps per parameter
            j = first_read_only(self._params)
            if j >= 0:
                raise ValueError(f"params[{j}] is read-only; parameters are updated in place")
        return [(buffer[s.start:s.start + s.param.size],) for s in self._segments]

