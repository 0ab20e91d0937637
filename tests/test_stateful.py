"""A stateful test (hypothesis RuleBasedStateMachine): random interleavings of steps,
state_dict round trips, add_param_group, edits of opt.state and of param_groups,
FlatParams gradients (as the buffer, or with entries rebound to other arrays or None),
checkpoints and backend switches, against a simple model of torch's semantics.

The model is what torch.optim does, written out: state is per parameter (an
object, not a position: it follows the array through every edit of the groups),
starts empty, is created on the parameter's first step with a gradient, and each
update is the functional step of one parameter (fastoptim.functional with the
NumPy reference, which every backend equals bit for bit). After every rule the
optimizer's parameters and state must equal the model's exactly.
"""
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastoptim
import fastoptim.functional as F
from fastoptim.checkpoint import load_checkpoint, save_checkpoint

CPU = [b for b in fastoptim.available_backends() if b != "cuda"]
SHAPES = [(3,), (2, 2), (5,), (1,)]


class Model:
    """torch's optimizer semantics, per parameter, with the reference math."""

    def __init__(self, kind, amsgrad):
        self.kind, self.amsgrad = kind, amsgrad
        self.state = {}  # parameter id -> dict

    def step(self, pid, p, g, group):
        if g is None:
            return
        state = self.state.setdefault(pid, {})
        if self.kind == "SGD":
            if group["momentum"] == 0:
                F.sgd_step([p], [g], lr=group["lr"], weight_decay=group["weight_decay"],
                           backend="numpy")
                self.state.pop(pid) if not state else None
                return
            bufs = [state.get("momentum_buffer")]
            F.sgd_step([p], [g], bufs, lr=group["lr"], momentum=group["momentum"],
                       weight_decay=group["weight_decay"], backend="numpy")
            state["momentum_buffer"] = bufs[0]
            return
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p)
        state["step"] += 1
        F.adam_step([p], [g], [state["exp_avg"]], [state["exp_avg_sq"]],
                    [state.get("max_exp_avg_sq")] if self.amsgrad else None, step=state["step"],
                    lr=group["lr"], weight_decay=group["weight_decay"], amsgrad=self.amsgrad,
                    backend="numpy")


