"""Checkpoints: optimizer, scheduler, parameters and your own metadata in one ``.npz`` file.

    >>> from fastoptim.checkpoint import save_checkpoint, load_checkpoint
    >>> save_checkpoint("run.ckpt", optimizer=opt, scheduler=sched, extra={"epoch": 3})
    >>> # ... later, in a fresh process, after building opt and sched the same way:
    >>> extra = load_checkpoint("run.ckpt", optimizer=opt, scheduler=sched)
    >>> extra["epoch"]
    3

Saving:

* The file is a plain NumPy ``.npz`` archive (``np.savez``, no pickle): every
  array (optimizer state, parameters, arrays inside ``extra``) is an entry, and
  everything else -- param-group hyperparameters, scheduler state, step
  counts, versions -- is one JSON document in the entry ``__meta__``. Tuples,
  dicts with non-string keys, ``Counter``, NumPy scalars and non-finite floats
  are tagged so they come back with their types; anything else (functions,
  arbitrary objects) is refused with ``ValueError`` before anything is written.
* Parameters: ``params=None`` (default) saves the optimizer's parameters when
  an optimizer is given, so a checkpoint resumes training on its own; pass a
  list or dict of arrays (or a ``FlatParams``) to save those instead, or
  ``params=[]`` to save none.
* A SHA-256 checksum of every array and of the metadata is stored inside.
* The write is atomic: the archive goes to a temporary file in the same
  directory, which is flushed and ``fsync``-ed, then renamed over ``path``
  (``os.replace``), and the directory is ``fsync``-ed where the OS allows. A
  crash while saving leaves the previous file at ``path`` intact (and at worst
  a stray ``.<name>.tmp-*`` file next to it).

Loading validates everything **before** changing anything: the archive itself
(zip structure and CRCs, missing entries, JSON, format version, checksum), then
the match with the objects you pass (optimizer class, number of param groups,
parameters per group, names, shape and dtype of every parameter and state array,
scheduler class and state keys). Any problem raises ``ValueError`` saying what
is wrong, and the optimizer, scheduler and parameters are left exactly as they
were. Resuming is exact: a loaded run continues bit for bit like an
uninterrupted one.

As in torch, ``LambdaLR``/``MultiplicativeLR`` lambdas are not saved (only a
callable object's ``__dict__`` is): build the scheduler with the same lambdas,
then load.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import struct
import zipfile
import zlib
from collections import Counter, OrderedDict

import numpy as np

from .arrays import FlatParams, is_device_array

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastoptim-checkpoint"
FORMAT_VERSION = 1
META = "__meta__"
_TAGS = ("__tuple__", "__dict__", "__counter__", "__float__", "__np__", "__array__")


# --------------------------------------------------------------------- JSON encoding
class _Encoder:
    """Turn Python/NumPy values into JSON-able data; arrays become archive entries."""

    def __init__(self, arrays, prefix):
        self.arrays, self.prefix, self.count = arrays, prefix, 0

    def __call__(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and type(value) is int:
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise ValueError(f"cannot save {where}: arrays of dtype {value.dtype} are not supported")
            name = f"{self.prefix}/{self.count}"
            self.count += 1
            self.arrays[name] = np.array(value, copy=True)
            return {"__array__": name}
        if isinstance(value, np.generic) and not isinstance(value, np.object_):
            return {"__np__": value.dtype.str, "value": self(value.item(), where)}
        if isinstance(value, tuple):
            return {"__tuple__": [self(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Counter):
            return {"__counter__": [[self(k, where), self(v, f"{where}[{k!r}]")]
                                    for k, v in value.items()]}
        if isinstance(value, dict) and type(value) in (dict, OrderedDict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {"__dict__": [[self(k, where), self(v, f"{where}[{k!r}]")]
                                 for k, v in value.items()]}
        if isinstance(value, float):  # float subclasses
            return self(float(value), where)
        if isinstance(value, int):  # int subclasses other than bool
            return int(value)
        raise ValueError(
            f"cannot save {where}: {type(value).__name__} is not supported (a checkpoint holds "
            "None, bool, int, float, str, lists, tuples, dicts, Counters and NumPy arrays/scalars)"
        )


def _decode(value, arrays, where="metadata"):
    if isinstance(value, list):
        return [_decode(v, arrays, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) in (1, 2) and any(k in value for k in _TAGS):
        if "__tuple__" in value:
            return tuple(_decode(v, arrays, where) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_freeze(_decode(k, arrays, where)): _decode(v, arrays, where)
                    for k, v in value["__dict__"]}
        if "__counter__" in value:
            return Counter({_freeze(_decode(k, arrays, where)): _decode(v, arrays, where)
                            for k, v in value["__counter__"]})
        if "__float__" in value:
            return float(value["__float__"])
        if "__np__" in value:
            return np.dtype(value["__np__"]).type(_decode(value["value"], arrays, where))
        if "__array__" in value:
            name = value["__array__"]
            if name not in arrays:
                raise ValueError(f"the archive has no entry {name!r} (referenced by {where})")
            return arrays[name]
    return {k: _decode(v, arrays, where) for k, v in value.items()}


def _freeze(key):
    return tuple(_freeze(k) for k in key) if isinstance(key, (list, tuple)) else key


# ----------------------------------------------------------------------- helpers
def _host(a):
    if isinstance(a, np.ndarray):
        return np.array(a, copy=True)
    if is_device_array(a):
        from .arrays import device as _cuda

        return _cuda.DeviceArrays.to_host(a)
    raise TypeError(f"expected an array, got {type(a).__name__}")


def _shape_dtype(a):
    if isinstance(a, np.ndarray):
        return tuple(a.shape), a.dtype.str
    from .arrays import device as _cuda

    d = _cuda._desc(a)
    return tuple(d.shape), d.dtype.str


def _optimizer_params(optimizer):
    params = [p for g in optimizer.param_groups for p in g["params"]]
    names = None
    if all("param_names" in g for g in optimizer.param_groups):
        names = [n for g in optimizer.param_groups for n in g["param_names"]]
    return params, names


def _param_list(params, argname="params"):
    """(arrays, names or None) from a list/tuple/dict of arrays or a FlatParams."""
    if isinstance(params, FlatParams):
        params = params.params
    if isinstance(params, dict):
        names, arrays = [str(k) for k in params], list(params.values())
        if len(set(names)) != len(names) or not all(isinstance(k, str) for k in params):
            raise TypeError(f"{argname} must be keyed by distinct str names")
    elif isinstance(params, (list, tuple)):
        names, arrays = None, list(params)
    elif isinstance(params, np.ndarray) or is_device_array(params):
        names, arrays = None, [params]
    else:
        raise TypeError(
            f"{argname} must be a list or dict of arrays or a FlatParams, but got {type(params).__name__}"
        )
    for i, a in enumerate(arrays):
        if not (isinstance(a, np.ndarray) or is_device_array(a)):
            label = names[i] if names else i
            raise TypeError(f"{argname}[{label!r}] must be an array, but got {type(a).__name__}")
    return arrays, names


def _scheduler_type(scheduler):
    t = type(scheduler)
    return f"{t.__module__}.{t.__qualname__}"


def _checksum(arrays, meta):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + b"\0" + a.dtype.str.encode() + b"\0"
                 + repr(tuple(a.shape)).encode() + b"\0")
        h.update(a.tobytes())
    h.update(_canonical(meta).encode())
    return "sha256:" + h.hexdigest()


def _canonical(meta):
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _version():
    from . import __version__

    return __version__


# -------------------------------------------------------------------------- save
def save_checkpoint(path, optimizer=None, scheduler=None, params=None, extra=None) -> None:
    """Write ``optimizer``, ``scheduler``, ``params`` and ``extra`` to ``path`` atomically.

    Args:
        path: file name (str or path-like); written exactly, no suffix added.
        optimizer: a fastoptim optimizer (its ``state_dict()``), or None.
        scheduler: a fastoptim scheduler (its ``state_dict()``), or None.
        params: arrays to save (list, dict or FlatParams); None: the
            optimizer's parameters if there is an optimizer; ``[]``: none.
        extra: your own data (epoch, metrics, RNG state, ...): None, bool,
            int, float, str, NumPy arrays/scalars and lists/tuples/dicts of them.

    Everything is gathered and checked before the file is opened; the file at
    ``path`` is replaced in one atomic rename.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "fastoptim_version": _version(), "optimizer": None, "scheduler": None,
            "params": None, "extra": None, "has_extra": extra is not None}

    if optimizer is not None:
        if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer must be an optimizer, but got {type(optimizer).__name__}")
        sd = optimizer.state_dict()
        opt_params, _ = _optimizer_params(optimizer)
        state_keys = []
        for index, entry in sd["state"].items():
            keys = []
            for key, value in entry.items():
                value = np.asarray(value)
                if value.dtype.hasobject:
                    raise ValueError(f"cannot save optimizer state[{index}][{key!r}]: dtype object")
                arrays[f"optimizer/state/{int(index)}/{key}"] = value
                keys.append(key)
            state_keys.append([int(index), keys])
        encode = _Encoder(arrays, "optimizer/groups")
        meta["optimizer"] = {
            "type": type(optimizer).__name__,
            "param_groups": encode(sd["param_groups"], "optimizer param_groups"),
            "state": state_keys,
            "shapes": [list(_shape_dtype(p)[0]) for p in opt_params],
            "dtypes": [_shape_dtype(p)[1] for p in opt_params],
        }
        if params is None:
            params = opt_params

    if scheduler is not None:
        if not hasattr(scheduler, "state_dict"):
            raise TypeError(f"scheduler must be a scheduler, but got {type(scheduler).__name__}")
        encode = _Encoder(arrays, "scheduler")
        meta["scheduler"] = {"type": _scheduler_type(scheduler),
                             "state": encode(scheduler.state_dict(), "scheduler state")}

    if params is not None:
        values, names = _param_list(params)
        if values:
            for i, p in enumerate(values):
                arrays[f"params/{i}"] = _host(p)
            meta["params"] = {"names": names,
                              "shapes": [list(_shape_dtype(p)[0]) for p in values],
                              "dtypes": [_shape_dtype(p)[1] for p in values]}

    if extra is not None:
        meta["extra"] = _Encoder(arrays, "extra")(extra, "extra")

    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise ValueError(f"cannot save {name}: dtype object")
    meta["checksum"] = _checksum(arrays, meta)
    # key order is kept in the file (dicts come back in their order); the checksum
    # hashes the key-sorted form
    arrays[META] = np.array(json.dumps(meta, separators=(",", ":"), allow_nan=False))
    _atomic_write(path, arrays)


