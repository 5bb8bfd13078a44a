// The C++ wrapper on a 2-D decomposition: each rank publishes the interior of a ghosted block
// (a strided view, no copy) of field [8, 12], values 1000 * step + global flat index; then
// a step out of order must throw doreisa::error with the bridge's message and code.
#include <cstdio>
#include <vector>

#include <doreisa.hpp>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int rows = 8, cols = 12, ny = rows / size, w = cols + 2;  // ranks split the rows
    std::vector<double> u((ny + 2) * w, -1.0);
    int copied = 0;
    {
        doreisa::bridge bridge(MPI_COMM_WORLD);
        doreisa::view<double, 2> interior{&u[w + 1], {ny, cols}, {rank * ny, 0}, {w, 1}};
        for (int step = 0; step < 10; ++step) {
            for (int i = 0; i < ny; ++i)
                for (int j = 0; j < cols; ++j) u[(i + 1) * w + j + 1] = 1000.0 * step + (rank * ny + i) * cols + j;
            copied += bridge.publish("field", interior, step);
        }
        std::printf("rank %d wants(10)=%d wants(12)=%d feedback=%d\n", rank, bridge.wants("field", 10),
                    bridge.wants("field", 12), bridge.feedback("dt").has_value());
        try {
            bridge.publish("field", interior, 5);
            std::printf("rank %d: no error\n", rank);
        } catch (const doreisa::error &e) {
            std::printf("rank %d error %d: %s\n", rank, e.code(), e.what());
        }
        doreisa_counts counts = bridge.close();
        std::printf("rank %d copied %d calls %lld published %lld\n", rank, copied, (long long)counts.calls,
                    (long long)counts.published);
    }  // a closed bridge's destructor does nothing
    MPI_Finalize();
    return 0;
}
