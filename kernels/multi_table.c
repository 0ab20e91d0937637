/* fastoptim._multi_table_c: check a plain list of parameters, their gradients and their
 * optimizer state, and fill a table of data pointers and lengths for one multi-tensor
 * kernel call (fastoptim/backends/_multi_table.py documents the table; its pure-Python
 * `fill_py` takes exactly the same decisions and is the fallback and the test oracle).
 *
 * A CPython extension, not cffi: the checks read the NumPy array structs and the state
 * dicts directly, ~20-40 ns per array, where any per-array work from Python costs
 * microseconds. It never raises on bad input: it returns a short reason string and the
 * optimizer then takes its general (checked, per-tensor) path, which accepts or refuses
 * the input with the proper message. It writes only the table, the steps array and, once
 * every check has passed, the step counters.
 *
 * Every check runs on every call; the only thing kept between calls is the sorted list
 * of written byte spans, reused only when this call's spans are identical (so the
 * overlap verdict is the same, exactly). The state dict is read in one pass over its
 * storage when its keys are ints (no int object and no hash lookup per row).
 *
 * `first_read_only` (the writeable flags of a list of arrays, in one pass) serves the
 * FlatParams path of the optimizer, whose views a user can make read-only unseen;
 * `fingerprint` (every array's address, dtype, flags, shape and strides, as bytes) lets its
 * cached plan prove on every step that the flat buffers are still the ones it checked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_21_API_VERSION
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the table's layout (fastoptim/backends/_multi_table.py), generated from _constants.py */
#include "fo_constants.h"
enum { COL_N = FO_COL_N, COL_DTYPE = FO_COL_DTYPE, COL_PARAM = FO_COL_PARAM, COL_GRAD = FO_COL_GRAD,
       COL_STATE0 = FO_COL_STATE0, COL_STEP = FO_COL_STEP, NCOL = FO_NCOL };
#define MAX_KEYS FO_MAX_KEYS
#define SKIPPED FO_SKIPPED
#define ALL_STEPPED FO_ALL_STEPPED

typedef struct { uintptr_t lo, hi; } span_t;

typedef struct {
    span_t *items;
    Py_ssize_t n, cap;
} spans_t;

typedef struct {
    spans_t written, reads;            /* this call's spans, in table order */
    spans_t last_written, last_reads;  /* the last call whose checks all passed */
    spans_t sorted;                    /* last_written sorted by start address */
    int valid;                         /* last_* and sorted are meaningful */
} cache_t;

static const char *CAPSULE = "fastoptim._multi_table_c.cache";

static void cache_free(PyObject *capsule)
{
    cache_t *c = PyCapsule_GetPointer(capsule, CAPSULE);
    if (c == NULL) return;
    free(c->written.items); free(c->reads.items); free(c->last_written.items);
    free(c->last_reads.items); free(c->sorted.items);
    free(c);
}

static PyObject *new_cache(PyObject *self, PyObject *noargs)
{
    cache_t *c = calloc(1, sizeof(cache_t));
    if (c == NULL) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(c, CAPSULE, cache_free);
    if (capsule == NULL) free(c);
    return capsule;
}

static int push(spans_t *s, span_t x)
{
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap < 64 ? 64 : 2 * s->cap;
        span_t *items = realloc(s->items, cap * sizeof(span_t));
        if (items == NULL) return -1;
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = x;
    return 0;
}

static int copy_spans(spans_t *dst, const spans_t *src)
{
    if (dst->cap < src->n) {
        span_t *items = realloc(dst->items, (src->n ? src->n : 1) * sizeof(span_t));
        if (items == NULL) return -1;
        dst->items = items;
        dst->cap = src->n;
    }
    if (src->n) memcpy(dst->items, src->items, src->n * sizeof(span_t));
    dst->n = src->n;
    return 0;
}

static int same_spans(const spans_t *a, const spans_t *b)
{
    return a->n == b->n && (a->n == 0 || !memcmp(a->items, b->items, a->n * sizeof(span_t)));
}

static int by_lo(const void *x, const void *y)
{
    uintptr_t a = ((const span_t *)x)->lo, b = ((const span_t *)y)->lo;
    return (a > b) - (a < b);
}

/* The array's dtype code (0 float32, 1 float64), or -1 when it is neither in native order. */
static int dtype_code(PyArrayObject *a)
{
    if (!PyArray_ISNOTSWAPPED(a)) return -1;
    switch (PyArray_TYPE(a)) {
    case NPY_FLOAT32: return 0;
    case NPY_FLOAT64: return 1;
    default: return -1;
    }
}