def _atomic_write(path, arrays):
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(directory, flags)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# -------------------------------------------------------------------------- load
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, KeyError,
                OSError, zlib.error, struct.error, UnicodeDecodeError, NotImplementedError)


def _check_local_headers(data):
    """Every entry's local header must agree with the central directory (zipfile reads
    sizes from the directory only, so a damaged local header would go unnoticed)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            at = info.header_offset
            (sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = struct.unpack(
                "<4sHHHHHIIIHH", data[at:at + 30])
            name = data[at + 30:at + 30 + name_len]
            extra = data[at + 30 + name_len:at + 30 + name_len + extra_len]
            if csize == usize == 0xFFFFFFFF:  # zip64: the sizes are in the extra field
                tag, size, usize, csize = struct.unpack("<HHQQ", extra[:20])
                if tag != 1 or size < 16:
                    raise ValueError(f"bad zip64 local header of {info.filename!r}")
            if flags & 8:  # sizes and CRC in a data descriptor after the data
                crc, csize, usize = info.CRC, info.compress_size, info.file_size
            if (sig != b"PK\x03\x04" or method != info.compress_type or crc != info.CRC
                    or csize != info.compress_size or usize != info.file_size
                    or name.decode("utf-8", "replace") != info.orig_filename):
                raise ValueError(f"the local header of {info.filename!r} does not match "
                                 "the archive's directory")


def _read(path):
    """(meta, arrays): the archive read, parsed and verified, or ValueError."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"PK\x03\x04"):
        raise ValueError(f"checkpoint {path!r} is not a fastoptim checkpoint (not an .npz archive)")
    try:
        _check_local_headers(data)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = {name: archive[name] for name in names}
    except _READ_ERRORS as exc:
        raise ValueError(f"checkpoint {path!r} is truncated or corrupted: {exc}") from exc
    if META not in arrays:
        raise ValueError(f"checkpoint {path!r} has no {META!r} entry: not a fastoptim checkpoint")
    raw = arrays.pop(META)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ValueError(f"checkpoint {path!r}: the {META!r} entry is not a JSON string")
    try:
        meta = json.loads(str(raw[()]))
    except ValueError as exc:
        raise ValueError(f"checkpoint {path!r}: its metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a fastoptim checkpoint (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"checkpoint {path!r}: bad metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"checkpoint {path!r}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path!r} has format version {version}, written by a newer fastoptim "
            f"({meta.get('fastoptim_version')}); this one ({_version()}) reads up to version "
            f"{FORMAT_VERSION}"
        )
    stored = meta.pop("checksum", None)
    if not isinstance(stored, str):
        raise ValueError(f"checkpoint {path!r} has no checksum")
    try:
        actual = _checksum(arrays, meta)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path!r}: bad metadata ({exc})") from exc
    if actual != stored:
        raise ValueError(f"checkpoint {path!r} is corrupted: checksum mismatch "
                         f"(stored {stored}, computed {actual})")
    for key in ("optimizer", "scheduler", "params", "extra", "has_extra"):
        if key not in meta:
            raise ValueError(f"checkpoint {path!r}: metadata has no {key!r} entry")
    return meta, arrays


