#pragma once
// The host backend matrix: every algorithm test body runs once per policy (TEST_CASE_TEMPLATE), and
// results are compared bitwise with exec::seq.

#include <cstring>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/core/exec.hpp>

namespace posttrain::test {

struct seq_backend {
    static constexpr const char* name = "seq";
    static constexpr auto policy() { return posttrain::exec::seq; }
};
// Four threads whatever the machine, so that work is really split.
struct par_backend {
    static constexpr const char* name = "par";
    static constexpr auto policy() { return posttrain::exec::par.with_threads(4); }
};

#define POSTTRAIN_HOST_BACKENDS posttrain::test::seq_backend, posttrain::test::par_backend

// Bitwise equality of two floating-point buffers (NaN payloads included).
template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace posttrain::test