/* An exact ndarray, C-contiguous and aligned (writeable when `write`), of dtype `code`
 * and of the shape of `like` (when given). Returns the array or NULL. */
static PyArrayObject *as_checked(PyObject *o, int code, PyArrayObject *like, int write)
{
    if (o == NULL || !PyArray_CheckExact(o)) return NULL;
    PyArrayObject *a = (PyArrayObject *)o;
    int need = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | (write ? NPY_ARRAY_WRITEABLE : 0);
    if ((PyArray_FLAGS(a) & need) != need || dtype_code(a) != code) return NULL;
    if (like != NULL) {
        int nd = PyArray_NDIM(a);
        if (nd != PyArray_NDIM(like)) return NULL;
        if (nd && memcmp(PyArray_DIMS(a), PyArray_DIMS(like), nd * sizeof(npy_intp))) return NULL;
    }
    return a;
}

static inline span_t span_of(PyArrayObject *a)
{
    uintptr_t lo = (uintptr_t)PyArray_DATA(a);
    span_t s = {lo, lo + (uintptr_t)PyArray_NBYTES(a)};
    return s;
}

static void free_entries(PyObject **ent, Py_ssize_t n)
{
    if (ent == NULL) return;
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(ent[i]);
    free(ent);
}

/* state.get(i) for every i in [0, n), read in one pass over the dict's own storage (no int
 * objects, no hashing): new references, NULL where there is no entry. Sets *lookup and
 * returns NULL (no error) when the dict holds a key that is not an exact int: then each
 * index is looked up as dict.get would (a key such as True or 1.0 equals an index). Keys
 * out of [0, n) are never looked up, so they are skipped here too. */
static PyObject **entries_by_index(PyObject *state, Py_ssize_t n, int *lookup)
{
    *lookup = 0;
    PyObject **ent = calloc(n ? n : 1, sizeof(PyObject *));
    if (ent == NULL) return (PyObject **)PyErr_NoMemory();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(state, &pos, &k, &v)) {
        if (!PyLong_CheckExact(k)) {
            free_entries(ent, n);
            *lookup = 1;
            return NULL;
        }
        Py_ssize_t i = PyLong_AsSsize_t(k);
        if (i == -1 && PyErr_Occurred()) { PyErr_Clear(); continue; }  /* huge: out of range */
        if (i >= 0 && i < n) {
            Py_INCREF(v);
            Py_XSETREF(ent[i], v);
        }
    }
    return ent;
}

#define DECLINE(why) do { reason = (why); goto done; } while (0)
#define ADD_SPAN(list, s) do { span_t s_ = (s); \
        if (s_.hi > s_.lo && push(&c->list, s_)) goto nomem; } while (0)

/* fill(params, grads, state, groups, uses_step, table, steps, step_key, cache)
 *
 * params: list of the parameters; grads: list or tuple, same length (None = skip);
 * state: dict {index: dict of state}, both read as dict.get reads them (the dict's own
 * storage, whatever a subclass overrides);
 * groups: tuple of (start, stop, keys, members) covering every parameter in order, keys
 * a tuple of at most 3 str, members the group's own list, which must hold params[start:stop];
 * uses_step: whether each entry has a float32 0-d "step";
 * table: int64 C-contiguous writeable (len(params), NCOL); steps: float64 (len(params),),
 * filled with each stepped row's new step count; step_key: "step"; cache: new_cache().
 * Returns ALL_STEPPED (an int: every row has a gradient, and every group's rows share
 * one dtype and one step), True (the same with some rows skipped), False (a group's
 * stepped rows do not share them: the caller splits them), or a str: why the general
 * path must run. */