def _check_arrays_match(path, what, targets, shapes, dtypes):
    if len(targets) != len(shapes):
        raise ValueError(f"checkpoint {path!r}: {what}: it holds {len(shapes)} parameters, "
                         f"but {len(targets)} were given")
    for i, (p, shape, dtype) in enumerate(zip(targets, shapes, dtypes)):
        got_shape, got_dtype = _shape_dtype(p)
        if tuple(shape) != got_shape or dtype != got_dtype:
            raise ValueError(
                f"checkpoint {path!r}: {what}: parameter {i} was saved with shape "
                f"{tuple(shape)} and dtype {np.dtype(dtype)}, but the given one has shape "
                f"{got_shape} and dtype {np.dtype(got_dtype)}"
            )


def _plan_optimizer(path, meta, arrays, optimizer):
    """The optimizer's load, checked: the archive's own promises here (the optimizer's
    class, the saved parameters' shapes and dtypes, every entry present, state arrays
    of their parameter's dtype: a resumed run is exact), everything else by the
    optimizer's own check phase (``_check_load``). Returns what ``_apply_load`` takes."""
    saved = meta["optimizer"]
    if saved is None:
        raise ValueError(f"checkpoint {path!r} has no optimizer state")
    if saved.get("type") != type(optimizer).__name__:
        raise ValueError(f"checkpoint {path!r} holds the state of a {saved.get('type')} optimizer, "
                         f"not of a {type(optimizer).__name__}")
    try:
        groups = _decode(saved["param_groups"], arrays, "optimizer param_groups")
        state_keys = saved["state"]
        shapes, dtypes = saved["shapes"], saved["dtypes"]
        state_keys = [(int(index), [str(k) for k in keys]) for index, keys in state_keys]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path!r}: bad optimizer metadata ({exc})") from exc
    if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise ValueError(f"checkpoint {path!r}: bad optimizer param groups")
    params, _ = _optimizer_params(optimizer)
    _check_arrays_match(path, "optimizer", params, shapes, dtypes)
    for i, (group, now) in enumerate(zip(groups, optimizer.param_groups)):
        if "param_names" in group and "param_names" in now and group["param_names"] != now["param_names"]:
            raise ValueError(f"checkpoint {path!r}: param group {i} has parameters "
                             f"{group['param_names']}, this optimizer's {now['param_names']}")
    state = {}
    for index, keys in state_keys:
        entry = {}
        for key in keys:
            name = f"optimizer/state/{index}/{key}"
            if name not in arrays:
                raise ValueError(f"checkpoint {path!r} has no entry {name!r}")
            value = arrays[name]
            if key == "step" and (value.size != 1 or value.dtype.kind != "f"):
                raise ValueError(f"checkpoint {path!r}: {name} is not a scalar step count")
            entry[key] = value
        state[index] = entry
    check = getattr(optimizer, "_check_load", None)
    if check is None:  # not a fastoptim Optimizer: its own load_state_dict, applied first
        return _Unchecked(optimizer.load_state_dict, {"state": state, "param_groups": groups})
    try:
        plan = check({"state": state, "param_groups": groups})
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"checkpoint {path!r}: the optimizer rejected the saved state: {exc}") from exc
    index_to_param = {}
    start = 0
    for group in groups:  # the saved indices, group by group (the check matched the sizes)
        index_to_param.update(zip(group["params"], range(start, start + len(group["params"]))))
        start += len(group["params"])
    for index, entry in state.items():
        p_shape, p_dtype = _shape_dtype(params[index_to_param[index]])
        for key, value in entry.items():
            if key != "step" and value.dtype.str != p_dtype:
                raise ValueError(
                    f"checkpoint {path!r}: optimizer/state/{index}/{key} has dtype "
                    f"{value.dtype}, but its parameter has dtype {np.dtype(p_dtype)}")
    return plan


