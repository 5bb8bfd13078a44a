/* Bad input from C: one line per case, "CASE CODE MESSAGE", then the counts. Run on 1 rank with
 * test_c_api.py's contract (array field: float64 [4, 6], cadence every 5). */
#include <stdio.h>
#include <stdlib.h>

#include <doreisa.h>

static int show(const char *name, int rc, int copied) {
    printf("%s %d %d %s\n", name, rc, copied, rc ? doreisa_last_error() : "");
    return rc;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    doreisa_bridge *b = NULL;
    if (show("create", doreisa_create(MPI_COMM_WORLD, &b), 0)) {
        MPI_Finalize();
        return 0;
    }
    double block[24];
    float single[24] = {0};
    const int64_t shape[2] = {4, 6}, other_shape[2] = {3, 6}, offset[2] = {0, 0}, moved[2] = {1, 0};
    const int64_t backwards[2] = {-6, 1};
    int copied = 0, rc;
#define CASE(name, call, out) \
    do {                         \
        rc = (call);             \
        show(name, rc, out);     \
    } while (0)
#define PUBLISH(data, dtype, ndim, shp, off, step) \
    doreisa_publish(b, "field", data, dtype, ndim, shp, off, step, DOREISA_NO_TIME, &copied)
    for (int i = 0; i < 24; i++) block[i] = i;
    CASE("first", PUBLISH(block, DOREISA_FLOAT64, 2, shape, offset, 0), copied);
    CASE("unknown_dtype", PUBLISH(block, (doreisa_dtype)99, 2, shape, offset, 5), copied);
    CASE("wrong_dtype", PUBLISH(single, DOREISA_FLOAT32, 2, shape, offset, 5), copied);
    CASE("wrong_shape", PUBLISH(block, DOREISA_FLOAT64, 2, other_shape, offset, 10), copied);
    CASE("unknown_array", doreisa_publish(b, "nope", block, DOREISA_FLOAT64, 2, shape, offset, 15, 0.0, &copied),
         copied);
    CASE("null_data", PUBLISH(NULL, DOREISA_FLOAT64, 2, shape, offset, 15), copied);
    CASE("ndim", PUBLISH(block, DOREISA_FLOAT64, 0, shape, offset, 15), copied);
    CASE("negative_stride", doreisa_publish_strided(b, "field", block, DOREISA_FLOAT64, 2, shape, backwards, offset, 15,
                                                    DOREISA_NO_TIME, &copied),
         copied);
    CASE("moved_offset", PUBLISH(block, DOREISA_FLOAT64, 2, shape, moved, 15), copied);
    int published = 0;
    for (int step = 20; step <= 40; step++) {
        for (int i = 0; i < 24; i++) block[i] = 100.0 * step + i;
        CASE("step", PUBLISH(block, DOREISA_FLOAT64, 2, shape, offset, step), copied);
        if (rc) break;
        published += copied;
    }
    printf("published %d\n", published);
    CASE("step_order", PUBLISH(block, DOREISA_FLOAT64, 2, shape, offset, 38), copied);
    CASE("same_step", PUBLISH(block, DOREISA_FLOAT64, 2, shape, offset, 40), copied);
    int wanted45 = -1, wanted46 = -1, found = -1;
    double value = -1;
    CASE("wants45", doreisa_wants(b, "field", 45, DOREISA_NO_TIME, &wanted45), wanted45);
    CASE("wants46", doreisa_wants(b, "field", 46, DOREISA_NO_TIME, &wanted46), wanted46);
    CASE("feedback", doreisa_feedback(b, "dt", &value, &found), found);
    CASE("null_bridge",
         doreisa_publish(NULL, "field", block, DOREISA_FLOAT64, 2, shape, offset, 50, DOREISA_NO_TIME, &copied),
         copied);
    doreisa_counts c;
    CASE("close", doreisa_close(b, &c), 0);
    printf("counts %lld %lld %lld %lld %lld %lld\n", (long long)c.calls, (long long)c.published,
           (long long)c.bytes_copied, (long long)c.skipped, (long long)c.dropped, (long long)c.not_selected);
    MPI_Finalize();
    return 0;
}