static PyObject *fill(PyObject *self, PyObject *args)
{
    PyObject *params, *grads, *state, *groups, *step_key, *cache_obj;
    PyArrayObject *table_arr, *steps_arr;
    int uses_step;
    if (!PyArg_ParseTuple(args, "O!OO!O!pO!O!UO", &PyList_Type, &params, &grads, &PyDict_Type,
                          &state, &PyTuple_Type, &groups, &uses_step, &PyArray_Type, &table_arr,
                          &PyArray_Type, &steps_arr, &step_key, &cache_obj))
        return NULL;
    cache_t *c = PyCapsule_GetPointer(cache_obj, CAPSULE);
    if (c == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(params);
    if (PyArray_TYPE(table_arr) != NPY_INT64 || PyArray_NDIM(table_arr) != 2
        || PyArray_DIM(table_arr, 0) != n || PyArray_DIM(table_arr, 1) != NCOL
        || !PyArray_ISCARRAY(table_arr) || PyArray_TYPE(steps_arr) != NPY_FLOAT64
        || PyArray_NDIM(steps_arr) != 1 || PyArray_DIM(steps_arr, 0) != n
        || !PyArray_ISCARRAY(steps_arr)) {
        PyErr_SetString(PyExc_ValueError, "fill: table or steps has the wrong layout");
        return NULL;
    }
    if (!PyList_Check(grads) && !PyTuple_Check(grads)) return PyUnicode_FromString("grads type");
    if (PySequence_Fast_GET_SIZE(grads) != n) return PyUnicode_FromString("grads length");
    PyObject **grad_items = PySequence_Fast_ITEMS(grads);
    int64_t *table = (int64_t *)PyArray_DATA(table_arr);
    double *steps = (double *)PyArray_DATA(steps_arr);
    const char *reason = NULL;
    int uniform = 1, skipped = 0;
    c->written.n = 0;
    c->reads.n = 0;
    int lookup;
    PyObject **ent = entries_by_index(state, n, &lookup);
    if (ent == NULL && !lookup) return NULL;
    PyObject *result = NULL;

    Py_ssize_t expect = 0;
    for (Py_ssize_t gi = 0; gi < PyTuple_GET_SIZE(groups); gi++) {
        PyObject *spec = PyTuple_GET_ITEM(groups, gi), *keys, *members;
        Py_ssize_t start, stop;
        if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "nnO!O", &start, &stop,
                                                      &PyTuple_Type, &keys, &members))
            goto error_spec;
        Py_ssize_t nkeys = PyTuple_GET_SIZE(keys);
        if (start != expect || stop < start || stop > n || nkeys > MAX_KEYS) goto error_spec;
        expect = stop;
        /* the group's own list must still hold exactly these parameters */
        if (!PyList_Check(members) && !PyTuple_Check(members)) DECLINE("group params type");
        if (PySequence_Fast_GET_SIZE(members) != stop - start) DECLINE("group params changed");
        PyObject **member = PySequence_Fast_ITEMS(members);
        int group_code = -1;
        double group_step = 0.0;
        for (Py_ssize_t i = start; i < stop; i++) {
            int64_t *row = table + i * NCOL;
            memset(row, 0, NCOL * sizeof(int64_t));
            PyObject *p_obj = PyList_GET_ITEM(params, i);
            if (member[i - start] != p_obj) DECLINE("group params changed");
            if (!PyArray_CheckExact(p_obj)) DECLINE("param type");
            PyArrayObject *p = (PyArrayObject *)p_obj;
            int code = dtype_code(p);
            if (code < 0 || !PyArray_ISCARRAY(p)) DECLINE("param layout");
            ADD_SPAN(written, span_of(p));
            PyObject *entry; /* borrowed (ent holds a reference) */
            if (ent != NULL) {
                entry = ent[i];
            } else {
                PyObject *key_i = PyLong_FromSsize_t(i);
                if (key_i == NULL) goto fail;
                entry = PyDict_GetItemWithError(state, key_i);
                Py_DECREF(key_i);
                if (entry == NULL && PyErr_Occurred()) goto fail;
            }
            PyObject *g_obj = grad_items[i];
            if (g_obj == Py_None) {
                /* not stepped: its param and state are still written arrays a gradient
                 * must not overlap, as on the general path */
                row[COL_N] = SKIPPED;
                steps[i] = 0.0;
                skipped = 1;
                if (entry == NULL) continue;
                if (!PyDict_Check(entry)) DECLINE("state entry type");
                PyObject *k, *v;
                Py_ssize_t pos = 0;
                while (PyDict_Next(entry, &pos, &k, &v)) {
                    if (PyUnicode_Check(k) && PyUnicode_Compare(k, step_key) == 0) continue;
                    if (!PyArray_CheckExact(v) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)v))
                        DECLINE("state of a skipped parameter");
                    ADD_SPAN(written, span_of((PyArrayObject *)v));
                }
                continue;
            }
            PyArrayObject *g = as_checked(g_obj, code, p, 0);
            if (g == NULL) DECLINE("grad");
            int stateless = nkeys == 0 && !uses_step; /* plain SGD keeps no state, as torch */
            if (entry == NULL && !stateless) DECLINE("no state yet");
            if (entry != NULL && !PyDict_Check(entry)) DECLINE("state entry type");
            if (entry != NULL && PyDict_GET_SIZE(entry) != nkeys + (uses_step ? 1 : 0))
                DECLINE("state keys");
            row[COL_N] = (int64_t)PyArray_SIZE(p);
            row[COL_DTYPE] = code;
            row[COL_PARAM] = (int64_t)(uintptr_t)PyArray_DATA(p);
            row[COL_GRAD] = (int64_t)(uintptr_t)PyArray_DATA(g);
            ADD_SPAN(reads, span_of(g));
            for (Py_ssize_t k = 0; k < nkeys; k++) {
                PyObject *key = PyTuple_GET_ITEM(keys, k);
                PyArrayObject *a = as_checked(PyDict_GetItemWithError(entry, key), code, p, 1);
                if (a == NULL) {
                    if (PyErr_Occurred()) goto fail;
                    DECLINE("state array");
                }
                row[COL_STATE0 + k] = (int64_t)(uintptr_t)PyArray_DATA(a);
                ADD_SPAN(written, span_of(a));
            }
            double step = 0.0;
            if (uses_step) {
                PyObject *s_obj = PyDict_GetItemWithError(entry, step_key);
                if (s_obj == NULL && PyErr_Occurred()) goto fail;
                if (s_obj == NULL || !PyArray_CheckExact(s_obj)) DECLINE("step");
                PyArrayObject *s = (PyArrayObject *)s_obj;
                int need = NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE;
                if (PyArray_NDIM(s) != 0 || dtype_code(s) != 0 || (PyArray_FLAGS(s) & need) != need)
                    DECLINE("step");
                row[COL_STEP] = (int64_t)(uintptr_t)PyArray_DATA(s);
                ADD_SPAN(written, span_of(s)); /* a counter shared by two rows is an overlap */
                step = (double)(float)(*(float *)PyArray_DATA(s) + 1.0f);
                if (!isfinite(step)) DECLINE("step"); /* rows are grouped by step value */
            }
            steps[i] = step;
            if (group_code < 0) {
                group_code = code;
                group_step = step;
            } else if (code != group_code || step != group_step) {
                uniform = 0;
            }
        }
    }
    if (expect != n) goto error_spec;

    /* No two written arrays overlap, and no gradient overlaps a written array. The
     * verdict depends only on the spans: it is reused when they are the same as in the
     * last call that passed. */
    int same_writes = c->valid && same_spans(&c->written, &c->last_written);
    if (!same_writes) {
        c->valid = 0;
        if (copy_spans(&c->sorted, &c->written)) goto nomem;
        span_t *w = c->sorted.items;
        Py_ssize_t nw = c->sorted.n;
        if (nw > 1) qsort(w, nw, sizeof(span_t), by_lo);
        for (Py_ssize_t k = 1; k < nw; k++)
            if (w[k].lo < w[k - 1].hi) DECLINE("written arrays overlap");
        if (copy_spans(&c->last_written, &c->written)) goto nomem;
    }
    if (!(same_writes && same_spans(&c->reads, &c->last_reads))) {
        c->valid = 0;
        const span_t *w = c->sorted.items;
        for (Py_ssize_t r = 0; r < c->reads.n; r++) {
            span_t g = c->reads.items[r];
            /* the last written span starting before g ends must end before g starts */
            Py_ssize_t lo = 0, hi = c->sorted.n; /* first index with w.lo >= g.hi */
            while (lo < hi) {
                Py_ssize_t mid = lo + (hi - lo) / 2;
                if (w[mid].lo < g.hi) lo = mid + 1; else hi = mid;
            }
            if (lo > 0 && w[lo - 1].hi > g.lo) DECLINE("a gradient overlaps a written array");
        }
        if (copy_spans(&c->last_reads, &c->reads)) goto nomem;
    }
    c->valid = 1;

    /* Every check passed: count the step, as `state["step"] += 1` does (float32). */
    if (uses_step)
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t *row = table + i * NCOL;
            if (row[COL_N] != SKIPPED) *(float *)(uintptr_t)row[COL_STEP] = (float)steps[i];
        }
