// Execution policies: par must give the same bits as seq whatever the thread count.

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include <posttrain/core/exec.hpp>
#include <posttrain/core/numeric.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;

namespace {

// Values whose float sum depends on the order of additions.
std::vector<double> order_sensitive(pt::index_t n) {
    std::vector<double> x(static_cast<std::size_t>(n));
    for (pt::index_t i = 0; i < n; ++i)
        x[std::size_t(i)] = std::sin(double(i) * 0.37) * std::pow(10.0, double(i % 17) - 8.0);
    return x;
}

template <class Policy>
double reduce_with(const Policy& p, const std::vector<double>& x) {
    const auto n = static_cast<pt::index_t>(x.size());
    return pt::detail::chunked_reduce(
        p, n, 0.0,
        [&](pt::index_t lo, pt::index_t hi) {
            return pt::detail::fixed_order_sum(hi - lo, [&](pt::index_t j) { return x[std::size_t(lo + j)]; });
        },
        [](double a, double b) { return a + b; });
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("exec: policies are host policies") {
    static_assert(pt::host_policy<pt::exec::sequenced_policy>);
    static_assert(pt::host_policy<const pt::exec::parallel_policy&>);
    static_assert(!pt::host_policy<int>);
    constexpr auto p = pt::exec::par.with_threads(3);
    static_assert(p.threads == 3);
    CHECK(pt::detail::thread_count(pt::exec::seq) == 1);
    CHECK(pt::detail::thread_count(pt::exec::par.with_threads(1)) == 1);
#if POSTTRAIN_HAS_OPENMP
    CHECK(pt::detail::thread_count(p) == 3);
#endif
}

TEST_CASE("exec: chunked_reduce is bitwise identical across policies and thread counts") {
    for (pt::index_t n : {pt::index_t{0}, pt::index_t{1}, pt::index_t{4095}, pt::index_t{4096}, pt::index_t{4097},
                          pt::index_t{100003}, pt::index_t{1} << 18}) {
        CAPTURE(n);
        const auto x = order_sensitive(n);
        const double ref = reduce_with(pt::exec::seq, x);
        for (int t : {0, 1, 2, 3, 4, 7, 16}) {
            CAPTURE(t);
            CHECK(same_bits(reduce_with(pt::exec::par.with_threads(t), x), ref));
        }
        if (n == 0) CHECK(ref == 0.0);
    }
}

TEST_CASE("exec: chunked_reduce with a struct accumulator") {
    struct acc {
        double sum = 0;
        pt::index_t count = 0;
    };
    const auto x = order_sensitive(50000);
    auto run = [&](const auto& p) {
        return pt::detail::chunked_reduce(
            p, pt::index_t(x.size()), acc{},
            [&](pt::index_t lo, pt::index_t hi) {
                acc a;
                for (pt::index_t i = lo; i < hi; ++i) {
                    a.sum += x[std::size_t(i)];
                    a.count += x[std::size_t(i)] > 0;
                }
                return a;
            },
            [](acc a, acc b) { return acc{a.sum + b.sum, a.count + b.count}; });
    };
    const acc s = run(pt::exec::seq);
    const acc p = run(pt::exec::par.with_threads(4));
    CHECK(same_bits(s.sum, p.sum));
    CHECK(s.count == p.count);
}

TEST_CASE_TEMPLATE("exec: for_blocks visits every index exactly once", B, POSTTRAIN_HOST_BACKENDS) {
    for (pt::index_t n : {pt::index_t{0}, pt::index_t{1}, pt::index_t{7}, pt::index_t{1} << 15, (pt::index_t{1} << 16) + 5}) {
        CAPTURE(n);
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        std::vector<double> out(static_cast<std::size_t>(n)), ref(static_cast<std::size_t>(n));
        pt::detail::for_blocks(B::policy(), n, 1, [&](pt::index_t lo, pt::index_t hi) {
            CHECK_MESSAGE(lo < hi, "blocks are never empty");
            for (pt::index_t i = lo; i < hi; ++i) {
                hits[std::size_t(i)].fetch_add(1, std::memory_order_relaxed);
                out[std::size_t(i)] = std::exp(-double(i) * 1e-3);
            }
        });
        pt::detail::for_blocks(pt::exec::seq, n, 1, [&](pt::index_t lo, pt::index_t hi) {
            for (pt::index_t i = lo; i < hi; ++i) ref[std::size_t(i)] = std::exp(-double(i) * 1e-3);
        });
        bool once = true;
        for (auto& h : hits) once &= h.load() == 1;
        CHECK(once);
        CHECK(pt::test::bitwise_equal(out, ref));
    }
}

TEST_CASE("exec: for_blocks honours the cost hint for small work") {
    // Little work: par runs it as a single block on the calling thread.
    int blocks = 0;
    pt::detail::for_blocks(pt::exec::par.with_threads(4), 100, 1, [&](pt::index_t lo, pt::index_t hi) {
        ++blocks;
        CHECK(lo == 0);
        CHECK(hi == 100);
    });
    CHECK(blocks == 1);
#if POSTTRAIN_HAS_OPENMP
    // Expensive items: the same count is split.
    std::atomic<int> split{0};
    pt::detail::for_blocks(pt::exec::par.with_threads(4), 100, 1 << 12,
                           [&](pt::index_t, pt::index_t) { split.fetch_add(1); });
    CHECK(split.load() > 1);
#endif
}
