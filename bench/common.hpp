#pragma once
// Shared pieces of posttrain's benchmarks: seeded inputs, the size ladder, byte accounting and the
// memcpy bandwidth reference that scripts/bench divides by.
//
// Benchmark names follow "<op>/<policy>/<N>" where policy is "seq" or "par<T>" (T threads), and the
// memcpy reference is "memcpy/<bytes>" (a copy of bytes/2 bytes: it reads bytes/2 and writes bytes/2,
// so it moves exactly <bytes>). scripts/bench matches rows on these names; keep them stable.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <posttrain/core/exec.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace posttrain_bench {

using posttrain::index_t;

// N = 2^14, 2^16, ..., 2^24 (the 2^22 headline size is on the ladder).
inline std::vector<index_t> size_ladder() {
    std::vector<index_t> s;
    for (int e = 14; e <= 24; e += 2) s.push_back(index_t{1} << e);
    return s;
}

// Threads of the exec::par rows: POSTTRAIN_BENCH_THREADS, else OpenMP's default.
inline int par_threads() {
    if (const char* env = std::getenv("POSTTRAIN_BENCH_THREADS"); env && *env) return std::max(1, std::atoi(env));
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Rewards as trainers hold them: float32, continuous in [0, 1) (0/1 verifiable rewards would make
// some groups constant, which takes a different branch; continuous rewards time the general path).
inline std::vector<float> make_rewards(index_t n, std::uint64_t seed = 42) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> r(static_cast<std::size_t>(n));
    for (auto& v : r) v = u(gen);
    return r;
}

// CSR offsets of random group sizes in [1, 31] (mean 16); the last group takes the remainder.
inline std::vector<std::int64_t> make_ragged_offsets(index_t n, std::uint64_t seed = 7) {
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<int> size(1, 31);
    std::vector<std::int64_t> off{0};
    while (off.back() < n) off.push_back(std::min<std::int64_t>(n, off.back() + size(gen)));
    return off;
}

// int64 ids of n/k groups of k rows, shuffled (Fisher-Yates with a fixed seed). hashed = true draws
// 64-bit ids as grouping::hash_id would produce them from uid strings (every radix digit varies);
// false uses dense ids 0..G-1.
inline std::vector<std::int64_t> make_shuffled_ids(index_t n, index_t k, bool hashed, std::uint64_t seed = 11) {
    std::mt19937_64 gen(seed);
    const index_t groups = n / k;
    std::vector<std::int64_t> id_of_group(static_cast<std::size_t>(groups));
    for (index_t g = 0; g < groups; ++g)
        id_of_group[static_cast<std::size_t>(g)] = hashed ? static_cast<std::int64_t>(gen()) : g;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = id_of_group[static_cast<std::size_t>(i / k)];
    for (std::size_t i = ids.size(); i > 1; --i) {
        const std::size_t j = static_cast<std::size_t>(gen() % i);
        std::swap(ids[i - 1], ids[j]);
    }
    return ids;
}

// Records the counters every row carries. bytes: what the call reads and writes through its
// arguments (not its internal scratch), per iteration.
inline void set_counters(benchmark::State& state, index_t items, std::int64_t bytes, int threads) {
    state.SetItemsProcessed(state.iterations() * items);
    state.SetBytesProcessed(state.iterations() * bytes);
    state.counters["N"] = static_cast<double>(items);
    state.counters["bytes"] = static_cast<double>(bytes);
    state.counters["threads"] = threads;
}

// The bandwidth reference: std::memcpy of bytes/2 into another buffer (moves `bytes` in total).
// Sizes are collected by the op registrations so that each op has a copy of exactly its bytes.
inline std::set<std::int64_t>& memcpy_sizes() {
    static std::set<std::int64_t> s;
    return s;
}

inline void bm_memcpy(benchmark::State& state, std::int64_t bytes) {
    const std::size_t half = static_cast<std::size_t>(bytes / 2);
    std::vector<char> src(half, 1), dst(half, 0);
    for (std::size_t i = 0; i < half; ++i) src[i] = static_cast<char>(i * 31u);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), half);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(2 * half));
    state.counters["bytes"] = static_cast<double>(2 * half);
    state.counters["threads"] = 1;
}

// Call after every op has registered (from a static initializer placed after theirs in the same
// translation unit, or from any later point before main runs the benchmarks).
inline void register_memcpy_references() {
    for (std::int64_t b : memcpy_sizes())
        benchmark::RegisterBenchmark(("memcpy/" + std::to_string(b)).c_str(), bm_memcpy, b)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
}

}  // namespace posttrain_bench