class _Unchecked:
    """The load of an object without a check phase (not a fastoptim optimizer or
    scheduler): its own ``load_state_dict``, run before the checked objects are applied."""
    def __init__(self, load, state):
        self.load, self.state = load, state


def _state_shape(state):
    """The structure a scheduler state must keep: its keys, and those of nested schedulers."""
    keys = set(state)
    subs = state.get("_schedulers")
    nested = [_state_shape(s) for s in subs] if isinstance(subs, list) and all(
        isinstance(s, dict) for s in subs) else None
    return keys, nested


def _plan_scheduler(path, meta, arrays, scheduler):
    saved = meta["scheduler"]
    if saved is None:
        raise ValueError(f"checkpoint {path!r} has no scheduler state")
    if saved.get("type") != _scheduler_type(scheduler):
        raise ValueError(f"checkpoint {path!r} holds the state of a {saved.get('type')}, "
                         f"not of a {_scheduler_type(scheduler)}")
    state = _decode(saved.get("state"), arrays, "scheduler state")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path!r}: bad scheduler state")
    now = scheduler.state_dict()
    if _state_shape(state) != _state_shape(now):
        raise ValueError(
            f"checkpoint {path!r}: the saved {type(scheduler).__name__} state has entries "
            f"{sorted(state)}, this scheduler {sorted(now)} (built with other arguments?)"
        )
    for key in ("base_lrs", "_last_lr"):
        if isinstance(now.get(key), list) and len(state[key]) != len(now[key]):
            raise ValueError(f"checkpoint {path!r}: the scheduler was saved for "
                             f"{len(state[key])} param groups, this one has {len(now[key])}")
    check = getattr(scheduler, "_check_load", None)
    if check is None:  # not a fastoptim scheduler: its own load_state_dict, applied first
        return _Unchecked(scheduler.load_state_dict, state)
    try:
        return check(state)
    except Exception as exc:
        raise ValueError(f"checkpoint {path!r}: the scheduler rejected the saved state: {exc}") from exc


