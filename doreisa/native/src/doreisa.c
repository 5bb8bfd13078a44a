/* libdoreisa: the C API of doreisa.h over the Python bridge, in an embedded CPython.
 *
 * Why embed rather than reimplement: the rank side's checks, layout agreement, steering and
 * shared-memory protocol stay one implementation, tested once; the C library only turns the
 * caller's buffer into a zero-copy numpy view. What must stay cheap stays in C: an unwanted
 * step of a fixed cadence returns here, from the same two numbers (last step, next wanted
 * step) the Python fast path uses, refreshed after every call that enters Python.
 *
 * Built by `doreisa native build` with the MPI compiler wrapper (mpicc) and the flags of the
 * Python doreisa is installed in; DOREISA_DEFAULT_PYTHON is that interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doreisa.h"

#ifndef DOREISA_DEFAULT_PYTHON
#define DOREISA_DEFAULT_PYTHON ""
#endif

#define MAX_NDIM 32

static _Thread_local char last_error[2048];
static PyObject *glue; /* doreisa.runtime.rank.native, imported once */

static const int itemsize[] = {0, 8, 4, 8, 4, 2, 1, 8, 4, 2, 1};

/* Per array: the Python fast path's numbers. Steps in (last_step, skip_below) are unwanted. */
typedef struct fast_path {
    char *name;
    int64_t last_step;
    int64_t skip_below;
} fast_path;

struct doreisa_bridge {
    PyObject *obj; /* a doreisa.runtime.rank.native.NativeBridge */
    fast_path *arrays;
    int n_arrays;
    int64_t calls_here; /* publish calls answered in C (fast path, bad arguments), not yet counted in Python */
};

static int fail(int code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return code;
}

const char *doreisa_last_error(void) { return last_error; }

/* The pending Python exception as a doreisa code and message (GIL held); clears it. */
static int fail_python(const char *doing) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    int code = DOREISA_ERR_PYTHON;
    PyObject *described = glue && value ? PyObject_CallMethod(glue, "describe", "O", value) : NULL;
    const char *message = NULL;
    if (described && PyArg_ParseTuple(described, "is", &code, &message)) {
        fail(code, "%s", message);
    } else {
        PyErr_Clear();
        PyObject *text = value ? PyObject_Str(value) : NULL;
        const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
        fail(code, "%s: %s", doing, msg ? msg : "unknown Python error");
        Py_XDECREF(text);
        PyErr_Clear();
    }
    Py_XDECREF(described);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return code;
}

/* Start the interpreter doreisa is installed in (once), import the glue module. */
static int start_python(void) {
    if (glue) return DOREISA_OK;
    int started_here = 0;
    if (!Py_IsInitialized()) {
        PyConfig config;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0; /* the simulation owns its signals */
        config.parse_argv = 0;
        const char *python = getenv("DOREISA_PYTHON");
        if (!python || !*python) python = DOREISA_DEFAULT_PYTHON;
        PyStatus status = PyStatus_Ok();
        if (*python) status = PyConfig_SetBytesString(&config, &config.program_name, python);
        if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(status))
            return fail(DOREISA_ERR_PYTHON, "cannot start Python (%s): %s", python,
                        status.err_msg ? status.err_msg : "unknown error");
        started_here = 1;
    }
    PyGILState_STATE gil = started_here ? PyGILState_UNLOCKED : PyGILState_Ensure();
    int rc = DOREISA_OK;
    glue = PyImport_ImportModule("doreisa.runtime.rank.native");
    if (!glue)
        rc = fail_python("cannot import doreisa in the embedded Python (set DOREISA_PYTHON to the "
                         "python that has doreisa installed)");
    if (started_here)
        PyEval_SaveThread(); /* every call takes the GIL through PyGILState_Ensure */
    else
        PyGILState_Release(gil);
    return rc;
}

static int create(MPI_Fint comm, doreisa_bridge **bridge) {
    if (!bridge) return fail(DOREISA_ERR_ARGUMENT, "doreisa_create: bridge is NULL");
    *bridge = NULL;
    int rc = start_python();
    if (rc) return rc;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *obj = PyObject_CallMethod(glue, "NativeBridge", "i", (int)comm);
    if (!obj) {
        rc = fail_python("doreisa_create");
    } else if (!(*bridge = calloc(1, sizeof **bridge))) {
        Py_DECREF(obj);
        rc = fail(DOREISA_ERR_ARGUMENT, "doreisa_create: out of memory");
    } else {
        (*bridge)->obj = obj;
    }
    PyGILState_Release(gil);
    return rc;
}

