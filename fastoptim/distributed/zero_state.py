"""ZeRO-1 state dicts: a :class:`~fastoptim.distributed.ZeroOptimizer`'s shard state dicts,
the gathered single-process ``state_dict``, and loading either (any number of ranks).

:class:`ZeroStateDicts` holds these methods of ``ZeroOptimizer`` (which inherits it), so
the optimizer's step and its state dicts each fit one module.
"""
from __future__ import annotations

import math

import numpy as np

from ._mpi import _abort_on_error, _agree, _mpi, _mpi_type, _signature

SHARD_FORMAT = "fastoptim-zero1-shard"


class ZeroStateDicts:
    """The state-dict methods of :class:`~fastoptim.distributed.ZeroOptimizer`."""

    # ------------------------------------------------------------ state dicts
    def _local_state(self):
        """Per group: {key: piece array} of this rank (copies), and the step counts."""
        out = []
        for g in range(len(self._pieces)):
            entry = dict.get(self._inner.state, g) or {}
            out.append({k: np.array(v, copy=True) for k, v in entry.items() if k != "step"})
        return out

    def shard_state_dict(self):
        """This rank's shard of the state, with what it takes to reassemble it (no communication).

        Load a full set of them, from any number of ranks, with
        :meth:`load_shard_state_dicts`, or turn them into a single-process
        ``state_dict`` with :func:`consolidate_shards`.
        """
        return {
            "format": SHARD_FORMAT, "optimizer": self.optimizer_class.__name__,
            "rank": self.rank, "world_size": self.world_size, "numel": self.numel,
            "shard_range": list(self.shard_range), "dtype": self.dtype.str,
            "shapes": [list(p.shape) for p in self._params],
            "group_offsets": [int(x) for x in self._group_offsets],
            "param_groups": self._template.state_dict()["param_groups"],
            "steps": list(self._steps),
            "counted": ["step" in (dict.get(self._inner.state, g) or {})
                        for g in range(len(self._pieces))],
            "state": self._local_state(),
        }

    def state_dict(self, to=0):
        """The whole state in the single-process optimizer's layout, gathered (collective).

        ``to``: the rank that receives it (the others get None), or ``"all"``.
        The result loads into ``optimizer_class`` over the same parameters, and
        into a ZeroOptimizer with any number of ranks (:meth:`load_state_dict`).
        """
        _mpi()  # mpi4py importable, or a clear ImportError
        comm = self.comm
        if to != "all" and not (isinstance(to, int) and 0 <= to < self.world_size):
            raise ValueError(f"to must be a rank (0..{self.world_size - 1}) or 'all', got {to!r}")
        local = self._local_state()
        keys = sorted({k for entry in local for k in entry})
        _agree(comm, None, _signature("state_dict", keys, to), self.timeout,
               "ZeroOptimizer.state_dict")
        lo, hi = self.shard_range
        mpi_type = _mpi_type(self.dtype)
        receive = to == "all" or self.rank == to
        full = {}
        with _abort_on_error(comm, "ZeroOptimizer.state_dict"):
            for key in keys:
                mine = np.zeros(hi - lo, dtype=self.dtype)
                for (a, b, _, _), entry in zip(self._pieces, local):
                    if key in entry:
                        mine[a:b] = entry[key]
                out = np.empty(self.numel, dtype=self.dtype) if receive else None
                spec = [out, self._counts, self._displs, mpi_type]
                if to == "all":
                    comm.Allgatherv(mine, spec)
                else:
                    comm.Gatherv(mine, spec if receive else None, root=to)
                full[key] = out
        if not receive:
            return None
        return self._assemble(full, local, self._template.state_dict()["param_groups"])

    def _assemble(self, full, local, groups):
        """The per-parameter state dict from flat per-key vectors of every element."""
        state = {}
        index = 0
        for g, group in enumerate(self._template.param_groups):
            keys = [k for k in full if k in local[g]] if local[g] else []
            counted = "step" in (dict.get(self._inner.state, g) or {})
            for _ in group["params"]:
                entry = {}
                if counted and self._steps[g] > 0:
                    entry["step"] = np.array(float(self._steps[g]), dtype=np.float32)
                start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
                for key in keys:
                    entry[key] = full[key][start:stop].reshape(self._params[index].shape).copy()
                if entry:
                    state[index] = entry
                index += 1
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a single-process ``state_dict`` (every rank passes the same one; collective).

        It may come from ``optimizer_class.state_dict()``, from :meth:`state_dict`
        of a ZeroOptimizer with any number of ranks, or from
        :func:`consolidate_shards`. Everything is checked first (by the
        single-process optimizer's own ``load_state_dict``); the parameters of a
        group must all have the same step count. A dict rejected on any rank
        raises on every rank and changes nothing.
        """
        error, plan = None, None
        try:
            plan = self._plan_load(state_dict)
        except (TypeError, ValueError, KeyError) as exc:
            error = exc if not isinstance(exc, KeyError) else ValueError(f"bad state_dict: {exc}")
        _agree(self.comm, error, _signature("load_state_dict"), self.timeout,
               "ZeroOptimizer.load_state_dict")
        self._install(*plan)

    def _plan_load(self, state_dict):
        check = self.optimizer_class(self._ctor[0], **self._ctor[1])  # validates in its own copy
        check.load_state_dict(state_dict)
        full = check.state_dict()
        groups = [{k: v for k, v in g.items()} for g in check.param_groups]
        inner_state, steps = {}, []
        index = 0
        for g, group in enumerate(groups):
            entries = [full["state"].get(index + i) for i in range(len(group["params"]))]
            index += len(group["params"])
            present = [e for e in entries if e]
            if present and len(present) != len(entries):
                raise ValueError(f"param group {g}: only some parameters have state; ZeroOptimizer "
                                 "needs all or none of a group's parameters to have stepped")
            if present and len({frozenset(e) for e in present}) != 1:
                raise ValueError(f"param group {g}: its parameters have different state entries")
            counted = bool(present) and "step" in present[0]
            if counted and len({float(e["step"]) for e in present}) != 1:
                raise ValueError(f"param group {g}: its parameters have different step counts")
            steps.append(int(float(present[0]["step"])) if counted else 0)
            if not present:
                continue
            a, b, ga, gb = self._pieces[g]
            entry = {}
            for key in present[0]:
                if key == "step":
                    entry[key] = present[0]["step"]
                    continue
                flat = np.empty(b - a, dtype=self.dtype)
                first = index - len(entries)
                for i, e in enumerate(entries):
                    start, stop = int(self._offsets[first + i]), int(self._offsets[first + i + 1])
                    s, t = max(start, ga), min(stop, gb)
                    if s < t:
                        flat[s - ga:t - ga] = np.asarray(e[key]).reshape(-1)[s - start:t - start]
                entry[key] = flat
            inner_state[g] = entry
        inner_groups = [dict(self._hyperparameters_of(group), params=[g])
                        for g, group in enumerate(groups)]
        return ([{k: v for k, v in group.items() if k not in ("params",)} for group in groups],
                {"state": inner_state, "param_groups": inner_groups}, steps)

    def load_shard_state_dicts(self, shards):
        """Load the shard state dicts of every rank of a run with any number of ranks (collective).

        Each rank copies only the ranges of its own shard out of them (see
        :meth:`_plan_shards`); a rejected set raises on every rank and changes nothing.
        """
        error, plan = None, None
        try:
            plan = self._plan_shards(shards)
        except (TypeError, ValueError, KeyError) as exc:
            error = exc if not isinstance(exc, KeyError) else ValueError(f"bad shard: {exc}")
        _agree(self.comm, error, _signature("load_shard_state_dicts"), self.timeout,
               "ZeroOptimizer.load_shard_state_dicts")
        self._install(*plan[:3])

    def _install(self, groups, inner_sd, steps):
        for group, loaded in zip(self._template.param_groups, groups):
            params = group["params"]
            group.clear()
            group.update(loaded)
            group["params"] = params
        self._inner.load_state_dict(inner_sd)
        self._adopt_state()
        self._steps = list(steps)

    def _plan_shards(self, shards):
        """(groups, inner state dict, steps, parameter vector or None) from a run's shards.

        ``shards`` may be an iterator that reads one shard at a time: only this
        rank's range of the state is kept (a set of shards from N ranks loads into
        M ranks with at most one shard of another run in memory at a time).
        """
        first, seen, keys = None, set(), None
        pieces = {}
        params = np.empty(self.numel, dtype=self.dtype)
        has_params = None
        for shard in shards:
            if not isinstance(shard, dict) or shard.get("format") != SHARD_FORMAT:
                raise ValueError("not a ZeroOptimizer shard state dict")
            if first is None:
                first = shard
                self._check_shard_run(first)
                keys = [set(entry) for entry in first["state"]]
                for g, group_keys in enumerate(keys):
                    n = self._pieces[g][1] - self._pieces[g][0]
                    for key in group_keys:
                        pieces[(g, key)] = np.empty(n, dtype=self.dtype)
            for key in ("world_size", "numel", "shapes", "group_offsets", "optimizer", "dtype",
                        "steps", "counted"):
                if shard.get(key) != first[key]:
                    raise ValueError(f"the shards disagree on {key!r}: they are not from one run")
            rank = shard["rank"]
            if rank in seen or not 0 <= rank < first["world_size"]:
                raise ValueError(f"shard of rank {rank!r} given twice or out of range")
            seen.add(rank)
            lo, hi = shard["shard_range"]
            offsets = shard["group_offsets"]
            for g, entry in enumerate(shard["state"]):
                if set(entry) != keys[g]:
                    raise ValueError(f"the shards disagree on the state keys of group {g}")
                a_s = min(max(offsets[g], lo), hi)
                b_s = min(max(offsets[g + 1], lo), hi)
                _, _, ga, gb = self._pieces[g]
                x, y = max(ga, a_s), min(gb, b_s)
                for key, value in entry.items():
                    value = np.asarray(value)
                    if value.shape != (b_s - a_s,) or not np.issubdtype(value.dtype, np.floating):
                        raise ValueError(f"shard {rank}: state {key!r} of group {g} has shape "
                                         f"{value.shape} and dtype {value.dtype}, expected "
                                         f"{(b_s - a_s,)} floats")
                    if x < y:
                        pieces[(g, key)][x - ga:y - ga] = value[x - a_s:y - a_s]
            if (shard.get("params") is not None) is not has_params and has_params is not None:
                raise ValueError("some shards hold parameters and some do not")
            has_params = shard.get("params") is not None
            if has_params:
                value = np.asarray(shard["params"])
                if value.shape != (hi - lo,):
                    raise ValueError(f"shard {rank}: its parameters have shape {value.shape}, "
                                     f"expected {(hi - lo,)}")
                params[lo:hi] = value
        if first is None:
            raise ValueError("no shards given")
        if len(seen) != first["world_size"]:
            missing = sorted(set(range(first["world_size"])) - seen)
            raise ValueError(f"the run had {first['world_size']} ranks, the shards of ranks "
                             f"{missing} are missing: every shard is needed")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in first["param_groups"]]
        inner_state = {}
        for g in range(len(groups)):
            entry = {key: pieces[(g, key)] for key in keys[g]}
            if first["counted"][g] and first["steps"][g] > 0:
                entry["step"] = np.array(float(first["steps"][g]), dtype=np.float32)
            if entry:
                inner_state[g] = entry
        inner_sd = {"state": inner_state,
                    "param_groups": [dict(self._hyperparameters_of(group), params=[g])
                                     for g, group in enumerate(groups)]}
        # the single-process optimizer's own checks of the hyperparameters and state
        probe = self.optimizer_class(
            [dict(self._hyperparameters_of(group), params=[np.zeros(b - a, self.dtype)])
             for group, (a, b, _, _) in zip(groups, self._pieces)], **self._hyper)
        probe.load_state_dict(inner_sd)
        return groups, inner_sd, first["steps"], params if has_params else None

    def _check_shard_run(self, shard):
        """A shard's run must have this optimizer's class, parameters and groups."""
        if shard["optimizer"] != self.optimizer_class.__name__:
            raise ValueError(f"the shards are of a {shard['optimizer']} optimizer, this one is "
                             f"a {self.optimizer_class.__name__}")
        shapes = [list(p.shape) for p in self._params]
        if shard["shapes"] != shapes or np.dtype(shard["dtype"]) != self.dtype:
            raise ValueError(f"the shards' parameters have shapes {shard['shapes']} and dtype "
                             f"{np.dtype(shard['dtype'])}, this optimizer's {shapes} and {self.dtype}")
        if [int(x) for x in shard["group_offsets"]] != [int(x) for x in self._group_offsets]:
            raise ValueError("the shards' param groups hold other parameters than this optimizer's")
        counts = [len(g["params"]) for g in shard["param_groups"]]
        if counts != [len(g["params"]) for g in self._template.param_groups]:
            raise ValueError(f"the shards' param groups have {counts} parameters, this "
                             "optimizer's have "
                             f"{[len(g['params']) for g in self._template.param_groups]}")


def consolidate_shards(shards):
    """The single-process ``state_dict`` from the :meth:`ZeroOptimizer.shard_state_dict` of every rank."""
    shards = list(shards)
    if not shards or not all(isinstance(s, dict) and s.get("format") == SHARD_FORMAT for s in shards):
        raise ValueError("consolidate_shards needs the shard state dicts of a ZeroOptimizer run")
    shards = sorted(shards, key=lambda s: s["rank"])
    first = shards[0]
    world = first["world_size"]
    if [s["rank"] for s in shards] != list(range(world)):
        raise ValueError(f"the shards are of ranks {[s['rank'] for s in shards]}, but the run had "
                         f"{world} ranks: every shard is needed")
    for s in shards:
        for key in ("world_size", "numel", "shapes", "group_offsets", "optimizer", "dtype", "steps",
                    "counted"):
            if s.get(key) != first[key]:
                raise ValueError(f"the shards disagree on {key!r}: they are not from one run")
    numel, dtype = first["numel"], np.dtype(first["dtype"])
    offsets = first["group_offsets"]
    keys_per_group = [set() for _ in range(len(offsets) - 1)]
    for s in shards:
        for g, entry in enumerate(s["state"]):
            keys_per_group[g] |= set(entry)
    vectors = {}
    for key in sorted(set().union(*keys_per_group)):
        vec = np.zeros(numel, dtype=dtype)
        for s in shards:
            lo, hi = s["shard_range"]
            for g, entry in enumerate(s["state"]):
                if key in entry:
                    a, b = min(max(offsets[g], lo), hi), min(max(offsets[g + 1], lo), hi)
                    value = np.asarray(entry[key])
                    if value.shape != (b - a,):
                        raise ValueError(f"shard {s['rank']}: state {key!r} of group {g} has "
                                         f"shape {value.shape}, expected {(b - a,)}")
                    vec[a:b] = value
        vectors[key] = vec
    shapes = [tuple(x) for x in first["shapes"]]
    sizes = [math.prod(x) for x in shapes]
    param_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    state, index = {}, 0
    for g, group in enumerate(first["param_groups"]):
        for _ in group["params"]:
            entry = {}
            if first["steps"][g] > 0 and first["counted"][g]:
                entry["step"] = np.array(float(first["steps"][g]), dtype=np.float32)
            start, stop = int(param_offsets[index]), int(param_offsets[index + 1])
            for key in sorted(keys_per_group[g]):
                entry[key] = vectors[key][start:stop].reshape(shapes[index]).copy()
            if entry:
                state[index] = entry
            index += 1
    return {"state": state, "param_groups": [dict(g) for g in first["param_groups"]]}