done:
    if (reason != NULL) {
        c->valid = 0;
        result = PyUnicode_FromString(reason);
    } else {
        result = uniform && !skipped ? PyLong_FromLong(ALL_STEPPED) : PyBool_FromLong(uniform);
    }
    free_entries(ent, n);
    return result;
nomem:
    PyErr_NoMemory();
    goto fail;
error_spec:
    PyErr_SetString(PyExc_ValueError, "fill: groups must be (start, stop, keys, members) tuples "
                                      "covering every parameter in order, at most 3 keys each");
fail:
    c->valid = 0;
    free_entries(ent, n);
    return NULL;
}

/* first_read_only(arrays) -> int
 *
 * arrays: a list or tuple. The index of its first item that is not a writeable NumPy
 * array (an ndarray, or a subclass, whose WRITEABLE flag is set), or -1 when every item
 * is one. One flag read per item: the optimizer calls it on every step for the views
 * that a FlatParams group's flat state (and parameters) hand out, whose writeable flag
 * a user may clear at any time without any edit the optimizer could count. */
/* The items of `arrays` (a list or tuple) and their count: 0, or -1 with a TypeError
 * naming `who` (an empty list's items may be NULL: only the return value tells). */
static int sequence_items(PyObject *arrays, const char *who, Py_ssize_t *n, PyObject ***items)
{
    if (!PyList_Check(arrays) && !PyTuple_Check(arrays)) {
        PyErr_Format(PyExc_TypeError, "%s: arrays must be a list or a tuple", who);
        return -1;
    }
    *n = PySequence_Fast_GET_SIZE(arrays);
    *items = PySequence_Fast_ITEMS(arrays);
    return 0;
}

