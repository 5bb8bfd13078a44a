/* The C API's publish costs (issue #19): one rank under a live Session, see scenarios.native_publish.
 *
 *   skip:  publish of an unwanted step of a fixed cadence (answered in C): single timed calls
 *          (median, minus the timer's own cost) and batches of 1000
 *   copy:  publish of a wanted block vs memcpy into a preallocated buffer, per block size,
 *          interleaved (memcpy, publish) so both see the same cache state; medians
 *
 * Writes OUTDIR/rank0.json. Arrays of the contract: skip [16, 16] (every 10^9), b64k [64, 128]
 * and b1m [512, 256] (every step).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <doreisa.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, by_value);
    return v[n / 2];
}

static void check(int rc, const char *what) {
    if (rc != DOREISA_OK) {
        fprintf(stderr, "native_bench: %s: %s\n", what, doreisa_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int calls = 100000, reps = 100;
    const char *outdir = ".";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--calls")) calls = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--outdir")) outdir = argv[i + 1];
    }
    doreisa_bridge *b;
    check(doreisa_create(MPI_COMM_WORLD, &b), "create");

    static double small[16 * 16];
    const int64_t small_shape[2] = {16, 16}, origin[2] = {0, 0};
    check(doreisa_publish(b, "skip", small, DOREISA_FLOAT64, 2, small_shape, origin, 0, DOREISA_NO_TIME, NULL),
          "first");
    int n = calls < 1000 ? 1000 : calls;
    double *single = malloc(sizeof(double) * n), *timer = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        double t0 = now_ns();
        doreisa_publish(b, "skip", small, DOREISA_FLOAT64, 2, small_shape, origin, i + 1, DOREISA_NO_TIME, NULL);
        double t1 = now_ns(), t2 = now_ns();
        single[i] = t1 - t0;
        timer[i] = t2 - t1;
    }
    int batches = n / 1000;
    double *batch = malloc(sizeof(double) * batches);
    int64_t step = n + 1;
    for (int k = 0; k < batches; k++) {
        double t0 = now_ns();
        for (int i = 0; i < 1000; i++)
            doreisa_publish(b, "skip", small, DOREISA_FLOAT64, 2, small_shape, origin, step++, DOREISA_NO_TIME, NULL);
        batch[k] = (now_ns() - t0) / 1000;
    }

    const char *names[2] = {"b64k", "b1m"};
    const int64_t shapes[2][2] = {{64, 128}, {512, 256}};
    FILE *out;
    char path[4096];
    snprintf(path, sizeof path, "%s/rank0.json", outdir);
    if (!(out = fopen(path, "w"))) return perror(path), 1;
    fprintf(out, "{\"calls\": %d, \"skip_ns_median\": %.1f, \"timer_ns_median\": %.1f, \"batch_ns_median\": %.2f",
            n, median(single, n), median(timer, n), median(batch, batches));
    for (int s = 0; s < 2; s++) {
        size_t count = shapes[s][0] * shapes[s][1], nbytes = count * sizeof(double);
        double *block = malloc(nbytes), *dest = malloc(nbytes);
        double *pub = malloc(sizeof(double) * reps), *cpy = malloc(sizeof(double) * reps);
        for (size_t i = 0; i < count; i++) block[i] = (double)i, dest[i] = 0;
        for (int r = 0; r < reps; r++) {
            block[r % count] += 1; /* the simulation wrote its block */
            double t0 = now_ns();
            memcpy(dest, block, nbytes);
            double t1 = now_ns();
            check(doreisa_publish(b, names[s], block, DOREISA_FLOAT64, 2, shapes[s], origin, r, DOREISA_NO_TIME, NULL),
                  names[s]);
            pub[r] = now_ns() - t1;
            cpy[r] = t1 - t0;
        }
        fprintf(out, ", \"%s\": {\"nbytes\": %zu, \"publish_ns_median\": %.1f, \"memcpy_ns_median\": %.1f}", names[s],
                nbytes, median(pub, reps), median(cpy, reps));
        free(block), free(dest), free(pub), free(cpy);
    }
    fprintf(out, "}\n");
    fclose(out);
    check(doreisa_close(b, NULL), "close");
    free(single), free(timer), free(batch);
    MPI_Finalize();
    return 0;
}