class OptimizerMachine(RuleBasedStateMachine):
    @initialize(kind=st.sampled_from(["SGD", "Adam"]), amsgrad=st.booleans(),
                backend=st.sampled_from(CPU), seed=st.integers(0, 2**16))
    def setup(self, kind, amsgrad, backend, seed):
        self.rng = np.random.default_rng(seed)
        self.kind, self.amsgrad, self.backend = kind, amsgrad, backend
        self.flat = fastoptim.FlatParams([self.rng.standard_normal(s) for s in SHAPES[:3]])
        extra = self.rng.standard_normal((4,))
        # the layout: per group, the parameter ids; arrays and model copies by id
        self.next_id = 0
        self.arrays, self.copies = {}, {}
        layout = [[self.new_param(v) for v in self.flat.params], [self.new_param(extra)]]
        self.layout = layout
        self.groups = [self.hyper(), self.hyper()]
        self.model = Model(kind, amsgrad)
        self.opt = self.make_optimizer(backend)

    def new_param(self, array):
        pid = self.next_id
        self.next_id += 1
        self.arrays[pid], self.copies[pid] = array, array.copy()
        return pid

    def hyper(self):
        lr = float(self.rng.choice([0.1, 0.01]))
        if self.kind == "SGD":
            return dict(lr=lr, momentum=float(self.rng.choice([0.0, 0.9])),
                        weight_decay=float(self.rng.choice([0.0, 0.1])))
        return dict(lr=lr, weight_decay=float(self.rng.choice([0.0, 0.1])))

    def make_optimizer(self, backend):
        groups = [dict(params=[self.arrays[i] for i in ids], **hyper)
                  for ids, hyper in zip(self.layout, self.groups)]
        kwargs = dict(amsgrad=self.amsgrad) if self.kind == "Adam" else {}
        return getattr(fastoptim, self.kind)(groups, backend=backend, **kwargs)

    def pids(self):
        return [i for ids in self.layout for i in ids]

    def random_grads(self, none_rate=0.2):
        out = []
        for pid in self.pids():
            shape = self.arrays[pid].shape
            out.append(None if self.rng.random() < none_rate else self.rng.standard_normal(shape))
        return out

    def model_step(self, grads):
        k = 0
        for ids, hyper in zip(self.layout, self.groups):
            for pid in ids:
                self.model.step(pid, self.copies[pid], grads[k], hyper)
                k += 1

    # ------------------------------------------------------------------ rules
    @rule()
    def step(self):
        grads = self.random_grads()
        self.opt.step(grads)
        self.model_step(grads)

    @rule(rebind=st.booleans())
    def step_through_flat_grads(self, rebind):
        """The flat group's gradients written into flat.grads (one kernel call while the
        group's layout and state are intact), some entries rebound to arrays or None."""
        grads = self.random_grads(none_rate=0.0)
        self.flat.zero_grad()
        flat_ids = [id(v) for v in self.flat.params]
        for k, pid in enumerate(self.pids()):
            if id(self.arrays[pid]) in flat_ids:
                j = flat_ids.index(id(self.arrays[pid]))
                if rebind and self.rng.random() < 0.5:
                    self.flat.grads[j] = None if self.rng.random() < 0.5 else grads[k]
                else:
                    self.flat.grads[j][...] = grads[k]
                grads[k] = self.flat.grads[j]
        self.opt.step(grads)
        self.model_step(grads)

    @rule()
    def state_dict_round_trip(self):
        sd = self.opt.state_dict()
        self.opt = self.make_optimizer(self.backend)
        self.opt.load_state_dict(sd)

    @rule(backend=st.sampled_from(CPU))
    def switch_backend(self, backend):
        sd = self.opt.state_dict()
        self.backend = backend
        self.opt = self.make_optimizer(backend)
        self.opt.load_state_dict(sd)

    @rule()
    def checkpoint(self):
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "run.ckpt")
            save_checkpoint(path, self.opt)
            self.opt = self.make_optimizer(self.backend)
            load_checkpoint(path, self.opt)

    @rule()
    def deepcopy(self):
        """A deep copy of the FlatParams and the optimizer together carries on alone."""
        import copy

        self.flat, self.opt = copy.deepcopy((self.flat, self.opt))
        params = [p for g in self.opt.param_groups for p in g["params"]]
        for pid, p in zip(self.pids(), params):
            self.arrays[pid] = p

    @precondition(lambda self: len(self.layout) < 5)
    @rule(shape=st.sampled_from(SHAPES))
    def add_param_group(self, shape):
        pid = self.new_param(self.rng.standard_normal(shape))
        hyper = self.hyper()
        self.opt.add_param_group(dict(params=[self.arrays[pid]], **hyper))
        self.layout.append([pid])
        self.groups.append(hyper)

    @rule(data=st.data())
    def set_group_lr(self, data):
        g = data.draw(st.integers(0, len(self.layout) - 1))
        lr = data.draw(st.sampled_from([0.05, 0.2]))
        self.opt.param_groups[g]["lr"] = lr
        self.groups[g]["lr"] = lr

    @rule(data=st.data())
    def replace_param(self, data):
        g = data.draw(st.integers(0, len(self.layout) - 1))
        j = data.draw(st.integers(0, len(self.layout[g]) - 1))
        shape = self.arrays[self.layout[g][j]].shape
        pid = self.new_param(self.rng.standard_normal(shape))
        self.opt.param_groups[g]["params"][j] = self.arrays[pid]
        self.layout[g][j] = pid

    @rule(data=st.data())
    def append_param(self, data):
        g = data.draw(st.integers(0, len(self.layout) - 1))
        pid = self.new_param(self.rng.standard_normal(data.draw(st.sampled_from(SHAPES))))
        self.opt.param_groups[g]["params"].append(self.arrays[pid])
        self.layout[g].append(pid)

    @precondition(lambda self: any(len(ids) > 1 for ids in self.layout))
    @rule(data=st.data())
    def pop_param(self, data):
        g = data.draw(st.sampled_from([g for g, ids in enumerate(self.layout) if len(ids) > 1]))
        j = data.draw(st.integers(0, len(self.layout[g]) - 1))
        self.opt.param_groups[g]["params"].pop(j)
        pid = self.layout[g].pop(j)
        self.model.state.pop(pid, None)

    @rule(data=st.data())
    def edit_state(self, data):
        started = [k for k, pid in enumerate(self.pids()) if self.model.state.get(pid)]
        if not started:
            return
        k = data.draw(st.sampled_from(started))
        pid = self.pids()[k]
        key = "momentum_buffer" if self.kind == "SGD" else data.draw(
            st.sampled_from(["exp_avg", "exp_avg_sq"]))
        value = np.abs(self.rng.standard_normal(self.arrays[pid].shape))
        self.opt.state[k][key] = value
        self.model.state[pid][key] = value.copy()

    # ------------------------------------------------------------ invariants
    @invariant()
    def equals_the_model(self):
        if not hasattr(self, "opt"):
            return
        pids = self.pids()
        assert len(self.opt.param_groups) == len(self.layout)
        for k, pid in enumerate(pids):
            np.testing.assert_array_equal(self.arrays[pid], self.copies[pid])
            mine = dict(self.opt.state.get(k) or {})
            theirs = self.model.state.get(pid, {})
            assert set(mine) == set(theirs), (k, set(mine), set(theirs))
            for key, value in theirs.items():
                np.testing.assert_array_equal(np.asarray(mine[key]), np.asarray(value),
                                              err_msg=f"state[{k}][{key!r}]")
        sd = self.opt.state_dict()
        assert [g["params"] for g in sd["param_groups"]] == \
            [list(range(sum(map(len, self.layout[:g])), sum(map(len, self.layout[:g + 1]))))
             for g in range(len(self.layout))]


OptimizerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_optimizer_against_torchs_semantics = OptimizerMachine.TestCase
