// doreisa.hpp: C++17 convenience over doreisa.h, header only.
//
//   doreisa::bridge bridge(cart);                                  // RAII: closed by the destructor
//   doreisa::view<double, 2> interior{&u[w + 1], {ny, nx}, {y0, x0}, {w, 1}};
//   for (int step = 0; step < steps; ++step) bridge.publish("temperature", interior, step, time);
//   doreisa_counts counts = bridge.close();
//
// Errors throw doreisa::error (code() is the doreisa.h status). Define DOREISA_NO_EXCEPTIONS
// before including this header to get the status back instead (bool results become false and
// last_error() says why); nothing here ever aborts the simulation.
#ifndef DOREISA_HPP
#define DOREISA_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "doreisa.h"

namespace doreisa {

// The doreisa_dtype of a C++ element type; a compile error for any other type.
template <class T>
constexpr doreisa_dtype dtype_of() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, double>) return DOREISA_FLOAT64;
    else if constexpr (std::is_same_v<U, float>) return DOREISA_FLOAT32;
    else if constexpr (std::is_same_v<U, std::int64_t>) return DOREISA_INT64;
    else if constexpr (std::is_same_v<U, std::int32_t>) return DOREISA_INT32;
    else if constexpr (std::is_same_v<U, std::int16_t>) return DOREISA_INT16;
    else if constexpr (std::is_same_v<U, std::int8_t>) return DOREISA_INT8;
    else if constexpr (std::is_same_v<U, std::uint64_t>) return DOREISA_UINT64;
    else if constexpr (std::is_same_v<U, std::uint32_t>) return DOREISA_UINT32;
    else if constexpr (std::is_same_v<U, std::uint16_t>) return DOREISA_UINT16;
    else {
        static_assert(std::is_same_v<U, std::uint8_t>, "doreisa publishes arithmetic types of 1, 2, 4 or 8 bytes");
        return DOREISA_UINT8;
    }
}

// A block of an N-dimensional array in the caller's memory, like std::mdspan with a layout_stride:
// shape and strides in elements (C order, slowest dimension first), the global index of its first
// element. Strides all zero (the default) mean contiguous.
template <class T, std::size_t N>
struct view {
    const T *data;
    std::array<std::int64_t, N> shape;
    std::array<std::int64_t, N> offset;
    std::array<std::int64_t, N> strides{};

    bool contiguous() const {
        for (auto s : strides)
            if (s != 0) return false;
        return true;
    }
};

class error : public std::runtime_error {
  public:
    error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

  private:
    int code_;
};

inline std::string last_error() { return doreisa_last_error(); }

class bridge {
  public:
    // Collective over comm, like the Python Bridge.
    explicit bridge(MPI_Comm comm = MPI_COMM_WORLD) { status_ = check(doreisa_create(comm, &handle_)); }
    ~bridge() {
        if (handle_) doreisa_close(handle_, nullptr);
    }
    bridge(const bridge &) = delete;
    bridge &operator=(const bridge &) = delete;
    bridge(bridge &&other) noexcept : handle_(other.handle_), status_(other.status_) { other.handle_ = nullptr; }
    bridge &operator=(bridge &&other) noexcept {
        if (this != &other) {
            if (handle_) doreisa_close(handle_, nullptr);
            handle_ = other.handle_;
            status_ = other.status_;
            other.handle_ = nullptr;
        }
        return *this;
    }

    // False if created without a runtime (only with DOREISA_NO_EXCEPTIONS: else the constructor threw).
    explicit operator bool() const noexcept { return handle_ != nullptr; }
    int status() const noexcept { return status_; }

    // True if data was copied for the analytics (see doreisa_publish).
    template <class T, std::size_t N>
    bool publish(const char *name, const view<T, N> &block, std::int64_t step, double time = DOREISA_NO_TIME) {
        int copied = 0;
        status_ = check(doreisa_publish_strided(handle_, name, block.data, dtype_of<T>(), static_cast<int>(N),
                                                block.shape.data(), block.contiguous() ? nullptr : block.strides.data(),
                                                block.offset.data(), step, time, &copied));
        return copied != 0;
    }

    bool wants(const char *name, std::int64_t step, double time = DOREISA_NO_TIME) {
        int wanted = 0;
        status_ = check(doreisa_wants(handle_, name, step, time, &wanted));
        return wanted != 0;
    }

    // A steering value sent by the analytics, if any was.
    std::optional<double> feedback(const char *key) {
        double value = 0;
        int found = 0;
        status_ = check(doreisa_feedback(handle_, key, &value, &found));
        return found ? std::optional<double>(value) : std::nullopt;
    }

    // Hand over what is in flight, disconnect; this rank's counts. The destructor does it otherwise.
    doreisa_counts close() {
        doreisa_counts counts{};
        doreisa_bridge *handle = handle_;
        handle_ = nullptr;
        status_ = check(doreisa_close(handle, &counts));
        return counts;
    }

  private:
    static int check(int status) {
#ifndef DOREISA_NO_EXCEPTIONS
        if (status != DOREISA_OK) throw error(status, doreisa_last_error());
#endif
        return status;
    }

    doreisa_bridge *handle_ = nullptr;
    int status_ = DOREISA_OK;
};

}  // namespace doreisa

#endif  // DOREISA_HPP