int doreisa_create(MPI_Comm comm, doreisa_bridge **bridge) { return create(MPI_Comm_c2f(comm), bridge); }

int doreisa_create_f(MPI_Fint comm, doreisa_bridge **bridge) { return create(comm, bridge); }

static fast_path *find(doreisa_bridge *bridge, const char *name) {
    for (int i = 0; i < bridge->n_arrays; i++)
        if (strcmp(bridge->arrays[i].name, name) == 0) return &bridge->arrays[i];
    return NULL;
}

/* Remember what Python says about `name`'s fast path: (last step, first step it may want). */
static void learn(doreisa_bridge *bridge, const char *name, int64_t last_step, int64_t skip_below) {
    fast_path *path = find(bridge, name);
    if (!path) {
        fast_path *grown = realloc(bridge->arrays, (bridge->n_arrays + 1) * sizeof *grown);
        char *copy = strdup(name);
        if (!grown || !copy) { /* no fast path for this array: every call goes to Python */
            free(copy);
            if (grown) bridge->arrays = grown;
            return;
        }
        bridge->arrays = grown;
        path = &bridge->arrays[bridge->n_arrays++];
        path->name = copy;
    }
    path->last_step = last_step;
    path->skip_below = skip_below;
}

static int checked(doreisa_bridge *bridge, const char *name, const char *what) {
    if (!bridge) return fail(DOREISA_ERR_ARGUMENT, "%s: bridge is NULL", what);
    if (!bridge->obj) return fail(DOREISA_ERR_BRIDGE, "%s: the bridge is closed", what);
    if (!name) return fail(DOREISA_ERR_ARGUMENT, "%s: name is NULL", what);
    return DOREISA_OK;
}

/* The block as (shape tuple, offset tuple or None), after checking what C can get wrong. */
static int block_args(const char *name, const void *data, doreisa_dtype dtype, int ndim, const int64_t *shape,
                      const int64_t *strides, Py_ssize_t *nbytes) {
    if ((int)dtype < 1 || (int)dtype > 10)
        return fail(DOREISA_ERR_ARGUMENT,
                    "doreisa_publish(%s): unknown dtype code %d; use DOREISA_FLOAT64 (1) ... DOREISA_UINT8 (10)",
                    name, (int)dtype);
    if (ndim < 1 || ndim > MAX_NDIM || !shape)
        return fail(DOREISA_ERR_ARGUMENT, "doreisa_publish(%s): ndim is %d and shape %s; need 1 <= ndim <= %d and a shape",
                    name, ndim, shape ? "given" : "NULL", MAX_NDIM);
    int64_t elements = 1, span = 1; /* span: elements from the first to the last one, both included */
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return fail(DOREISA_ERR_ARGUMENT, "doreisa_publish(%s): shape[%d] is %lld; extents are >= 0", name, i,
                        (long long)shape[i]);
        if (strides && strides[i] < 0)
            return fail(DOREISA_ERR_ARGUMENT, "doreisa_publish(%s): strides[%d] is %lld; strides are >= 0", name, i,
                        (long long)strides[i]);
        elements *= shape[i];
        if (strides && shape[i] > 0) span += (shape[i] - 1) * strides[i];
    }
    *nbytes = (Py_ssize_t)(elements == 0 ? 0 : strides ? span : elements) * itemsize[dtype];
    if (!data && *nbytes) return fail(DOREISA_ERR_ARGUMENT, "doreisa_publish(%s): data is NULL", name);
    return DOREISA_OK;
}