def load_checkpoint(path, optimizer=None, scheduler=None, params=None):
    """Load a checkpoint written by :func:`save_checkpoint`; return its ``extra`` (or None).

    Args:
        path: the checkpoint file.
        optimizer: load the optimizer state (and param groups) into it.
        scheduler: load the scheduler state into it (after the optimizer's, as
            torch's recipe: the lrs live in the optimizer's param groups). The
            optimizer's and the scheduler's check phases (``_check_load``) both
            run before either is changed.
        params: arrays to copy the saved parameters into; None: the
            optimizer's parameters, when there is an optimizer and the
            checkpoint holds parameters.

    Raises:
        ValueError: the file is truncated, corrupted or of another format
            version, or does not match the objects given (see the module doc).
            Nothing has been changed when it is raised.
        FileNotFoundError: there is no file at ``path``.
    """
    path = os.fspath(path)
    meta, arrays = _read(path)

    # ----- plan and validate everything first
    opt_plan = _plan_optimizer(path, meta, arrays, optimizer) if optimizer is not None else None
    sched_plan = _plan_scheduler(path, meta, arrays, scheduler) if scheduler is not None else None
    targets = None
    if params is not None:
        targets, names = _param_list(params)
        if meta["params"] is None and targets:
            raise ValueError(f"checkpoint {path!r} holds no parameters")
    elif optimizer is not None and meta["params"] is not None:
        targets, names = _optimizer_params(optimizer)
        if meta["params"].get("names") is None:
            names = None
    if targets:
        saved = meta["params"]
        if names is not None and saved.get("names") is not None and names != saved["names"]:
            raise ValueError(f"checkpoint {path!r}: the parameters were saved as {saved['names']}, "
                             f"the given ones are {names}")
        _check_arrays_match(path, "params", targets, saved["shapes"], saved["dtypes"])
        for i, p in enumerate(targets):
            name = f"params/{i}"
            if name not in arrays:
                raise ValueError(f"checkpoint {path!r} has no entry {name!r}")
            if isinstance(p, np.ndarray) and not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only; the checkpoint cannot be loaded into it")
    extra = _decode(meta["extra"], arrays, "extra") if meta["has_extra"] else None

    # ----- apply: everything is checked; nothing below can fail
    # (an object without a check phase, not fastoptim's, loads first by its own load)
    for what, plan in (("optimizer", opt_plan), ("scheduler", sched_plan)):
        if isinstance(plan, _Unchecked):
            try:
                plan.load(plan.state)
            except Exception as exc:
                raise ValueError(f"checkpoint {path!r}: the {what} rejected the saved state: {exc}") from exc
    opt_plan, sched_plan = (None if isinstance(x, _Unchecked) else x for x in (opt_plan, sched_plan))
    if opt_plan is not None:
        optimizer._apply_load(opt_plan)
    if sched_plan is not None:
        scheduler._apply_load(sched_plan)
    if targets:
        from .arrays import device_support

        for i, p in enumerate(targets):
            if isinstance(p, np.ndarray):
                np.copyto(p, arrays[f"params/{i}"], casting="no")
            else:
                device_support([p]).copy_into(p, arrays[f"params/{i}"])
    return extra
