/* 2-D heat diffusion in C with MPI, coupled to doreisa through its C API.
 *
 * The same simulation as examples/heat/simulation.py, step for step: each rank owns a block of
 * a size x size grid (MPI_Dims_create splits it, unevenly if needed) with one ghost cell on each
 * side, publishes the interior of its block (no copy: doreisa_publish_strided), exchanges halos,
 * updates. The contract decides which steps are copied; the others cost a function call in C.
 *
 *   make -C examples/heat_c
 *   doreisa run examples/heat/contract.yaml --np 4 --output out/heat_c \
 *       --analytics examples/heat/analytics.py -- examples/heat_c/heat --steps 200
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <doreisa.h>

#define AMBIENT 300.0 /* K, fixed boundary temperature */
#define ALPHA 1.0

typedef struct options {
    int size, steps, source_on, source_off;
    double spot, source_rate;
} options;

/* Start and length of part `index` of n cells cut into `parts` nearly equal parts. */
static void split(int n, int parts, int index, int *start, int *length) {
    int base = n / parts, extra = n % parts;
    *start = index * base + (index < extra ? index : extra);
    *length = base + (index < extra ? 1 : 0);
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){.size = 256, .steps = 200, .spot = 150.0, .source_on = -1, .source_off = -1, .source_rate = 10.0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value) return fprintf(stderr, "heat: %s needs a value\n", arg), 1;
        if (!strcmp(arg, "--size")) o->size = atoi(value);
        else if (!strcmp(arg, "--steps")) o->steps = atoi(value);
        else if (!strcmp(arg, "--spot")) o->spot = atof(value);
        else if (!strcmp(arg, "--source-rate")) o->source_rate = atof(value);
        else if (!strcmp(arg, "--source")) {
            if (sscanf(value, "%d:%d", &o->source_on, &o->source_off) != 2)
                return fprintf(stderr, "heat: --source wants START:STOP, not %s\n", value), 1;
        } else return fprintf(stderr, "heat: unknown option %s\n", arg), 1;
        i++;
    }
    return 0;
}

/* Fill the ghost cells from the neighbours; the outer boundary stays at AMBIENT. */
static void exchange_halos(MPI_Comm cart, double *u, int ny, int nx, double *send, double *recv) {
    int w = nx + 2;
    for (int axis = 0; axis < 2; axis++) {
        int low, high, n = axis == 0 ? nx : ny;
        MPI_Cart_shift(cart, axis, 1, &low, &high);
        /* (index sent, index received, to, from): the last interior line goes up, the first down */
        int moves[2][4] = {{axis == 0 ? ny : nx, 0, high, low}, {1, axis == 0 ? ny + 1 : nx + 1, low, high}};
        for (int m = 0; m < 2; m++) {
            for (int k = 0; k < n; k++)
                send[k] = axis == 0 ? u[moves[m][0] * w + 1 + k] : u[(1 + k) * w + moves[m][0]];
            MPI_Sendrecv(send, n, MPI_DOUBLE, moves[m][2], 0, recv, n, MPI_DOUBLE, moves[m][3], 0, cart,
                         MPI_STATUS_IGNORE);
            if (moves[m][3] == MPI_PROC_NULL) continue;
            for (int k = 0; k < n; k++) {
                if (axis == 0) u[moves[m][1] * w + 1 + k] = recv[k];
                else u[(1 + k) * w + moves[m][1]] = recv[k];
            }
        }
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    options o;
    if (parse(argc, argv, &o)) {
        MPI_Finalize();
        return 2;
    }
    int nranks, rank, dims[2] = {0, 0}, periods[2] = {0, 0}, coords[2];
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Dims_create(nranks, 2, dims);
    MPI_Comm cart;
    MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &cart);
    MPI_Comm_rank(cart, &rank);
    MPI_Cart_coords(cart, rank, 2, coords);
    int y0, ny, x0, nx;
    split(o.size, dims[0], coords[0], &y0, &ny);
    split(o.size, dims[1], coords[1], &x0, &nx);

    int w = nx + 2, longest = nx > ny ? nx : ny;
    double *u = malloc(sizeof(double) * (ny + 2) * w), *lap = malloc(sizeof(double) * ny * nx);
    double *source = malloc(sizeof(double) * ny * nx), *send = malloc(sizeof(double) * longest);
    double *recv = malloc(sizeof(double) * longest);
    double cy = 0.4 * o.size, cx = 0.6 * o.size, width = 0.08 * o.size, sw = 0.04 * o.size;
    for (int i = 0; i < (ny + 2) * w; i++) u[i] = AMBIENT;
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < nx; j++) {
            double y = y0 + i, x = x0 + j;
            u[(i + 1) * w + j + 1] =
                AMBIENT + o.spot * exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (2 * (width * width)));
            double sy = y - 0.7 * o.size, sx = x - 0.3 * o.size;
            source[i * nx + j] = exp(-(sy * sy + sx * sx) / (2 * (sw * sw)));
        }
    double dt = 0.2 / ALPHA, time = 0.0;

    doreisa_bridge *bridge = NULL;
    if (doreisa_create(cart, &bridge) != DOREISA_OK && rank == 0)
        fprintf(stderr, "heat: running without analytics: %s\n", doreisa_last_error());
    const int64_t shape[2] = {ny, nx}, strides[2] = {w, 1}, offset[2] = {y0, x0};
    for (int step = 0; step < o.steps; step++) {
        if (bridge && doreisa_publish_strided(bridge, "temperature", &u[w + 1], DOREISA_FLOAT64, 2, shape, strides,
                                              offset, step, time, NULL) != DOREISA_OK) {
            fprintf(stderr, "heat: rank %d: %s\n", rank, doreisa_last_error());
            MPI_Abort(cart, 1);
        }
        exchange_halos(cart, u, ny, nx, send, recv);
        for (int i = 1; i <= ny; i++)
            for (int j = 1; j <= nx; j++) {
                double *c = &u[i * w + j];
                lap[(i - 1) * nx + j - 1] = c[-w] + c[w] + c[-1] + c[1] - 4 * c[0];
            }
        double k = ALPHA * dt, heat = dt * o.source_rate;
        int on = o.source_on <= step && step < o.source_off;
        for (int i = 0; i < ny; i++)
            for (int j = 0; j < nx; j++) {
                u[(i + 1) * w + j + 1] += k * lap[i * nx + j];
                if (on) u[(i + 1) * w + j + 1] += heat * source[i * nx + j];
            }
        time += dt;
    }
    doreisa_counts counts = {0};
    if (bridge && doreisa_close(bridge, &counts) != DOREISA_OK)
        fprintf(stderr, "heat: rank %d: close: %s\n", rank, doreisa_last_error());
    if (rank == 0)
        printf("simulation done: %d steps; rank 0 copied %lld blocks\n", o.steps, (long long)counts.published);
    free(u), free(lap), free(source), free(send), free(recv);
    MPI_Comm_free(&cart);
    MPI_Finalize();
    return 0;
}
