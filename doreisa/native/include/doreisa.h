/* doreisa.h: the C API of the doreisa bridge, for C, C++ and Fortran simulations.
 *
 * Same meaning as the Python `doreisa.Bridge`: one bridge per MPI rank, created collectively
 * on the simulation's communicator; publish(name, block, step) hands a block to the
 * analytics when the contract wants that step, and costs a function call when it does not.
 * Every function returns DOREISA_OK (0) or a negative error code; the message is
 * doreisa_last_error(). Nothing here aborts or exits the simulation.
 *
 * Build flags: `doreisa native --cflags --libs` (see docs/native.md).
 */
#ifndef DOREISA_H
#define DOREISA_H

#include <math.h>
#include <stdint.h>

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif


/* Return codes: 0 is success, every error is negative. */
enum doreisa_status {
    DOREISA_OK = 0,
    DOREISA_ERR_ARGUMENT = -1,    /* bad argument from C: NULL pointer, unknown dtype code, ndim */
    DOREISA_ERR_MISMATCH = -2,    /* block does not match the contract: array, dtype, shape, offset, step */
    DOREISA_ERR_LAYOUT = -3,      /* the ranks' blocks do not tile the array (first publish) */
    DOREISA_ERR_UNAVAILABLE = -4, /* no doreisa runtime: not started by `doreisa run`, or unreachable */
    DOREISA_ERR_BRIDGE = -5,      /* any other doreisa error (publish after close, ...) */
    DOREISA_ERR_PYTHON = -6       /* the embedded Python could not start or import doreisa */
};

/* Element types, as numpy names them. */
typedef enum doreisa_dtype {
    DOREISA_FLOAT64 = 1,
    DOREISA_FLOAT32 = 2,
    DOREISA_INT64 = 3,
    DOREISA_INT32 = 4,
    DOREISA_INT16 = 5,
    DOREISA_INT8 = 6,
    DOREISA_UINT64 = 7,
    DOREISA_UINT32 = 8,
    DOREISA_UINT16 = 9,
    DOREISA_UINT8 = 10
} doreisa_dtype;

/* publish() and wants() take a simulation time; DOREISA_NO_TIME (a NaN) means none. */
#define DOREISA_NO_TIME (NAN)

/* What one rank did (doreisa_close), as the Python bridge counts it. */
typedef struct doreisa_counts {
    int64_t calls;        /* publish calls */
    int64_t published;    /* blocks copied for the analytics */
    int64_t bytes_copied;
    int64_t skipped;      /* wanted steps skipped by backpressure (policy: skip) */
    int64_t dropped;      /* wanted steps lost: runtime gone or blocked past timeouts.block */
    int64_t not_selected; /* wanted steps where this rank's block is outside the selected region */
} doreisa_counts;

typedef struct doreisa_bridge doreisa_bridge;

/* Create this rank's bridge; collective over comm. Starts the embedded Python the first time
 * (the interpreter doreisa was installed in, or $DOREISA_PYTHON). */
int doreisa_create(MPI_Comm comm, doreisa_bridge **bridge);
/* The same with a Fortran communicator handle (what Fortran's MPI_COMM_WORLD is). */
int doreisa_create_f(MPI_Fint comm, doreisa_bridge **bridge);

/* Hand this rank's block of array `name` at `step` to the analytics, if the contract wants it.
 *   data:    the block, C order (row-major), contiguous; copied, never kept
 *   shape:   ndim extents; offset: ndim global indices of the block's first element, or NULL
 *            for the contract's uniform `block` layout
 *   time:    simulation time, or DOREISA_NO_TIME
 *   copied:  if not NULL, set to 1 when data was copied, else 0 (unwanted, not selected,
 *            skipped or dropped: counted)
 * Steps increase per array. An unwanted step of a fixed cadence returns without entering Python. */
int doreisa_publish(doreisa_bridge *bridge, const char *name, const void *data, doreisa_dtype dtype, int ndim,
                    const int64_t *shape, const int64_t *offset, int64_t step, double time, int *copied);

/* The same for a block that is not contiguous (the interior of an array with ghost cells, a
 * Fortran section): strides[i] elements (not bytes, all >= 0) between neighbours along dim i;
 * NULL strides is doreisa_publish. No intermediate copy either way. */
int doreisa_publish_strided(doreisa_bridge *bridge, const char *name, const void *data, doreisa_dtype dtype, int ndim,
                            const int64_t *shape, const int64_t *strides, const int64_t *offset, int64_t step,
                            double time, int *copied);

/* Would publish(name, ..., step) copy anything? Lets a simulation skip computing a field. */
int doreisa_wants(doreisa_bridge *bridge, const char *name, int64_t step, double time, int *wanted);

/* A steering value sent by the analytics (every rank sees the same at the same step).
 * *found is 0 and *value untouched when the key was never sent; a value that is not a number
 * is DOREISA_ERR_MISMATCH. */
int doreisa_feedback(doreisa_bridge *bridge, const char *key, double *value, int *found);

/* Wait until every published block is handed over, disconnect, fill *counts (may be NULL) and
 * free the bridge (also on error). Call it before MPI_Finalize. */
int doreisa_close(doreisa_bridge *bridge, doreisa_counts *counts);

/* The message of the last error of this thread ("" if none). */
const char *doreisa_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DOREISA_H */
