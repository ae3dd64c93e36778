// exec::thrust(thrust::omp::par) against exec::seq for the samplers: the same seed gives the same
// indices, bit for bit (weighted with and without replacement, permutations), float and double
// weights, zero weights, the uniform fallback, and the same errors.

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <thrust/system/omp/execution_policy.h>

#include <posttrain/adapt/std.hpp>
#include <posttrain/thrust/sampling.hpp>

namespace pt = posttrain;
namespace sp = posttrain::sampling;
using pt::index_t;

namespace {

const auto omp = pt::exec::thrust(thrust::omp::par);

template <class T>
std::vector<T> random_weights(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 3.0);
    std::vector<T> w(n);
    for (auto& x : w) x = rng() % 5 == 0 ? T(0) : T(u(rng));  // a fifth are zero
    return w;
}

}  // namespace

TEST_CASE_TEMPLATE("thrust sampling: with replacement equals exec::seq", T, float, double) {
    for (std::size_t n : {1u, 7u, 1000u, 70000u}) {
        const auto w = random_weights<T>(n, n);
        for (std::uint64_t stream : {0u, 5u}) {
            std::vector<index_t> a(50000), b(50000);
            const sp::weighted_options o{99, stream};
            const auto ra = sp::sample_with_replacement(omp, w, a, o);
            const auto rb = sp::sample_with_replacement(pt::exec::seq, w, b, o);
            CHECK(a == b);
            CHECK(ra.uniform_fallback == rb.uniform_fallback);
            const sp::alias_table t = sp::make_alias_table(w);
            std::vector<std::int32_t> c(50000);
            (void)sp::sample_with_replacement(omp, t, c, o);
            CHECK(std::equal(c.begin(), c.end(), b.begin()));
        }
    }
}

TEST_CASE_TEMPLATE("thrust sampling: without replacement and permutations equal exec::seq", T, float, double) {
    for (std::size_t n : {1u, 9u, 5000u, 100000u}) {
        const auto w = random_weights<T>(n, n + 1);
        const auto positive = std::count_if(w.begin(), w.end(), [](T x) { return x > 0; });
        const std::size_t k = std::min<std::size_t>(std::size_t(positive), 2000);
        std::vector<index_t> a(k), b(k);
        (void)sp::sample_without_replacement(omp, w, a, {7, 3});
        (void)sp::sample_without_replacement(pt::exec::seq, w, b, {7, 3});
        CHECK(a == b);
        std::vector<index_t> p(n), q(n);
        sp::random_permutation(omp, p, {7, 3});
        sp::random_permutation(pt::exec::seq, q, {7, 3});
        CHECK(p == q);
    }
}

TEST_CASE("thrust sampling: all-zero weights and bad input behave as on the host") {
    const std::vector<double> zero(10, 0.0);
    std::vector<index_t> a(100), b(100), k4(4), k4s(4);
    CHECK(sp::sample_with_replacement(omp, zero, a, {1}).uniform_fallback);
    (void)sp::sample_with_replacement(pt::exec::seq, zero, b, {1});
    CHECK(a == b);
    (void)sp::sample_without_replacement(omp, zero, k4, {1});
    (void)sp::sample_without_replacement(pt::exec::seq, zero, k4s, {1});
    CHECK(k4 == k4s);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(omp, zero, a, {1, 0, sp::zero_weights::error}), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(omp, std::vector<double>{1, -2}, a), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_without_replacement(omp, std::vector<double>{1, 0}, k4), pt::invalid_argument);
}