static PyObject *first_read_only(PyObject *self, PyObject *arrays)
{
    Py_ssize_t n;
    PyObject **items;
    if (sequence_items(arrays, "first_read_only", &n, &items)) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        if (!PyArray_Check(o) || !PyArray_ISWRITEABLE((PyArrayObject *)o))
            return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

/* fingerprint(arrays) -> bytes | None
 *
 * arrays: a list or tuple of NumPy arrays. Bytes that describe, for every item, the
 * memory a kernel would touch through it: its data address, dtype (type number, item
 * size, byte order), its WRITEABLE, ALIGNED and C_CONTIGUOUS flags, and its shape and
 * strides. None when an item is not an ndarray. Two calls return equal bytes exactly when
 * every array still has the same memory, layout and flags: the FlatParams fast path
 * (fastoptim/optimizers/_flat_plan.py) compares them on every step, which catches a
 * buffer reallocated in place (ndarray.resize(refcheck=False)), a flag cleared or a shape
 * or strides assigned, none of which any edit counter sees. */
static PyObject *fingerprint(PyObject *self, PyObject *arrays)
{
    Py_ssize_t n;
    PyObject **items;
    if (sequence_items(arrays, "fingerprint", &n, &items)) return NULL;
    Py_ssize_t words = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArray_Check(items[i])) Py_RETURN_NONE;
        words += 4 + 2 * (Py_ssize_t)PyArray_NDIM((PyArrayObject *)items[i]);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, words * (Py_ssize_t)sizeof(int64_t));
    if (out == NULL) return NULL;
    int64_t *w = (int64_t *)PyBytes_AS_STRING(out);
    const int mask = NPY_ARRAY_WRITEABLE | NPY_ARRAY_ALIGNED | NPY_ARRAY_C_CONTIGUOUS;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyArrayObject *a = (PyArrayObject *)items[i];
        PyArray_Descr *d = PyArray_DESCR(a);
        int nd = PyArray_NDIM(a);
        *w++ = (int64_t)(uintptr_t)PyArray_DATA(a);
        *w++ = ((int64_t)d->type_num << 32) | ((int64_t)(unsigned char)d->byteorder << 24)
               | (int64_t)(PyArray_FLAGS(a) & mask);  /* the flags lie in the low 16 bits */
        *w++ = (int64_t)PyArray_ITEMSIZE(a);
        *w++ = (int64_t)nd;
        for (int k = 0; k < nd; k++) *w++ = (int64_t)PyArray_DIMS(a)[k];
        for (int k = 0; k < nd; k++) *w++ = (int64_t)PyArray_STRIDES(a)[k];
    }
    return out;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS,
     "fill(params, grads, state, groups, uses_step, table, steps, step_key, cache) -> "
     "True | False | reason"},
    {"new_cache", new_cache, METH_NOARGS, "A new cache of written spans for fill()."},
    {"first_read_only", first_read_only, METH_O,
     "first_read_only(arrays) -> index of the first item that is not a writeable ndarray, or -1"},
    {"fingerprint", fingerprint, METH_O,
     "fingerprint(arrays) -> bytes describing every array's memory, layout and flags, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fastoptim._multi_table_c",
    "Checks and pointer tables for multi-tensor steps (see fastoptim/backends/_multi_table.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__multi_table_c(void)
{
    import_array();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "NCOL", NCOL) || PyModule_AddIntConstant(m, "MAX_KEYS", MAX_KEYS)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
