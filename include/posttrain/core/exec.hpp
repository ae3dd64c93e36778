#pragma once
// Host execution policies. exec::seq is the oracle; exec::par splits work into units whose results
// never depend on which thread runs them, so par is bitwise equal to seq whatever the thread count.
// exec::cuda lives in <posttrain/cuda/exec.cuh>; exec::thrust in <posttrain/thrust/exec.hpp>.

#include <algorithm>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "view.hpp"

#if POSTTRAIN_HAS_OPENMP
#include <omp.h>
#endif

namespace posttrain {
namespace exec {

struct sequenced_policy {
    static constexpr bool is_host = true;
};

struct parallel_policy {
    static constexpr bool is_host = true;
    int threads = 0;  // 0: the OpenMP default
    // A copy of this policy limited to n threads (n <= 0: the OpenMP default).
    constexpr parallel_policy with_threads(int n) const noexcept { return parallel_policy{n}; }
};

inline constexpr sequenced_policy seq{};
inline constexpr parallel_policy par{};

}  // namespace exec

template <class P>
concept host_policy = std::is_same_v<std::remove_cvref_t<P>, exec::sequenced_policy> ||
                      std::is_same_v<std::remove_cvref_t<P>, exec::parallel_policy>;

namespace detail {

// A work estimate (a product of extents) computed in double and capped at 2^62: the same product in
// index_t can overflow for large extents.
inline index_t capped_work(double work) noexcept { return work < 0x1p62 ? index_t(work) : index_t(1) << 62; }

// Work below this many items is not worth waking threads for.
inline constexpr index_t parallel_grain = 1 << 14;

inline int thread_count(const exec::sequenced_policy&) noexcept { return 1; }
inline int thread_count(const exec::parallel_policy& p) noexcept {
#if POSTTRAIN_HAS_OPENMP
    return p.threads > 0 ? p.threads : omp_get_max_threads();
#else
    (void)p;
    return 1;
#endif
}

// Calls body(begin, end) over [0, n) split into blocks. Each index is visited exactly once and
// bodies must not depend on the block boundaries (they write disjoint outputs).
template <class Body>
void for_blocks(const exec::sequenced_policy&, index_t n, index_t /*cost_per_item*/, Body&& body) {
    if (n > 0) body(index_t{0}, n);
}

template <class Body>
void for_blocks(const exec::parallel_policy& p, index_t n, index_t cost_per_item, Body&& body) {
    if (n <= 0) return;
    const int threads = thread_count(p);
    const index_t cost = cost_per_item > 0 ? cost_per_item : 1;
    const index_t work = n > std::numeric_limits<index_t>::max() / cost ? std::numeric_limits<index_t>::max() : n * cost;
    if (threads <= 1 || work < parallel_grain) {
        body(index_t{0}, n);
        return;
    }
#if POSTTRAIN_HAS_OPENMP
    const index_t blocks = threads * 4 < n ? index_t(threads) * 4 : n;
    // An exception may not leave an OpenMP region: the first one is kept and rethrown afterwards.
    std::exception_ptr failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (index_t b = 0; b < blocks; ++b) {
        const index_t lo = n * b / blocks, hi = n * (b + 1) / blocks;
        if (lo >= hi) continue;
        try {
            body(lo, hi);
        } catch (...) {
#pragma omp critical(posttrain_for_blocks_failure)
            if (!failure) failure = std::current_exception();
        }
    }
    if (failure) std::rethrow_exception(failure);
#else
    body(index_t{0}, n);
#endif
}

// Deterministic reduction: [0, n) is cut into chunks of a fixed size that does not depend on the
// policy; partial(lo, hi) reduces one chunk and the partials are combined left to right.
inline constexpr index_t reduction_chunk = 1 << 12;

template <class Policy, class Acc, class Partial, class Combine>
Acc chunked_reduce(const Policy& p, index_t n, Acc init, Partial&& partial, Combine&& combine) {
    const index_t chunks = (n + reduction_chunk - 1) / reduction_chunk;
    if (chunks <= 1) return n > 0 ? combine(init, partial(index_t{0}, n)) : init;
    std::vector<Acc> parts(static_cast<std::size_t>(chunks));
    for_blocks(p, chunks, reduction_chunk, [&](index_t lo, index_t hi) {
        for (index_t c = lo; c < hi; ++c)
            parts[static_cast<std::size_t>(c)] = partial(c * reduction_chunk, std::min(n, (c + 1) * reduction_chunk));
    });
    Acc acc = init;
    for (const Acc& a : parts) acc = combine(acc, a);
    return acc;
}

}  // namespace detail
}  // namespace posttrain