static PyObject *tuple_of(int ndim, const int64_t *values) {
    if (!values) Py_RETURN_NONE;
    PyObject *tuple = PyTuple_New(ndim);
    for (int i = 0; tuple && i < ndim; i++) {
        PyObject *item = PyLong_FromLongLong(values[i]);
        if (!item) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

static PyObject *time_of(double time) {
    if (isnan(time)) Py_RETURN_NONE;
    return PyFloat_FromDouble(time);
}

int doreisa_publish(doreisa_bridge *bridge, const char *name, const void *data, doreisa_dtype dtype, int ndim,
                    const int64_t *shape, const int64_t *offset, int64_t step, double time, int *copied) {
    return doreisa_publish_strided(bridge, name, data, dtype, ndim, shape, NULL, offset, step, time, copied);
}

int doreisa_publish_strided(doreisa_bridge *bridge, const char *name, const void *data, doreisa_dtype dtype, int ndim,
                            const int64_t *shape, const int64_t *strides, const int64_t *offset, int64_t step,
                            double time, int *copied) {
    if (copied) *copied = 0;
    int rc = checked(bridge, name, "doreisa_publish");
    if (rc) return rc;
    fast_path *path = find(bridge, name);
    if (path && path->last_step < step && step < path->skip_below) { /* a step nothing can make wanted */
        path->last_step = step;
        bridge->calls_here++;
        return DOREISA_OK;
    }
    Py_ssize_t nbytes = 0;
    if ((rc = block_args(name, data, dtype, ndim, shape, strides, &nbytes))) {
        bridge->calls_here++; /* a call all the same, as in Python */
        return rc;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *view = PyMemoryView_FromMemory((char *)(data ? data : ""), nbytes, PyBUF_READ);
    PyObject *dims = tuple_of(ndim, shape), *steps = tuple_of(ndim, strides), *starts = tuple_of(ndim, offset);
    PyObject *when = time_of(time);
    int64_t calls_here = bridge->calls_here;
    bridge->calls_here = 0; /* handed over, even if publish raises */
    PyObject *result = view && dims && steps && starts && when
                           ? PyObject_CallMethod(bridge->obj, "publish", "sOiOOOLOLL", name, view, (int)dtype, dims,
                                                 steps, starts, (long long)step, when,
                                                 (long long)(path ? path->last_step : -1), (long long)calls_here)
                           : NULL;
    int was_copied = 0;
    long long last_step, skip_below;
    if (result && PyArg_ParseTuple(result, "pLL", &was_copied, &last_step, &skip_below)) {
        learn(bridge, name, last_step, skip_below);
        if (copied) *copied = was_copied;
    } else {
        rc = fail_python("doreisa_publish");
        if ((path = find(bridge, name))) path->skip_below = INT64_MIN; /* unsure now: ask Python until it answers */
    }
    Py_XDECREF(result);
    Py_XDECREF(view);
    Py_XDECREF(dims);
    Py_XDECREF(steps);
    Py_XDECREF(starts);
    Py_XDECREF(when);
    PyGILState_Release(gil);
    return rc;
}

int doreisa_wants(doreisa_bridge *bridge, const char *name, int64_t step, double time, int *wanted) {
    int rc = checked(bridge, name, "doreisa_wants");
    if (rc) return rc;
    if (!wanted) return fail(DOREISA_ERR_ARGUMENT, "doreisa_wants(%s): wanted is NULL", name);
    *wanted = 0;
    fast_path *path = find(bridge, name);
    if (path && path->last_step < step && step < path->skip_below) return DOREISA_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *when = time_of(time);
    PyObject *result = when ? PyObject_CallMethod(bridge->obj, "wants", "sLO", name, (long long)step, when) : NULL;
    if (result)
        *wanted = PyObject_IsTrue(result) == 1;
    else
        rc = fail_python("doreisa_wants");
    Py_XDECREF(result);
    Py_XDECREF(when);
    PyGILState_Release(gil);
    return rc;
}

int doreisa_feedback(doreisa_bridge *bridge, const char *key, double *value, int *found) {
    int rc = checked(bridge, key, "doreisa_feedback");
    if (rc) return rc;
    if (!value || !found) return fail(DOREISA_ERR_ARGUMENT, "doreisa_feedback(%s): value or found is NULL", key);
    *found = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallMethod(bridge->obj, "feedback", "s", key);
    int has = 0;
    double number = 0;
    if (result && PyArg_ParseTuple(result, "pd", &has, &number)) {
        *found = has;
        if (has) *value = number;
    } else {
        rc = fail_python("doreisa_feedback");
    }
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return rc;
}

int doreisa_close(doreisa_bridge *bridge, doreisa_counts *counts) {
    if (!bridge) return fail(DOREISA_ERR_ARGUMENT, "doreisa_close: bridge is NULL");
    int rc = DOREISA_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallMethod(bridge->obj, "close", "L", (long long)bridge->calls_here);
    long long got[6];
    if (result && PyArg_ParseTuple(result, "LLLLLL", &got[0], &got[1], &got[2], &got[3], &got[4], &got[5])) {
        if (counts) *counts = (doreisa_counts){got[0], got[1], got[2], got[3], got[4], got[5]};
    } else {
        rc = fail_python("doreisa_close");
    }
    Py_XDECREF(result);
    Py_CLEAR(bridge->obj);
    PyGILState_Release(gil);
    for (int i = 0; i < bridge->n_arrays; i++) free(bridge->arrays[i].name);
    free(bridge->arrays);
    free(bridge);
    return rc;
}
