#pragma once
// A minimal self-contained test harness for the CUDA tests. The GPU machines these run on may lack
// doctest (and network to install it), so the CUDA tests depend on nothing but the CUDA toolkit:
//
//     PT_TEST("grpo uniform float") { PT_CHECK(x == y); PT_CHECK_THROWS(f(), posttrain::invalid_argument); }
//
// The binary exits 0 when every test passed, 1 on any failure, and 77 (ctest SKIP_RETURN_CODE)
// when no CUDA device is present.
//
//     posttrain_cuda_tests [PATTERN...]
// runs the tests whose name contains one of the PATTERNs (all tests when none is given); a PATTERN
// written -TEXT excludes the tests whose name contains TEXT. POSTTRAIN_TEST_QUICK=1 (or QUICK=1) in
// the environment asks the tests that read quick() for small sizes only (compute-sanitizer runs).

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace posttrain::test {

struct test_case {
    const char* name;
    void (*body)();
};

inline std::vector<test_case>& registry() {
    static std::vector<test_case> r;
    return r;
}

struct test_state {
    long checks = 0;
    long failures = 0;
    bool current_failed = false;
};

inline test_state& state() {
    static test_state s;
    return s;
}

struct registrar {
    registrar(const char* name, void (*body)()) { registry().push_back({name, body}); }
};

inline void report_failure(const char* file, int line, const std::string& what) {
    auto& s = state();
    ++s.failures;
    s.current_failed = true;
    if (s.failures <= 50) std::printf("  FAILED %s:%d: %s\n", file, line, what.c_str());
}

// True when the environment asks for small sizes (POSTTRAIN_TEST_QUICK or QUICK set and not "0"):
// the sanitizers run the binary 10-100x slower.
inline bool quick() {
    for (const char* name : {"POSTTRAIN_TEST_QUICK", "QUICK"}) {
        const char* v = std::getenv(name);
        if (v != nullptr && *v != 0 && std::strcmp(v, "0") != 0) return true;
    }
    return false;
}

// Whether the command line's patterns select this test (see the file comment).
inline bool selected(const char* name, int argc, char** argv) {
    bool any_include = false, included = false;
    for (int k = 1; k < argc; ++k) {
        const char* p = argv[k];
        if (p[0] == '-' && p[1] != 0) {
            if (std::strstr(name, p + 1) != nullptr) return false;
        } else {
            any_include = true;
            included = included || std::strstr(name, p) != nullptr;
        }
    }
    return !any_include || included;
}

inline int run_all(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("posttrain CUDA tests: no CUDA device present, skipped\n");
        return 77;
    }
    int passed = 0, failed = 0;
    for (const auto& t : registry()) {
        if (!selected(t.name, argc, argv)) continue;
        state().current_failed = false;
        const auto t0 = std::chrono::steady_clock::now();
        try {
            t.body();
        } catch (const std::exception& e) {
            report_failure(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
        }
        const cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) report_failure(__FILE__, __LINE__, std::string("CUDA error after test: ") + cudaGetErrorString(e));
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (state().current_failed) {
            ++failed;
            std::printf("[FAIL] %s (%.2f s)\n", t.name, seconds);
        } else {
            ++passed;
            std::printf("[ ok ] %s (%.2f s)\n", t.name, seconds);
        }
        std::fflush(stdout);
    }
    std::printf("posttrain CUDA tests: %d passed, %d failed (%ld checks)\n", passed, failed, state().checks);
    return failed == 0 ? 0 : 1;
}

}  // namespace posttrain::test

#define PT_CONCAT_(a, b) a##b
#define PT_CONCAT(a, b) PT_CONCAT_(a, b)
#define PT_TEST_(fn, name)                                                                     \
    static void fn();                                                                          \
    static ::posttrain::test::registrar PT_CONCAT(fn, _registrar){name, &fn};                  \
    static void fn()
#define PT_TEST(name) PT_TEST_(PT_CONCAT(pt_test_, __LINE__), name)

#define PT_CHECK(cond)                                                                         \
    do {                                                                                       \
        ++::posttrain::test::state().checks;                                                   \
        if (!(cond)) ::posttrain::test::report_failure(__FILE__, __LINE__, #cond);             \
    } while (0)

#define PT_CHECK_MSG(cond, msg)                                                                \
    do {                                                                                       \
        ++::posttrain::test::state().checks;                                                   \
        if (!(cond)) ::posttrain::test::report_failure(__FILE__, __LINE__, std::string(#cond) + ": " + (msg)); \
    } while (0)

#define PT_CHECK_THROWS(expr, type)                                                            \
    do {                                                                                       \
        ++::posttrain::test::state().checks;                                                   \
        bool pt_thrown_ = false;                                                               \
        try {                                                                                  \
            (void)(expr);                                                                      \
        } catch (const type&) {                                                                \
            pt_thrown_ = true;                                                                 \
        } catch (...) {                                                                        \
        }                                                                                      \
        if (!pt_thrown_) ::posttrain::test::report_failure(__FILE__, __LINE__, "expected " #type " from " #expr); \
    } while (0)
